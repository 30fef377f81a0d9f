// This file owns the numbers people type and read in baio's options and reports: sizes with K, M and G
// suffixes, and decimals without Foundation's formatters.
import ArgumentParser

/// `value` with `places` decimals, without Foundation's formatters.
func formatted(_ value: Double, places: Int = 1) -> String {
    guard value.isFinite else { return "0" }
    var scale = 1.0
    for _ in 0..<places { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = Int(scaled / scale)
    var fraction = String(Int(scaled) - whole * Int(scale))
    while fraction.count < places { fraction = "0" + fraction }
    return (value < 0 ? "-" : "") + (places == 0 ? "\(whole)" : "\(whole).\(fraction)")
}

/// Parses 4096, 64K, 1M, 2G (powers of 1024).
func parseSize(_ text: String) throws -> Int {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    var digits = Substring(text)
    var multiplier = 1
    if let last = digits.last?.uppercased().first, let unit = units[last] {
        multiplier = unit
        digits = digits.dropLast()
    }
    guard let value = Int(digits), value >= 0, !value.multipliedReportingOverflow(by: multiplier).overflow else {
        throw ValidationError("'\(text)' is not a size: use a number with an optional K, M or G suffix")
    }
    return value * multiplier
}
