// Injected read errors (issue 13) through `baio cat` and `baio dd`, beside GNU cat and dd on the same file
// of the faulty ext4 (TestSupport/FaultyDisk.swift): the same bytes out, the same messages, the same summary
// and the same exit status. Each tool runs right after the file is evicted, so both meet the device.
import Glibc
import TestSupport
import Testing

@Suite(
    "Injected read errors: baio cat and dd against GNU", .serialized,
    .enabled(if: FaultyDisk.available, FaultyDisk.skipReason), .timeLimit(.minutes(3)))
struct InjectedErrorCommandTests {
    /// Operands per file, "FILE" standing for the file and "OUT" for an output file.
    static let rows: [(String, [String])] = [
        ("first.bin", ["cat", "FILE"]),
        ("middle.bin", ["cat", "FILE"]),
        ("late.bin", ["cat", "FILE"]),
        ("first.bin", ["dd", "if=FILE", "of=OUT", "bs=64K"]),
        ("middle.bin", ["dd", "if=FILE", "of=OUT", "bs=64K"]),
        ("middle.bin", ["dd", "if=FILE", "of=OUT", "bs=1000"]),  // a record that ends short at the bad pages
        ("middle.bin", ["dd", "if=FILE", "of=OUT", "bs=4K", "skip=64"]),  // starts after them
        ("middle.bin", ["dd", "if=FILE", "of=OUT", "bs=4K", "skip=40", "count=1"]),  // inside them
        ("late.bin", ["dd", "if=FILE", "of=OUT", "bs=1M"]),
        ("late.bin", ["dd", "if=FILE", "of=OUT", "iflag=skip_bytes,count_bytes", "skip=12345", "count=3000000"]),
    ]

    /// Messages with the tool's name as "TOOL", and dd's timing ("..., 0.02 s, 4.9 MB/s") dropped.
    static func normalized(_ stderr: String, tool: String) -> String {
        stderr.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            var text = String(line)
            if text.hasPrefix("\(tool): ") { text = "TOOL: " + text.dropFirst(tool.count + 2) }
            text.replace(/, [0-9.e+-]+ s, .*$/, with: "")
            return text
        }.joined(separator: "\n")
    }

    @Test(
        "EIO at the first page, after it, and none: baio's output, messages and status are GNU's",
        arguments: 0..<rows.count)
    func matchesGNU(_ row: Int) throws {
        let baio = try #require(Baio.path, "baio was not built next to the tests")
        let (name, operands) = Self.rows[row]
        let file = try FaultyDisk.file(name)
        let work = try FaultyDisk.workDirectory()
        var results: [(status: Int32?, output: [UInt8], messages: String)] = []
        for (tool, argv) in [("baio", [baio]), ("/bin/\(operands[0])", ["/bin/\(operands[0])"])] {
            let out = "\(work)-cmd-\(row).out"
            unlink(out)
            defer { unlink(out) }
            let arguments = (tool == "baio" ? operands : Array(operands.dropFirst())).map {
                $0.substituting("FILE", with: file.path).substituting("OUT", with: out)
            }
            file.evict()
            let ended = try Child.run(argv + arguments)
            let output = operands[0] == "cat" ? ended.stdout : FaultyDisk.readBytes(out)
            results.append((ended.status, output, Self.normalized(ended.stderr, tool: tool)))
        }
        let (ours, theirs) = (results[0], results[1])
        let what = "\(name): \(operands.joined(separator: " "))"
        #expect(ours.status == theirs.status, "\(what): baio \(ours.messages) / GNU \(theirs.messages)")
        #expect(ours.messages == theirs.messages, "\(what)")
        #expect(ours.output.count == theirs.output.count, "\(what)")
        // Both wrote the file's true bytes (GNU's output is checked too: the faulty disk must not return wrong data).
        let start = operands.contains("skip=64") ? 64 * 4096 : operands.contains("skip=12345") ? 12345 : 0
        #expect(
            ours.output == file.originalBytes(start, ours.output.count), "\(what): baio's bytes differ from the file's")
        #expect(
            theirs.output == file.originalBytes(start, theirs.output.count),
            "\(what): GNU's bytes differ from the file's")
    }
}

extension String {
    fileprivate func substituting(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
