// This file owns `baio dd`'s operands: dd's KEY=VALUE syntax, GNU's number suffixes, and every check that
// must pass before a file is opened, with GNU dd's messages (coreutils 9.x `scanargs`).
import Glibc

/// A validated `baio dd` plan, in GNU dd's own terms (after `scanargs`).
struct DDOperands {
    enum Status { case normal, none, noxfer, progress }

    struct InputFlags: OptionSet {
        let rawValue: Int
        static let direct = InputFlags(rawValue: 1 << 0)
        static let nocache = InputFlags(rawValue: 1 << 1)
        static let fullblock = InputFlags(rawValue: 1 << 2)
        static let countBytes = InputFlags(rawValue: 1 << 3)
        static let skipBytes = InputFlags(rawValue: 1 << 4)
        static let seekBytes = InputFlags(rawValue: 1 << 5)
        /// Output only: O_DSYNC and O_SYNC on the output file.
        static let dsync = InputFlags(rawValue: 1 << 6)
        static let sync = InputFlags(rawValue: 1 << 7)
    }

    struct Conversions: OptionSet {
        let rawValue: Int
        static let notrunc = Conversions(rawValue: 1 << 0)
        static let fsync = Conversions(rawValue: 1 << 1)
        static let fdatasync = Conversions(rawValue: 1 << 2)
        static let sparse = Conversions(rawValue: 1 << 3)
        static let excl = Conversions(rawValue: 1 << 4)
        static let nocreat = Conversions(rawValue: 1 << 5)
        /// Pad every short input record to ibs with NULs.
        static let sync = Conversions(rawValue: 1 << 6)
        /// Swap every pair of input bytes.
        static let swab = Conversions(rawValue: 1 << 7)
    }

    var input: String?
    var output: String?
    var inputBlockSize = 512
    var outputBlockSize = 512
    /// bs= was not given: input records are re-blocked into obs-sized writes (GNU's C_TWOBUFS).
    var reblocks = true
    var inputFlags: InputFlags = []
    /// Output flags use the same bits: direct, seekBytes, dsync, sync (and countBytes/skipBytes only to
    /// reject them).
    var outputFlags: InputFlags = []
    var conversions: Conversions = []
    var status = Status.normal
    var skipRecords = 0
    var skipBytes = 0
    var seekRecords = 0
    var seekBytes = 0
    var maxRecords = Int.max
    var maxBytes = 0
    /// GNU warns once about a short read that throws the record count off when bs= counts or skips blocks.
    var warnPartialRead = false

    /// Parses operands left to right as GNU dd does, stopping at the first error.
    init(parsing operands: [String]) throws(DDUsageError) {
        var blockSize = 0
        var inputBlockSize = 0
        var outputBlockSize = 0
        var skip = 0
        var seek = 0
        var count = Int.max
        for operand in operands {
            if operand.hasPrefix("-") && !operand.contains("=") {
                let text =
                    operand.hasPrefix("--")
                    ? "unrecognized option '\(operand)'" : "invalid option -- '\(operand.dropFirst().prefix(1))'"
                throw DDUsageError(text, suggestHelp: true)
            }
            guard let equals = operand.firstIndex(of: "=") else {
                throw DDUsageError("unrecognized operand \(quote(operand))", suggestHelp: true)
            }
            let name = operand[..<equals]
            let value = String(operand[operand.index(after: equals)...])
            switch name {
            case "if": input = value
            case "of": output = value
            case "iflag": inputFlags.formUnion(try Self.flags(value, kind: "input"))
            case "oflag": outputFlags.formUnion(try Self.flags(value, kind: "output"))
            case "conv": conversions.formUnion(try Self.conversions(value))
            case "status":
                // GNU's status list is exclusive: the last level named wins.
                for level in value.split(separator: ",", omittingEmptySubsequences: false) {
                    switch level {
                    case "none": status = .none
                    case "noxfer": status = .noxfer
                    case "progress": status = .progress
                    default: throw DDUsageError("invalid status level: \(quote(String(level)))", suggestHelp: true)
                    }
                }
            case "bs", "ibs", "obs", "skip", "iseek", "seek", "oseek", "count":
                let isBlockSize = name.hasSuffix("bs")
                var (number, failure) = Self.number(value)
                if failure == nil {
                    if number < (isBlockSize ? 1 : 0) {
                        failure = .invalid
                    } else if isBlockSize && number > Int.max - 1 {
                        failure = .overflow
                    }
                }
                if let failure {
                    let suffix = failure == .overflow ? ": \(String(cString: strerror(EOVERFLOW)))" : ""
                    throw DDUsageError("invalid number: \(quote(value))\(suffix)")
                }
                switch name {
                case "bs": blockSize = number
                case "ibs": inputBlockSize = number
                case "obs": outputBlockSize = number
                case "skip", "iseek": skip = number
                case "seek", "oseek": seek = number
                default: count = number
                }
            default:
                throw DDUsageError("unrecognized operand \(quote(operand))", suggestHelp: true)
            }
        }

        if blockSize > 0 {
            self.inputBlockSize = blockSize
            self.outputBlockSize = blockSize
            reblocks = false
        } else {
            if inputBlockSize > 0 { self.inputBlockSize = inputBlockSize }
            if outputBlockSize > 0 { self.outputBlockSize = outputBlockSize }
        }
        // GNU gives swab two buffers even with bs=: swapped records no longer end where input records do.
        if conversions.contains(.swab) { reblocks = true }
        if inputFlags.contains(.seekBytes) {
            throw DDUsageError("invalid input flag: \(quote("seek_bytes"))", suggestHelp: true)
        }
        if !outputFlags.isDisjoint(with: [.countBytes, .skipBytes]) {
            let flag = outputFlags.contains(.countBytes) ? "count_bytes" : "skip_bytes"
            throw DDUsageError("invalid output flag: \(quote(flag))", suggestHelp: true)
        }
        if outputFlags.contains(.fullblock) {
            throw DDUsageError("invalid output flag: \(quote("fullblock"))", suggestHelp: true)
        }
        if inputFlags.contains(.skipBytes) {
            (skipRecords, skipBytes) = skip.quotientAndRemainder(dividingBy: self.inputBlockSize)
        } else {
            skipRecords = skip
        }
        if count != Int.max {
            if inputFlags.contains(.countBytes) {
                (maxRecords, maxBytes) = count.quotientAndRemainder(dividingBy: self.inputBlockSize)
            } else {
                maxRecords = count
            }
        }
        if outputFlags.contains(.seekBytes) {
            (seekRecords, seekBytes) = seek.quotientAndRemainder(dividingBy: self.outputBlockSize)
        } else {
            seekRecords = seek
        }
        warnPartialRead =
            !reblocks && !inputFlags.contains(.fullblock)
            && (skipRecords > 0 || (maxRecords > 0 && maxRecords < Int.max)
                || inputFlags.contains(.direct) || outputFlags.contains(.direct))
        if conversions.isSuperset(of: [.excl, .nocreat]) {
            throw DDUsageError("cannot combine excl and nocreat")
        }
        if inputFlags.isSuperset(of: [.direct, .nocache]) {
            throw DDUsageError("cannot combine direct and nocache")
        }
    }

