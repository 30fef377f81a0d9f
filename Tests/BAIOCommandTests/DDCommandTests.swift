// End-to-end tests of `baio dd` against GNU dd on ext4: the same operands on the same input must give the
// same output bytes, the same record counts and sizes in the summary, and the same exit status.
import Foundation
import Glibc
import TestSupport
import Testing

/// One row of the comparison: operands given verbatim to both tools, and how input and output are set up.
struct DDRow: Sendable, CustomTestStringConvertible {
    enum Input: Sendable {
        /// Read right before the run, so the copy is served from the page cache.
        case cached
        /// Dropped from the cache (checked with mincore) before each tool runs.
        case evicted
        /// 4 MiB + 123 bytes with a hole at [1 MiB, 2 MiB) and from 3 MiB to the end (the last block is a hole).
        case holes
    }

    enum Plumbing: Sendable {
        /// if=INPUT of=OUTPUT.
        case files
        /// No if= or of=: `< INPUT > OUTPUT`, so both are regular files reached through standard streams.
        case redirected
        /// `cat INPUT | tool ... > OUTPUT`: a pipe whose reads may be short (rows use iflag=fullblock).
        case catPipe
        /// The first 40,000 input bytes written into a pipe 1,000 at a time with pauses, so every read is
        /// short.
        case slowPipe
        /// if=INPUT, output through `| cat > OUTPUT`: a pipe, where seek= has to write zeros.
        case pipeOut
    }

    let operands: String
    var input = Input.cached
    var plumbing = Plumbing.files
    /// OUTPUT already exists with 3 MB of other bytes (for conv=notrunc and truncation at seek=).
    var existingOutput = false

    var testDescription: String {
        var text = operands.isEmpty ? "(no operands)" : operands
        if input != .cached { text += " (\(input) input)" }
        if plumbing != .files { text += " [\(plumbing)]" }
        if existingOutput { text += " into an existing file" }
        return text
    }
}

/// The operand table. The input is 1 MiB + 123 bytes of pattern data unless the row says holes, so most
/// operand sets end in a partial record. Add a row to test another combination.
let ddRows: [DDRow] = [
    DDRow(operands: "bs=4K", input: .evicted),
    DDRow(operands: "bs=4K"),
    DDRow(operands: "bs=1M", input: .evicted),
    DDRow(operands: "bs=1000"),
    DDRow(operands: ""),
    DDRow(operands: "ibs=512 obs=4K", input: .evicted),
    DDRow(operands: "ibs=4K obs=1000"),
    DDRow(operands: "ibs=1M obs=3000", input: .evicted),
    DDRow(operands: "count=3"),
    DDRow(operands: "bs=4K skip=2 count=5", input: .evicted),
    DDRow(operands: "bs=4K seek=3"),
    DDRow(operands: "bs=4K seek=2 conv=notrunc", existingOutput: true),
    DDRow(operands: "bs=4K seek=2", existingOutput: true),
    DDRow(operands: "bs=4K conv=notrunc", existingOutput: true),
    DDRow(operands: "ibs=4K obs=1000 skip=3 seek=5 count=7"),
    DDRow(operands: "bs=4K iflag=count_bytes,skip_bytes skip=1000 count=5000", input: .evicted),
    DDRow(operands: "ibs=1M obs=4K iflag=count_bytes count=1000000"),
    DDRow(operands: "bs=4K oflag=seek_bytes seek=777"),
    DDRow(operands: "bs=2x2K count=1KiB iflag=count_bytes"),
    DDRow(operands: "bs=64K count=0"),
    DDRow(operands: "bs=4K skip=1000"),
    DDRow(operands: "bs=4K conv=sparse", input: .holes),
    DDRow(operands: "ibs=4K obs=64K conv=sparse", input: .holes),
    DDRow(operands: "bs=1M conv=sparse,fsync", input: .holes),
    DDRow(operands: "bs=4K iflag=direct", input: .evicted),
    DDRow(operands: "bs=1M skip=1 iflag=direct", input: .evicted),
    DDRow(operands: "bs=4K oflag=direct"),
    DDRow(operands: "bs=64K conv=fdatasync"),
    DDRow(operands: "bs=4K", plumbing: .redirected),
    DDRow(operands: "ibs=4K obs=3000 skip=5", plumbing: .redirected),
    DDRow(operands: "bs=4K iflag=fullblock", plumbing: .catPipe),
    DDRow(operands: "bs=4K skip=3 count=5 iflag=fullblock", plumbing: .catPipe),
    DDRow(operands: "bs=4K iflag=fullblock", plumbing: .slowPipe),
    DDRow(operands: "ibs=4K obs=3000 iflag=fullblock", plumbing: .slowPipe),
    DDRow(operands: "bs=4K seek=2", plumbing: .pipeOut),
    DDRow(operands: "bs=4K conv=sync", input: .evicted),
    DDRow(operands: "ibs=1000 obs=777 conv=sync"),
    DDRow(operands: "conv=swab"),
    DDRow(operands: "bs=4K conv=swab", input: .evicted),
    DDRow(operands: "ibs=1001 obs=333 conv=sync,swab"),
    DDRow(operands: "bs=4097 count=10001 iflag=count_bytes conv=sync,swab"),
    DDRow(operands: "bs=4K skip=3 seek=2 conv=swab"),
    DDRow(operands: "bs=4K iflag=fullblock conv=swab", plumbing: .catPipe),
    DDRow(operands: "bs=4K conv=sync,sparse", input: .holes),
    DDRow(operands: "bs=64K oflag=dsync"),
    DDRow(operands: "bs=64K oflag=sync conv=fsync"),
]

