// `baio dd` at the limits (issue 13): block sizes no allocation can meet, skip= and seek= past what the
// filesystem or off_t can hold. The oracle is GNU dd on the same operands and files: the same messages
// (with `baio` for `dd`), summary lines, exit status and output file. Before the fix bs=1T was a Swift
// allocation trap (exit 134) and skip=1000000000000 bs=1M exited 0.
import Foundation
import Glibc
import TestSupport
import Testing

/// One comparison: operands after `if=INPUT of=OUTPUT` (or with `< INPUT` / `> OUTPUT`), and what the run
/// must show whatever GNU says (so a GNU that changed its mind is noticed too).
struct DDLimitRow: Sendable, CustomTestStringConvertible {
    let operands: String
    /// Standard input instead of if=, standard output instead of of=.
    var redirected = false
    let status: Int32
    /// A line baio's standard error must contain.
    let message: String

    var testDescription: String { operands + (redirected ? " [redirected]" : "") }
}

let ddLimitRows: [DDLimitRow] = [
    // 1 TiB and 100 GiB exceed this machine's memory (the kernel's overcommit heuristic refuses them); GNU
    // dies without a summary.
    DDLimitRow(
        operands: "bs=1T count=1", status: 1,
        message: "memory exhausted by input buffer of size 1099511627776 bytes (1.0 TiB)"),
    DDLimitRow(
        operands: "bs=100G count=1", status: 1,
        message: "memory exhausted by input buffer of size 107374182400 bytes (100 GiB)"),
    DDLimitRow(
        operands: "ibs=1T", status: 1,
        message: "memory exhausted by input buffer of size 1099511627776 bytes (1.0 TiB)"),
    DDLimitRow(
        operands: "obs=1T", status: 1,
        message: "memory exhausted by output buffer of size 1099511627776 bytes (1.0 TiB)"),
    DDLimitRow(
        operands: "bs=1T conv=swab", status: 1,
        message: "memory exhausted by input buffer of size 1099511627776 bytes (1.0 TiB)"),
    DDLimitRow(
        operands: "bs=1T", redirected: true, status: 1,
        message: "memory exhausted by input buffer of size 1099511627776 bytes (1.0 TiB)"),
    // No record is read, so no buffer is needed.
    DDLimitRow(operands: "bs=1T count=0", status: 0, message: "0+0 records in"),
    // A block size the machine can hold, over a small file: the engine's buffer is the file's size.
    DDLimitRow(operands: "bs=8G", status: 0, message: "0+1 records in"),
    // skip= past ext4's 16 TiB limit: lseek says EINVAL; past off_t: EOVERFLOW. Both stop with the summary.
    DDLimitRow(operands: "skip=1000000000000 bs=1M", status: 1, message: ": cannot skip: Invalid argument"),
    DDLimitRow(operands: "skip=16T iflag=skip_bytes", status: 1, message: ": cannot skip: Invalid argument"),
    DDLimitRow(
        operands: "skip=10000000000000 bs=1M", status: 1,
        message: ": cannot skip: Value too large for defined data type"),
    DDLimitRow(
        operands: "skip=1000000000000 bs=1M", redirected: true, status: 1,
        message: "'standard input': cannot skip: Invalid argument"),
    // Past the end of the file but within the limits: only a warning.
    DDLimitRow(operands: "skip=15T iflag=skip_bytes", status: 0, message: ": cannot skip to specified offset"),
    DDLimitRow(
        operands: "skip=100 bs=1M", redirected: true, status: 0,
        message: "'standard input': cannot skip to specified offset"),
    // seek= past the limit: the truncation fails (reported, not fatal), then the seek (fatal, summary).
    DDLimitRow(operands: "seek=1000000000000 bs=1M", status: 1, message: ": cannot seek: Invalid argument"),
    DDLimitRow(
        operands: "seek=1000000000000 bs=1M conv=notrunc", status: 1, message: ": cannot seek: Invalid argument"),
    DDLimitRow(
        operands: "seek=10000000000000 bs=1M conv=notrunc", status: 1,
        message: ": cannot seek: Value too large for defined data type"),
    DDLimitRow(operands: "seek=10000000000000 bs=1M", status: 1, message: "offset too large: cannot truncate"),
    DDLimitRow(
        operands: "seek=1000000000000 bs=1M", redirected: true, status: 1,
        message: "'standard output': cannot seek: Invalid argument"),
]