    // MARK: - Symbols

    /// GNU's iflag/oflag names; the ones `baio dd` does not implement are refused rather than ignored.
    private static func flags(_ value: String, kind: String) throws(DDUsageError) -> InputFlags {
        var flags: InputFlags = []
        for name in value.split(separator: ",", omittingEmptySubsequences: false) {
            switch name {
            case "direct": flags.insert(.direct)
            case "nocache" where kind == "input": flags.insert(.nocache)
            case "fullblock": flags.insert(.fullblock)
            case "count_bytes": flags.insert(.countBytes)
            case "skip_bytes": flags.insert(.skipBytes)
            case "seek_bytes": flags.insert(.seekBytes)
            case "dsync" where kind == "output": flags.insert(.dsync)
            case "sync" where kind == "output": flags.insert(.sync)
            case "append", "binary", "cio", "directory", "dsync", "sync", "noatime", "nocache", "noctty",
                "nofollow", "nolinks", "nonblock", "text":
                throw DDUsageError("\(kind) flag not supported by baio dd: \(quote(String(name)))", suggestHelp: true)
            default:
                throw DDUsageError("invalid \(kind) flag: \(quote(String(name)))", suggestHelp: true)
            }
        }
        return flags
    }

    private static func conversions(_ value: String) throws(DDUsageError) -> Conversions {
        var conversions: Conversions = []
        for name in value.split(separator: ",", omittingEmptySubsequences: false) {
            switch name {
            case "notrunc": conversions.insert(.notrunc)
            case "fsync": conversions.insert(.fsync)
            case "fdatasync": conversions.insert(.fdatasync)
            case "sparse": conversions.insert(.sparse)
            case "excl": conversions.insert(.excl)
            case "nocreat": conversions.insert(.nocreat)
            case "sync": conversions.insert(.sync)
            case "swab": conversions.insert(.swab)
            case "ascii", "ebcdic", "ibm", "block", "unblock", "lcase", "ucase", "noerror":
                throw DDUsageError("conversion not supported by baio dd: \(quote(String(name)))", suggestHelp: true)
            default:
                throw DDUsageError("invalid conversion: \(quote(String(name)))", suggestHelp: true)
            }
        }
        return conversions
    }

    // MARK: - Numbers

    enum NumberFailure { case invalid, overflow, badSuffix }