/// Operand errors: what `baio dd` must print (and GNU dd prints, with `dd` for `baio dd`), exit status 1,
/// and no output file.
let ddOperandErrors: [(operands: String, message: String)] = [
    ("foo=1", "baio: unrecognized operand 'foo=1'\nTry 'baio dd --help' for more information.\n"),
    ("if", "baio: unrecognized operand 'if'\nTry 'baio dd --help' for more information.\n"),
    ("bs=0", "baio: invalid number: '0'\n"),
    ("bs=-1", "baio: invalid number: '-1'\n"),
    ("bs=1X", "baio: invalid number: '1X'\n"),
    ("bs=", "baio: invalid number: ''\n"),
    ("count=abc", "baio: invalid number: 'abc'\n"),
    ("skip=1e", "baio: invalid number: '1e'\n"),
    (
        "bs=99999999999999999999999",
        "baio: invalid number: '99999999999999999999999': Value too large for defined data type\n"
    ),
    ("iflag=foo", "baio: invalid input flag: 'foo'\nTry 'baio dd --help' for more information.\n"),
    ("oflag=fullblock", "baio: invalid output flag: 'fullblock'\nTry 'baio dd --help' for more information.\n"),
    ("conv=bar", "baio: invalid conversion: 'bar'\nTry 'baio dd --help' for more information.\n"),
    ("status=loud", "baio: invalid status level: 'loud'\nTry 'baio dd --help' for more information.\n"),
    ("iflag=direct,nocache", "baio: cannot combine direct and nocache\n"),
    ("conv=excl,nocreat", "baio: cannot combine excl and nocreat\n"),
    ("--foo", "baio: unrecognized option '--foo'\nTry 'baio dd --help' for more information.\n"),
]

/// Runs `script` with /bin/sh in the C locale (GNU dd then quotes with ASCII quotes).
private func sh(_ script: String) throws -> (status: Int32, stdout: String, stderr: String) {
    var environment = ProcessInfo.processInfo.environment
    environment["LC_ALL"] = "C"
    return try Baio.run(executable: "/bin/sh", ["-c", script], environment: environment)
}

private func shellQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

private func contents(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map { [UInt8]($0) }
}

private func allocatedBlocks(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_blocks) : -1
}

/// A fresh path in the scratch directory, removed by the caller.
private func scratchPath(_ name: String) throws -> String {
    "\(try Scratch.location.get())/baio-dd-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
}

/// The summary's parts: every line but the transfer line (records, warnings), and the transfer line's
/// deterministic part, "N bytes (SI, IEC) copied" (seconds and rate differ from run to run).
private struct Summary: Equatable {
    var lines: [String] = []
    var copied: String?

    init(_ stderr: String, tool: String) {
        let transfer =
            /(\d+ bytes? (\([0-9.]+ [kMGT]?B(, [0-9.]+ [KMGT]iB)?\) )?copied), [0-9.e+-]+ s, ([0-9.]+ [kMGTPE]B|Infinity B)\/s/
        for line in stderr.split(separator: "\n").map(String.init) {
            if let match = line.wholeMatch(of: transfer) {
                copied = String(match.1)
            } else {
                lines.append(line.replacingOccurrences(of: "\(tool): ", with: "TOOL: "))
            }
        }
    }
}

