// This file owns GNU dd's number formatting for `baio dd`'s summary and progress lines (coreutils'
// human_readable with its SI and IEC units, and the rate).
import Glibc

// MARK: - GNU's number formatting

private let powerLetters: [Character] = [" ", "K", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q"]

/// gnulib's `human_readable(n, autoscale | round_to_nearest | space_before_unit | SI | B [| base_1024], 1, 1)`
/// on its exact integer path: "2.1 kB", "2.1 KiB", "100 B".
func humanReadable(_ n: UInt64, base: UInt64) -> String {
    var amount = n
    var tenths: UInt64 = 0
    var rounding: UInt64 = 0
    var exponent = 0
    var fraction = ""
    if base <= amount {
        repeat {
            let r10 = (amount % base) * 10 + tenths
            let r2 = (r10 % base) * 2 + (rounding >> 1)
            amount /= base
            tenths = r10 / base
            rounding = r2 < base ? (r2 + rounding != 0 ? 1 : 0) : 2 + (base < r2 + rounding ? 1 : 0)
            exponent += 1
        } while base <= amount && exponent < powerLetters.count - 1
        if amount < 10 {
            if 2 < rounding + (tenths & 1) {
                tenths += 1
                rounding = 0
                if tenths == 10 {
                    amount += 1
                    tenths = 0
                }
            }
            if amount < 10 {
                fraction = ".\(tenths)"
                tenths = 0
                rounding = 0
            }
        }
    }
    if 5 < tenths + (0 < rounding + (amount & 1) ? 1 : 0) {
        amount += 1
        if amount == base && exponent < powerLetters.count - 1 {
            exponent += 1
            fraction = ".0"
            amount = 1
        }
    }
    var unit = ""
    if exponent > 0 { unit = base == 1000 && exponent == 1 ? "k" : String(powerLetters[exponent]) }
    if base == 1024 && exponent > 0 { unit += "i" }
    return "\(amount)\(fraction) \(unit)B"
}

/// The rate as GNU computes it: human_readable(bytes, ..., 1e9, ns) on gnulib's floating-point path,
/// always scaled to at least k ("0.0 kB").
func humanRate(_ bytes: UInt64, nanoseconds: UInt64) -> String {
    var amount = Double(bytes) * (1e9 / Double(nanoseconds))
    var scale = 1.0
    var exponent = 0
    repeat {
        scale *= 1000
        exponent += 1
    } while scale * 1000 <= amount && exponent < powerLetters.count - 1
    amount /= scale
    var text = cFormat("%.1f", amount)
    if text.utf8.count > 4 { text = cFormat("%.0f", amount) }
    return text + " " + (exponent == 1 ? "k" : String(powerLetters[exponent])) + "B"
}

/// printf formatting of one double, which Swift's own description does not do ("%g").
func cFormat(_ format: String, _ value: Double) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    _ = withVaList([value]) { arguments in vsnprintf(&buffer, buffer.count, format, arguments) }
    return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}
