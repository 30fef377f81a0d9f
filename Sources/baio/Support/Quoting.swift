// This file owns how baio quotes text in what it prints: GNU's quoting of file names in messages (always,
// and only when a shell would need it) and JSON string literals for `baio residency --json`.

/// GNU's quoting of names in messages in the C locale: always in single quotes, a quote inside as '\''.
func quote(_ text: String) -> String {
    "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
}

/// GNU's `quotef`: the name as it is, unless a shell would need it quoted.
func quoteIfNeeded(_ text: String) -> String {
    let plain = text.utf8.allSatisfy { c in
        (0x30...0x39).contains(c) || (0x41...0x5a).contains(c) || (0x61...0x7a).contains(c)
            || "+,-./:@_%^".utf8.contains(c)
    }
    return plain && !text.isEmpty ? text : quote(text)
}

/// `text` as a JSON string literal.
func jsonQuoted(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}