@Suite("baio dd", .serialized, .timeLimit(.minutes(2)))
struct DDCommandTests {
    static let inputSize = (1 << 20) + 123

    @Test("baio dd matches GNU dd: output bytes, records in/out, bytes copied, exit status", arguments: ddRows)
    func matchesGNU(_ row: DDRow) throws {
        let baio = try #require(Baio.path, "baio was not built next to the tests")
        try #require(Scratch.available, Scratch.skipReason)
        let input: PatternFile
        switch row.input {
        case .holes:
            input = try PatternFile(
                size: (4 << 20) + 123, name: "dd-holes", holes: [1 << 20..<2 << 20, 3 << 20..<(4 << 20) + 123])
        default:
            input = try PatternFile(size: Self.inputSize, name: "dd-input")
        }
        let gnuOutput = try scratchPath("gnu")
        let baioOutput = try scratchPath("baio")
        defer {
            unlink(gnuOutput)
            unlink(baioOutput)
        }
        if row.existingOutput {
            let other = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 0x5a) })
            try other.write(to: URL(fileURLWithPath: gnuOutput))
            try other.write(to: URL(fileURLWithPath: baioOutput))
        }

        func command(_ tool: String, _ output: String) -> String {
            let operands = row.operands
            let i = shellQuoted(input.path)
            let o = shellQuoted(output)
            switch row.plumbing {
            case .files: return "\(tool) if=\(i) of=\(o) \(operands)"
            case .redirected: return "\(tool) \(operands) < \(i) > \(o)"
            case .catPipe: return "cat \(i) | \(tool) \(operands) > \(o)"
            case .slowPipe:
                return """
                    n=0; while [ $n -lt 40 ]; do dd if=\(i) bs=1000 skip=$n count=1 status=none; sleep 0.002; \
                    n=$((n+1)); done | \(tool) \(operands) > \(o)
                    """
            case .pipeOut: return "\(tool) if=\(i) \(operands) | cat > \(o)"
            }
        }
        func prepare() {
            switch row.input {
            case .evicted: input.evict()
            case .cached: input.warm()
            case .holes: break
            }
        }

        prepare()
        let ours = try sh(command(shellQuoted(baio) + " dd", baioOutput))
        if row.operands.contains("iflag=direct") && row.input == .evicted {
            // O_DIRECT reads go around the page cache: an evicted input stays evicted.
            #expect(input.residentPages() == 0, "iflag=direct left input pages in the page cache")
        }
        prepare()
        let theirs = try sh(command("dd", gnuOutput))

        #expect(ours.status == theirs.status, "baio: \(ours.stderr)\nGNU: \(theirs.stderr)")
        let ourBytes = try #require(contents(baioOutput), "baio dd wrote no output file")
        let theirBytes = try #require(contents(gnuOutput))
        #expect(ourBytes.count == theirBytes.count)
        // A Bool, not the arrays: Swift Testing would diff megabytes element by element on a failure.
        let same = ourBytes == theirBytes
        let firstDifference = (0..<min(ourBytes.count, theirBytes.count)).first { ourBytes[$0] != theirBytes[$0] }
        let at = firstDifference ?? min(ourBytes.count, theirBytes.count)
        #expect(same, "output differs from GNU dd's, first at byte \(at)")
        let ourSummary = Summary(ours.stderr, tool: "baio")
        let theirSummary = Summary(theirs.stderr, tool: "dd")
        #expect(ourSummary.lines == theirSummary.lines, "baio:\n\(ours.stderr)\nGNU:\n\(theirs.stderr)")
        #expect(
            ourSummary.copied != nil && ourSummary.copied == theirSummary.copied,
            "baio:\n\(ours.stderr)\nGNU:\n\(theirs.stderr)")
        if row.operands.contains("conv=sparse") {
            // Holes in, holes out: the same allocation as GNU dd's sparse copy, far less than the size.
            let ours = allocatedBlocks(baioOutput)
            let theirs = allocatedBlocks(gnuOutput)
            #expect(ours > 0 && ours <= theirs + 16, "baio dd allocated \(ours) blocks, GNU dd \(theirs)")
            #expect(ours * 512 < ourBytes.count * 3 / 4, "the sparse output has no holes: \(ours) blocks")
        }
    }

    @Test("iflag=nocache drops exactly the range it read from the page cache")
    func nocacheDropsWhatItRead() throws {
        let baio = try #require(Baio.path)
        try #require(Scratch.available, Scratch.skipReason)
        let input = try PatternFile(size: Self.inputSize, name: "dd-nocache")
        let output = try scratchPath("nocache")
        defer { unlink(output) }
        // Cached one page at a time: pages read by readahead or written in one call may sit in large folios,
        // which DONTNEED drops only whole, for GNU dd as for us.
        input.evict()
        for page in 0..<(Self.inputSize + 4095) / 4096 { input.warmPage(page) }
        #expect(input.residentPages() > 200)
        let result = try sh(
            "\(shellQuoted(baio)) dd if=\(shellQuoted(input.path)) of=\(shellQuoted(output)) bs=4K skip=16 count=64 "
                + "iflag=nocache status=none")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(input.residentPages(16 * 4096, 64 * 4096) == 0, "the range read is still cached")
        // Checked after residency: the oracle's pread caches what it reads.
        let copied = contents(output) == input.expected(16 * 4096, 64 * 4096)
        #expect(copied)
        // Pages outside the range were not dropped (the kernel may drop idle pages, so only a few must remain).
        #expect(input.residentPages(128 * 4096, 64 * 4096) > 0, "pages beyond the range were dropped too")

        // count=0 with nocache drops the whole file, as GNU dd does.
        input.warm()
        let whole = try sh("\(shellQuoted(baio)) dd if=\(shellQuoted(input.path)) of=/dev/null count=0 iflag=nocache")
        #expect(whole.status == 0)
        #expect(input.residentPages() == 0)
    }

    @Test(
        "operand errors: dd's message, exit status 1, nothing opened or created", arguments: 0..<ddOperandErrors.count)
    func operandErrors(_ index: Int) throws {
        let baio = try #require(Baio.path)
        try #require(Scratch.available, Scratch.skipReason)
        let (operands, message) = ddOperandErrors[index]
        let output = try scratchPath("never")
        let ours = try sh("\(shellQuoted(baio)) dd \(operands) of=\(shellQuoted(output)) < /dev/null")
        #expect(ours.status == 1)
        #expect(ours.stderr == message)
        #expect(ours.stdout.isEmpty)
        #expect(access(output, F_OK) != 0, "an output file was created for a bad operand")
        // GNU dd says the same, with its own name.
        let theirs = try sh("dd \(operands) of=\(shellQuoted(output)) < /dev/null")
        unlink(output)
        #expect(theirs.status == 1)
        let translated = theirs.stderr.replacingOccurrences(of: "dd", with: "baio dd")
            .replacingOccurrences(of: "baio dd: ", with: "baio: ")
        #expect(translated == message)
    }

    @Test("file errors: a missing input creates no output; a missing output directory; exit status 1")
    func fileErrors() throws {
        let baio = try #require(Baio.path)
        try #require(Scratch.available, Scratch.skipReason)
        let output = try scratchPath("never")
        let missingInput = try sh("\(shellQuoted(baio)) dd if=/nonexistent/baio-input of=\(shellQuoted(output))")
        #expect(missingInput.status == 1)
        #expect(missingInput.stderr == "baio: failed to open '/nonexistent/baio-input': No such file or directory\n")
        #expect(access(output, F_OK) != 0)

        let input = try PatternFile(size: 4096, name: "dd-errors")
        let missingDirectory = try sh("\(shellQuoted(baio)) dd if=\(shellQuoted(input.path)) of=/nonexistent/dir/out")
        #expect(missingDirectory.status == 1)
        #expect(missingDirectory.stderr == "baio: failed to open '/nonexistent/dir/out': No such file or directory\n")

        // A read error after opening: dd reports it and still prints the summary.
        let directory = try Scratch.location.get()
        let unreadable = try sh("\(shellQuoted(baio)) dd if=\(shellQuoted(directory)) of=/dev/null")
        #expect(unreadable.status == 1)
        #expect(unreadable.stderr.hasPrefix("baio: error reading '\(directory)': Is a directory\n0+0 records in\n"))
    }

    @Test("status=none prints nothing, status=noxfer omits the transfer line, status=progress ends with the summary")
    func statusLevels() throws {
        let baio = try #require(Baio.path)
        try #require(Scratch.available, Scratch.skipReason)
        let input = try PatternFile(size: Self.inputSize, name: "dd-status")
        let none = try sh("\(shellQuoted(baio)) dd if=\(shellQuoted(input.path)) of=/dev/null bs=4K status=none")
        #expect(none.status == 0)
        #expect(none.stderr.isEmpty)
        #expect(none.stdout.isEmpty)
        let noxfer = try sh("\(shellQuoted(baio)) dd if=\(shellQuoted(input.path)) of=/dev/null bs=4K status=noxfer")
        #expect(noxfer.stderr == "256+1 records in\n256+1 records out\n")
        // Standard output carries only the data, whatever the status level.
        let output = try scratchPath("progress")
        defer { unlink(output) }
        let progress = try sh(
            "\(shellQuoted(baio)) dd if=\(shellQuoted(input.path)) bs=4K status=progress > \(shellQuoted(output))")
        let clean = contents(output) == input.expected(0, Self.inputSize)
        #expect(clean, "progress output mixed into the data")
        #expect(
            progress.stderr.hasPrefix("256+1 records in\n256+1 records out\n1048699 bytes (1.0 MB, 1.0 MiB) copied, "))
    }

    @Test("status=progress refreshes one line in place on stderr during a long copy")
    func progressLine() throws {
        let baio = try #require(Baio.path)
        // A copy that lasts over a second: the reader starts late, so the writer waits on a full pipe.
        let result = try sh(
            "\(shellQuoted(baio)) dd if=/dev/zero bs=64K count=40 status=progress | (sleep 1.2; cat > /dev/null)")
        let stderr = result.stderr
        #expect(stderr.hasPrefix("\r"), "no progress line: \(stderr.debugDescription)")
        #expect(
            stderr.contains(/^\r\d+ bytes \([^)]*\) copied, \d+ s, [0-9.]+ [kMG]B\/s/),
            "progress shows whole seconds: \(stderr.debugDescription)")
        #expect(stderr.contains("\n40+0 records in\n40+0 records out\n2621440 bytes (2.6 MB, 2.5 MiB) copied, "))
    }

    @Test("SIGINT cancels the reads in flight, prints the summary so far and ends the process by SIGINT")
    func interrupt() throws {
        let baio = try #require(Baio.path)
        try #require(Scratch.available, Scratch.skipReason)
        let input = try PatternFile(size: 16 << 20, name: "dd-interrupt")
        input.evict()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: baio)
        process.arguments = ["dd", "if=\(input.path)", "bs=1M"]
        // Standard output is a pipe nobody reads: the copy blocks in write with engine reads in flight.
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        usleep(500_000)
        let sent = ContinuousClock.now
        process.interrupt()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let elapsed = ContinuousClock.now - sent
        #expect(elapsed < .seconds(5), "baio dd took \(elapsed) to end after SIGINT")
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGINT)
        let text = String(decoding: stderr, as: UTF8.self)
        #expect(text.contains(/\d+\+\d+ records in\n\d+\+\d+ records out\n\d+ bytes/), "\(text)")
    }

    @Test("SIGPIPE from a closed reader ends the copy promptly")
    func brokenPipe() throws {
        let baio = try #require(Baio.path)
        try #require(Scratch.available, Scratch.skipReason)
        let input = try PatternFile(size: 8 << 20, name: "dd-pipe")
        input.evict()
        let result = try sh("\(shellQuoted(baio)) dd if=\(shellQuoted(input.path)) bs=64K | head -c 100 | wc -c")
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "100")
    }

    @Test("baio dd --help lists the operands, flags and examples; baio --help lists dd")
    func help() throws {
        let help = try Baio.run(["dd", "--help"])
        #expect(help.status == 0)
        for text in [
            "if=FILE", "of=FILE", "bs=BYTES", "ibs=BYTES", "obs=BYTES", "count=N", "skip=N", "seek=N",
            "iflag=FLAGS", "oflag=FLAGS", "conv=CONVS", "status=LEVEL", "fullblock", "count_bytes",
            "skip_bytes", "seek_bytes", "nocache", "direct", "notrunc", "sparse", "fdatasync", "noxfer",
            "progress", "Examples:", "baio dd if=", "Exit status",
        ] {
            #expect(help.stdout.contains(text), "help lacks \(text)")
        }
        let root = try Baio.run(["--help"])
        #expect(root.stdout.contains("dd"))
    }
}
