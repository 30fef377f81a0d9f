// This file owns cat's formatting options (-n, -b, -s, -E, -T, -v and their combinations -A, -e, -t): a
// transformer whose state carries across blocks and files, as GNU cat's line counter and blank-line count do.
import Glibc

/// Which of cat's formatting options are on.
struct CatFormat: Equatable {
    var numberAll = false
    var numberNonblank = false
    var squeezeBlank = false
    var showEnds = false
    var showTabs = false
    var showNonprinting = false

    /// Whether the bytes can be copied unchanged (and so straight from the engine's buffers).
    var isPlain: Bool { self == CatFormat() }
}

/// Rewrites a stream as GNU cat does under a `CatFormat`, one block at a time, into its own buffer.
final class CatFormatter {
    let format: CatFormat
    /// GNU cat's own counter: -1 inside a line, 0 at the start of one, 1 after one empty line, 2 after more.
    private var newlines = 0
    private var lineNumber = 0
    /// -E without -v shows a CR that ends a line as ^M; one that ends a block waits for the next byte.
    private var pendingCarriageReturn = false
    /// Input is formatted a piece at a time; no byte grows to more than 32 (a newline with its number,
    /// ^M and $), so the output of a piece always fits.
    private static let piece = 4096
    private let output = UnsafeMutablePointer<UInt8>.allocate(capacity: piece * 32)

    init(_ format: CatFormat) { self.format = format }

    deinit { output.deallocate() }

    /// Formats `input`, handing the result to `emit` a piece at a time; stops at the first non-nil answer.
    func format<Failure>(
        _ input: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Failure?
    ) -> Failure? {
        var start = 0
        while start < input.count {
            let end = min(start + Self.piece, input.count)
            let count = formatPiece(UnsafeRawBufferPointer(rebasing: input[start..<end]))
            if let failure = emit(UnsafeRawBufferPointer(start: output, count: count)) { return failure }
            start = end
        }
        return nil
    }

    /// Hands over what is still held back at the very end of the output (a CR with nothing after it).
    func finish<Failure>(emit: (UnsafeRawBufferPointer) -> Failure?) -> Failure? {
        guard pendingCarriageReturn else { return nil }
        pendingCarriageReturn = false
        output[0] = 13
        return emit(UnsafeRawBufferPointer(start: output, count: 1))
    }

    /// One piece into `output`; returns the bytes written. The state lives in locals for the loop: as class
    /// properties, each access would be checked for exclusivity.
    private func formatPiece(_ input: UnsafeRawBufferPointer) -> Int {
        let (numberAll, numberNonblank, squeeze) = (format.numberAll, format.numberNonblank, format.squeezeBlank)
        let (showEnds, showTabs, visible) = (format.showEnds, format.showTabs, format.showNonprinting)
        let numberEmpty = numberAll && !numberNonblank
        let numberAny = numberAll || numberNonblank
        let out = output
        var n = 0
        var newlines = self.newlines
        var lineNumber = self.lineNumber
        var pendingCR = pendingCarriageReturn
        let caret = UInt8(ascii: "^")

        // Without -v, -T and -E a line's bytes are copied as they are, a run at a time up to its newline.
        let copyRuns = !visible && !showTabs && !showEnds
        let base = input.baseAddress!
        var i = 0
        while i < input.count {
            let byte = base.load(fromByteOffset: i, as: UInt8.self)
            i += 1
            if pendingCR {
                pendingCR = false
                if byte == UInt8(ascii: "\n") {
                    out[n] = caret
                    out[n + 1] = UInt8(ascii: "M")
                    n += 2
                } else {
                    out[n] = 13
                    n += 1
                }
            }
            if byte == UInt8(ascii: "\n") {
                newlines += 1
                if newlines > 0 {
                    if newlines >= 2 {
                        newlines = 2
                        if squeeze { continue }
                    }
                    if numberEmpty {
                        lineNumber += 1
                        n += Self.writeNumber(lineNumber, to: out + n)
                    }
                }
                if showEnds {
                    out[n] = UInt8(ascii: "$")
                    n += 1
                }
                out[n] = byte
                n += 1
                continue
            }
            if newlines >= 0 && numberAny {
                lineNumber += 1
                n += Self.writeNumber(lineNumber, to: out + n)
            }
            newlines = -1
            if copyRuns {
                let from = i - 1
                var end = input.count
                if let newline = memchr(base + from, 10, input.count - from) {
                    end = UnsafeRawPointer(newline) - base
                }
                (out + n).initialize(from: (base + from).assumingMemoryBound(to: UInt8.self), count: end - from)
                n += end - from
                i = end
                continue
            }
            if byte == UInt8(ascii: "\t") {
                if showTabs {
                    out[n] = caret
                    out[n + 1] = UInt8(ascii: "I")
                    n += 2
                } else {
                    out[n] = byte
                    n += 1
                }
            } else if !visible {
                // -E alone shows only a CR that ends a line.
                if byte == 13 && showEnds {
                    pendingCR = true
                } else {
                    out[n] = byte
                    n += 1
                }
            } else {
                // -v: a byte's notation from the table, stored 4 bytes at once (the buffer has slack).
                let notation = Self.visible[Int(byte)]
                UnsafeMutableRawPointer(out + n).storeBytes(of: notation.bytes, as: UInt32.self)
                n += Int(notation.count)
            }
        }
        self.newlines = newlines
        self.lineNumber = lineNumber
        pendingCarriageReturn = pendingCR
        return n
    }

    /// -v's notation of each byte but LF and TAB: ^X for control characters, ^? for DEL, M- before bytes
    /// with the high bit set; the bytes little-endian in a UInt32.
    private static let visible: [(bytes: UInt32, count: UInt8)] = (0...255).map { (value: Int) in
        var text: [UInt8] = []
        var low = UInt8(value)
        if low >= 128 {
            text += [UInt8(ascii: "M"), UInt8(ascii: "-")]
            low -= 128
        }
        if low < 32 {
            text += [UInt8(ascii: "^"), low + 64]
        } else if low == 127 {
            text += [UInt8(ascii: "^"), UInt8(ascii: "?")]
        } else {
            text.append(low)
        }
        let bytes = text.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        return (bytes, UInt8(text.count))
    }

    /// cat's "%6d\t"; returns the bytes written.
    private static func writeNumber(_ number: Int, to out: UnsafeMutablePointer<UInt8>) -> Int {
        var width = 1
        var power = 10
        while number >= power && width < 19 {
            width += 1
            power &*= 10
        }
        let padding = max(0, 6 - width)
        for index in 0..<padding { out[index] = UInt8(ascii: " ") }
        var value = number
        var index = padding + width - 1
        repeat {
            out[index] = UInt8(ascii: "0") + UInt8(value % 10)
            value /= 10
            index -= 1
        } while value > 0
        out[padding + width] = UInt8(ascii: "\t")
        return padding + width + 1
    }
}