    /// GNU dd's `parse_integer`: gnulib's xstrtoumax with the suffixes "bcEGkKMPQRTwYZ0" (a power of 1024 by
    /// default, of 1000 with a trailing B, of 1024 with iB), and `AxB` for a product. Returns the value
    /// (Int.max on overflow) and what went wrong, if anything.
    static func number(_ text: String) -> (Int, NumberFailure?) {
        let bytes = Array(text.utf8)
        var (value, failure, rest) = unsignedWithSuffix(bytes[...])
        if failure == .badSuffix, rest.first == UInt8(ascii: "x") {
            let (other, otherFailure) = number(String(decoding: rest.dropFirst(), as: UTF8.self))
            if otherFailure == .invalid || otherFailure == .badSuffix { return (0, otherFailure) }
            let (product, overflow) = Int(clamping: value).multipliedReportingOverflow(by: other)
            if value > UInt64(Int.max) || overflow || (product != 0 && otherFailure == .overflow) {
                return (Int.max, .overflow)
            }
            if product == 0 && text.hasPrefix("0x") {
                DDUsageError.warn(
                    "warning: \(quote("0x")) is a zero multiplier; use \(quote("00x")) if that is intended")
            }
            return (product, nil)
        }
        if value > UInt64(Int.max) {
            value = UInt64(Int.max)
            if failure == nil { failure = .overflow }
        }
        return (Int(value), failure)
    }

    /// xstrtoumax(text, 10, "bcEGkKMPQRTwYZ0"): the value, the failure, and the unparsed rest.
    private static func unsignedWithSuffix(_ text: ArraySlice<UInt8>) -> (UInt64, NumberFailure?, ArraySlice<UInt8>) {
        var p = text
        while let c = p.first, c == 0x20 || (0x09...0x0d).contains(c) { p = p.dropFirst() }
        if p.first == UInt8(ascii: "-") { return (0, .invalid, p) }
        var digitsStart = p
        if p.first == UInt8(ascii: "+") { digitsStart = p.dropFirst() }
        var value: UInt64 = 0
        var failure: NumberFailure?
        var q = digitsStart
        while let c = q.first, (0x30...0x39).contains(c) {
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (plus, o2) = times.addingReportingOverflow(UInt64(c - 0x30))
            if o1 || o2 {
                failure = .overflow
                value = .max
            } else if failure == nil {
                value = plus
            }
            q = q.dropFirst()
        }
        let suffixes = Array("bcEGkKMPQRTwYZ0".utf8)
        if q.startIndex == digitsStart.startIndex {
            // No digits: a lone valid suffix means one of it ("K" is 1024), anything else is not a number.
            guard let c = text.first, suffixes.contains(c), q.startIndex == text.startIndex else {
                return (0, .invalid, q)
            }
            value = 1
        }
        guard let c = q.first else { return (value, failure, q) }
        guard suffixes.contains(c), c != UInt8(ascii: "0") else { return (value, combine(failure, .badSuffix), q) }
        var base: UInt64 = 1024
        var length = 1
        if Array("EGkKMPQRTYZ".utf8).contains(c) {
            let next = q.dropFirst()
            if next.first == UInt8(ascii: "i"), next.dropFirst().first == UInt8(ascii: "B") {
                length = 3
            } else if next.first == UInt8(ascii: "B") || next.first == UInt8(ascii: "D") {
                base = 1000
                length = 2
            }
        }
        let powers: [UInt8: Int] = [
            UInt8(ascii: "k"): 1, UInt8(ascii: "K"): 1, UInt8(ascii: "M"): 2, UInt8(ascii: "G"): 3,
            UInt8(ascii: "T"): 4, UInt8(ascii: "P"): 5, UInt8(ascii: "E"): 6, UInt8(ascii: "Z"): 7,
            UInt8(ascii: "Y"): 8, UInt8(ascii: "R"): 9, UInt8(ascii: "Q"): 10,
        ]
        var multiplier: UInt64 = 1
        var multiplierOverflows = false
        switch c {
        case UInt8(ascii: "b"): multiplier = 512
        case UInt8(ascii: "c"): multiplier = 1
        case UInt8(ascii: "w"): multiplier = 2
        default:
            for _ in 0..<powers[c]! {
                let (m, o) = multiplier.multipliedReportingOverflow(by: base)
                if o { multiplierOverflows = true }
                multiplier = m
            }
        }
        let (scaled, o) = value.multipliedReportingOverflow(by: multiplier)
        if o || multiplierOverflows {
            value = .max
            failure = combine(failure, .overflow)
        } else {
            value = scaled
        }
        let rest = q.dropFirst(length)
        if !rest.isEmpty { failure = combine(failure, .badSuffix) }
        return (value, failure, rest)
    }

    /// A bad suffix outranks an overflow, as GNU's error bits do when deciding between "x" and a message.
    private static func combine(_ a: NumberFailure?, _ b: NumberFailure) -> NumberFailure {
        a == .invalid || b == .invalid ? .invalid : (a == .badSuffix || b == .badSuffix ? .badSuffix : .overflow)
    }
}

/// An operand error: reported as `baio: MESSAGE` before anything is opened, exit status 1.
struct DDUsageError: Error {
    let message: String
    /// GNU follows syntax errors (not bad numbers) with a pointer to --help.
    let suggestHelp: Bool

    init(_ message: String, suggestHelp: Bool = false) {
        self.message = message
        self.suggestHelp = suggestHelp
    }

    func report() {
        var text = "baio: \(message)\n"
        if suggestHelp { text += "Try 'baio dd --help' for more information.\n" }
        writeStandardError(text)
    }

    static func warn(_ message: String) { writeStandardError("baio: \(message)\n") }
}
