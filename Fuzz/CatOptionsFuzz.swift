// libFuzzer target: `baio cat`'s options (the ArgumentParser command `Cat`, with its --chunk-size size
// parser and validation) and its formatter (CatFormatter), compiled in from Sources/baio by scripts/fuzz.
// The input is arguments, one per line, then a NUL, then content. Parsing must throw or give valid
// settings; formatting the content must not depend on how it is cut into blocks (the formatter carries
// state across blocks: line numbers, blank-line squeezing, a CR held back under -E).
import ArgumentParser

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCatOptions(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    // ArgumentParser's parse costs about 30 ms in a debug build under ASan; an input starting with a control
    // byte skips it and takes the options from that byte, so the formatter is fuzzed a thousand times faster.
    if let first = bytes.first, first < 0x20 {
        let bits = first
        let format = CatFormat(
            numberAll: bits & 1 != 0, numberNonblank: bits & 2 != 0, squeezeBlank: bits & 4 != 0,
            showEnds: bits & 8 != 0, showTabs: bits & 16 != 0, showNonprinting: bits & 32 != 0)
        checkFormatter(Array(bytes.dropFirst(1)), format)
        return 0
    }
    let split = bytes.firstIndex(of: 0) ?? size
    let arguments = String(decoding: bytes[..<split], as: UTF8.self)
        .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let content = Array(bytes[min(split + 1, size)...])
    if let size = try? parseSize(arguments.first ?? "") { precondition(size >= 0) }
    guard let command = try? Cat.parse(arguments) else { return 0 }
    precondition(command.chunkSize >= 4096 && command.chunkSize <= 1 << 30, "chunk size \(command.chunkSize)")
    precondition(command.window >= 1 && command.window <= 1024, "window \(command.window)")
    checkFormatter(content, command.format)
    return 0
}

/// Plain format copies; any format gives the same output however the content is cut into blocks.
func checkFormatter(_ content: [UInt8], _ format: CatFormat) {
    let whole = formatted(content, format, cuts: [])
    if format.isPlain { precondition(whole == content, "plain format changed the bytes") }
    // Cut points from the content itself, so the fuzzer explores them too.
    let cuts = content.prefix(4).map { Int($0) % (content.count + 1) }.sorted()
    precondition(formatted(content, format, cuts: cuts) == whole, "output depends on block cuts \(cuts)")
}

/// The formatter's output for `content` handed over in blocks cut at `cuts`.
func formatted(_ content: [UInt8], _ format: CatFormat, cuts: [Int]) -> [UInt8] {
    let formatter = CatFormatter(format)
    var output: [UInt8] = []
    let emit: (UnsafeRawBufferPointer) -> Never? = { piece in
        output += piece
        return nil
    }
    var start = 0
    content.withUnsafeBytes { raw in
        for end in cuts + [content.count] where end >= start {
            _ = formatter.format(UnsafeRawBufferPointer(rebasing: raw[start..<end]), emit: emit)
            start = end
        }
    }
    _ = formatter.finish(emit: emit)
    return output
}