@Suite("baio dd at the limits", .serialized, .timeLimit(.minutes(2)))
struct DDLimitTests {
    @Test(
        "baio dd says what GNU dd says, with its exit status, for sizes and offsets nothing can meet",
        arguments: ddLimitRows)
    func matchesGNU(_ row: DDLimitRow) throws {
        let baio = try #require(Baio.path)
        try #require(Scratch.available, Scratch.skipReason)
        let input = try PatternFile(size: 40, name: "dd-limit")
        let directory = try Scratch.location.get()
        let tag = "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        // The same file name for both tools, so their messages name the same file.
        let output = "\(directory)/baio-dd-limit-out-\(tag)"
        defer { unlink(output) }

        func run(_ tool: String) throws -> (status: Int32, stderr: String, output: [UInt8]?) {
            unlink(output)
            let i = quoted(input.path)
            let o = quoted(output)
            let files = row.redirected ? "< \(i) > \(o)" : "if=\(i) of=\(o)"
            let result = try Baio.run(
                executable: "/bin/sh", ["-c", "\(tool) \(files) \(row.operands)"],
                environment: ["LC_ALL": "C", "PATH": "/usr/bin:/bin"])
            // Only the first MiB: seek= rows leave sparse files whose size is the offset.
            var bytes: [UInt8]? = nil
            let fd = open(output, O_RDONLY)
            if fd >= 0 {
                var buffer = [UInt8](repeating: 0, count: 1 << 20)
                let n = pread(fd, &buffer, buffer.count, 0)
                bytes = Array(buffer.prefix(max(n, 0)))
                close(fd)
            }
            let stderr = result.stderr.replacing(/copied, [0-9.e+-]+ s, [^\n]*/, with: "copied")
            return (result.status, stderr, bytes)
        }

        let ours = try run("\(quoted(baio)) dd")
        let theirs = try run("dd")
        #expect(ours.status == row.status, "\(ours.stderr)")
        #expect(ours.stderr.contains(row.message), "\(ours.stderr)")
        #expect(ours.status == theirs.status, "baio: \(ours.stderr)\nGNU: \(theirs.stderr)")
        let translated = theirs.stderr.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix("dd: ") ? "baio: " + $0.dropFirst(4) : String($0) }.joined(separator: "\n")
        #expect(ours.stderr == translated, "baio:\n\(ours.stderr)\nGNU:\n\(theirs.stderr)")
        #expect(ours.output == theirs.output, "the output files differ")
    }

    @Test("bs=3G reads at most MAX_RW_COUNT per read, as read(2) does: every byte, GNU's partial records")
    func blocksBeyondMaximumRead() throws {
        let baio = try #require(Baio.path)
        try #require(Scratch.available, Scratch.skipReason)
        // Sparse: 2 GiB + 5000 bytes of hole cost no disk, and read as zeros. Before the fix baio dd read
        // one 2 GiB - 4 KiB record, took the short count for the end of the file and stopped (exit 0).
        let path = "\(try Scratch.location.get())/baio-dd-3g-\(getpid())"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        try #require(ftruncate(fd, off_t((2 << 30) + 5000)) == 0)
        close(fd)
        defer { unlink(path) }
        func run(_ tool: String) throws -> (status: Int32, stderr: String) {
            let result = try Baio.run(
                executable: "/bin/sh", ["-c", "\(tool) if=\(quoted(path)) of=/dev/null bs=3G"],
                environment: ["LC_ALL": "C", "PATH": "/usr/bin:/bin"])
            return (result.status, result.stderr.replacing(/, [0-9.e+-]+ s, [^\n]*/, with: ""))
        }
        let ours = try run("\(quoted(baio)) dd")
        let theirs = try run("dd")
        #expect(ours.status == 0 && theirs.status == 0)
        #expect(ours.stderr == "0+2 records in\n0+2 records out\n2147488648 bytes (2.1 GB, 2.0 GiB) copied\n")
        #expect(ours.stderr == theirs.stderr, "baio:\n\(ours.stderr)\nGNU:\n\(theirs.stderr)")
    }
}
