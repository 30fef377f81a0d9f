// End-to-end tests of `baio cat`, run as the built binary beside GNU cat on the same operands: the oracle is
// cat's standard output byte for byte, its exit status, and its messages with "cat:" read as "baio:".
import Glibc
import TestSupport
import Testing

@Suite(
    "baio cat against GNU cat", .serialized, .timeLimit(.minutes(5)),
    .enabled(if: Scratch.available, Scratch.skipReason))
struct CatCommandTests {
    static let cat = "/bin/cat"

    func baio() throws -> String { try #require(Baio.path, "baio was not built next to the tests") }

    /// Runs `baio cat ARGS` and `cat ARGS` and expects the same bytes, status and messages.
    @discardableResult
    func expectSameAsCat(
        _ arguments: [String], stdinPath: String = "/dev/null", sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Child.Ended {
        let ours = try Child.run([try baio(), "cat"] + arguments, stdinPath: stdinPath)
        let theirs = try Child.run([Self.cat] + arguments, stdinPath: stdinPath)
        #expect(ours.signal == nil, "\(ours)", sourceLocation: sourceLocation)
        #expect(ours.status == theirs.status, "baio \(ours) / cat \(theirs)", sourceLocation: sourceLocation)
        #expect(ours.stdout.count == theirs.stdout.count, sourceLocation: sourceLocation)
        expectSameOutput(ours.stdout, theirs.stdout, sourceLocation: sourceLocation)
        #expect(ours.stderr == asBaio(theirs.stderr), sourceLocation: sourceLocation)
        return ours
    }

    /// Reports where two outputs first differ, instead of printing megabytes of bytes.
    func expectSameOutput(_ ours: [UInt8], _ theirs: [UInt8], sourceLocation: SourceLocation) {
        guard ours != theirs else { return }
        let at =
            zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            ?? min(ours.count, theirs.count)
        let window = { (bytes: [UInt8]) in Array(bytes[min(at, bytes.count)..<min(at + 16, bytes.count)]) }
        Issue.record(
            "standard output differs from cat's at byte \(at) of \(ours.count)/\(theirs.count): baio \(window(ours)), cat \(window(theirs))",
            sourceLocation: sourceLocation)
    }

    /// cat's messages as baio words them.
    func asBaio(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            // GNU cat names itself by argv[0].
            line.hasPrefix("\(Self.cat): ") ? "baio: " + line.dropFirst(Self.cat.count + 2) : String(line)
        }.joined(separator: "\n")
    }

    func sh(
        _ script: String, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (ours: Child.Ended, theirs: Child.Ended) {
        let baio = try baio()
        let ours = try Child.shell(script.replacingCat(with: "\(quoted(baio)) cat"))
        let theirs = try Child.shell(script.replacingCat(with: Self.cat))
        #expect(ours.status == theirs.status, "baio \(ours) / cat \(theirs)", sourceLocation: sourceLocation)
        expectSameOutput(ours.stdout, theirs.stdout, sourceLocation: sourceLocation)
        #expect(ours.stderr == asBaio(theirs.stderr), sourceLocation: sourceLocation)
        return (ours, theirs)
    }

    @Test("several files, evicted and cached, empty and of one byte, concatenate exactly as cat does")
    func severalFiles() throws {
        let empty = try PatternFile(size: 0, name: "cat-empty")
        let one = try PatternFile(size: 1, name: "cat-one")
        let odd = try PatternFile(size: 4097, name: "cat-odd")
        let evicted = try PatternFile(size: (9 << 20) + 5, name: "cat-evicted")
        let cached = try PatternFile(size: 5 << 20, name: "cat-cached")
        evicted.evict()
        cached.warm()
        let result = try expectSameAsCat([one.path, empty.path, evicted.path, odd.path, cached.path, evicted.path])
        #expect(result.status == 0)
        #expect(result.stdout.count == 1 + 0 + evicted.size + 4097 + cached.size + evicted.size)
        try expectSameAsCat(["-u", one.path, odd.path])
        #expect(Array(result.stdout[1..<(1 + evicted.size)]) == evicted.expected(0, evicted.size), "pread disagrees")
    }

    @Test("an empty file and a file of one byte, alone")
    func tinyFiles() throws {
        let empty = try PatternFile(size: 0, name: "cat-empty1")
        let one = try PatternFile(size: 1, name: "cat-one1")
        one.evict()
        #expect(try expectSameAsCat([empty.path]).stdout.isEmpty)
        #expect(try expectSameAsCat([one.path]).stdout == one.expected(0, 1))
    }

    @Test("small chunks and a window of one still copy in order")
    func smallWindow() throws {
        let file = try PatternFile(size: (3 << 20) + 123, name: "cat-window")
        file.evict()
        let result = try Child.run([try baio(), "cat", "--chunk-size", "4K", "--window", "1", file.path])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == file.expected(0, file.size))
        file.evict()
        let deep = try Child.run([try baio(), "cat", "--chunk-size", "64K", "--window", "64", file.path])
        #expect(deep.status == 0, "\(deep)")
        #expect(deep.stdout == file.expected(0, file.size))
    }

    @Test("missing files and a directory are reported like cat's, the rest is copied, and the status is 1")
    func missingFilesMixedIn() throws {
        let first = try PatternFile(size: 70_000, name: "cat-first")
        let last = try PatternFile(size: 2 << 20, name: "cat-last")
        last.evict()
        let directory = try Scratch.location.get()
        let result = try expectSameAsCat([
            "/nonexistent/baio-missing", first.path, directory, "baio-no-such-file", last.path, "/nonexistent/again",
        ])
        #expect(result.status == 1)
        #expect(result.stderr.contains("baio: /nonexistent/baio-missing: No such file or directory\n"))
        #expect(result.stderr.contains("baio: \(directory): Is a directory\n"))
        #expect(result.stdout == first.expected(0, first.size) + last.expected(0, last.size))
    }

    @Test("no operand and - read standard input: a pipe, or a regular file from its current offset")
    func standardInput() throws {
        let file = try PatternFile(size: (2 << 20) + 77, name: "cat-stdin")
        let other = try PatternFile(size: 5000, name: "cat-stdin-other")
        file.evict()
        let (fromPipe, _) = try sh("/bin/cat \(quoted(file.path)) | cat")
        #expect(fromPipe.stdout == file.expected(0, file.size))
        let (dashes, _) = try sh("/bin/cat \(quoted(other.path)) | cat - \(quoted(file.path)) -")
        #expect(dashes.stdout == other.expected(0, other.size) + file.expected(0, file.size))
        // A regular file as standard input, 1000 bytes already consumed: copying starts there.
        file.evict()
        let (offset, _) = try sh("{ dd bs=1000 count=1 of=/dev/null status=none; cat; } < \(quoted(file.path))")
        #expect(offset.stdout == file.expected(1000, file.size - 1000))
        let (redirected, _) = try sh("cat < \(quoted(file.path))")
        #expect(redirected.stdout == file.expected(0, file.size))
        // Standard input closed: both complaints of GNU cat, and the other operands still copied.
        let (closed, _) = try sh("cat \(quoted(other.path)) - <&-")
        #expect(closed.status == 1)
        #expect(closed.stderr == "baio: -: Bad file descriptor\nbaio: closing standard input: Bad file descriptor\n")
    }

    @Test("files with no page cache or no size: /dev/null, /proc files, a FIFO")
    func specialFiles() throws {
        try expectSameAsCat(["/dev/null"])
        let version = try expectSameAsCat(["/proc/version"])
        #expect(!version.stdout.isEmpty, "a /proc file's size is 0, but it has content")
        let fifo = "\(try Scratch.location.get())/baio-cat-fifo-\(getpid())"
        try #require(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let (viaFIFO, _) = try sh("printf 'through a fifo\\n' > \(quoted(fifo)) & cat \(quoted(fifo)); wait")
        #expect(String(decoding: viaFIFO.stdout, as: UTF8.self) == "through a fifo\n")
    }

    @Test("a file that is also standard output is refused as cat refuses it")
    func inputIsOutput() throws {
        let file = try PatternFile(size: 10_000, name: "cat-self")
        let copy = try PatternFile(size: 10_000, name: "cat-self-copy")
        let (ours, _) = try sh("cat \(quoted(file.path)) >> \(quoted(file.path))")
        #expect(ours.status == 1)
        #expect(ours.stderr == "baio: \(file.path): input file is output file\n")
        _ = try sh("cat \(quoted(copy.path)) >> \(quoted(copy.path))")
    }

    @Test("a file the caller may not read: Permission denied, as cat says it")
    func permissionDenied() throws {
        try #require(geteuid() == 0, "needs root to drop to uid 65534")
        let secret = try PatternFile(size: 4096, name: "cat-secret", mode: 0o600)
        let readable = try PatternFile(size: 4096, name: "cat-readable", mode: 0o644)
        let drop = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        let ours = try Child.run(drop + [try baio(), "cat", secret.path, readable.path])
        let theirs = try Child.run(drop + [Self.cat, secret.path, readable.path])
        #expect(ours.status == 1 && theirs.status == 1, "baio \(ours) / cat \(theirs)")
        #expect(ours.stderr == "baio: \(secret.path): Permission denied\n")
        #expect(ours.stderr == asBaio(theirs.stderr))
        #expect(ours.stdout == theirs.stdout && ours.stdout == readable.expected(0, 4096))
    }

    @Test("write errors end the copy at once with cat's message and status 1")
    func writeErrors() throws {
        let file = try PatternFile(size: 1 << 20, name: "cat-full")
        let (full, _) = try sh("cat \(quoted(file.path)) \(quoted(file.path)) > /dev/full")
        #expect(full.status == 1)
        #expect(full.stderr == "baio: write error: No space left on device\n")
        // SIGPIPE ignored (as by some service managers): EPIPE is a write error too.
        let (broken, _) = try sh(
            "trap '' PIPE; { cat \(quoted(file.path)); echo \"status $?\" >&2; } | (exec 0<&-; sleep 0.2)")
        #expect(broken.stderr == "baio: write error: Broken pipe\nstatus 1\n")
    }

    @Test("with SIGPIPE at its default, baio dies of it when the reader goes away, as cat does")
    func brokenPipe() throws {
        let file = try PatternFile(size: 64 << 20, name: "cat-sigpipe")
        file.evict()
        for argv in [[try baio(), "cat", file.path], [Self.cat, file.path]] {
            let output = try Child.pipe()
            let null = open("/dev/null", O_RDWR | O_CLOEXEC)
            defer { close(null) }
            let pid = try Child.start(argv, stdin: null, stdout: output.write, stderr: null)
            close(output.write)
            var byte: UInt8 = 0
            #expect(read(output.read, &byte, 1) == 1)
            close(output.read)
            let ended = Child.wait(pid, within: .seconds(30))
            #expect(ended.signal == SIGPIPE, "\(argv[0]): \(ended)")
        }
    }

    @Test("SIGINT ends a copy waiting on an idle pipe, and one blocked writing a large evicted file")
    func interrupt() throws {
        let file = try PatternFile(size: 256 << 20, name: "cat-sigint")
        file.evict()
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        // Standard input is a pipe nobody writes to: baio waits in read(2).
        let input = try Child.pipe()
        let waiting = try Child.start([try baio(), "cat"], stdin: input.read, stdout: null, stderr: null)
        usleep(300_000)
        kill(waiting, SIGINT)
        let first = Child.wait(waiting, within: .seconds(10))
        close(input.read)
        close(input.write)
        #expect(first.signal == SIGINT, "\(first)")

        // Standard output is a pipe nobody reads: baio has reads in flight and is stuck in write(2).
        let output = try Child.pipe()
        let copying = try Child.start([try baio(), "cat", file.path], stdin: null, stdout: output.write, stderr: null)
        var byte: UInt8 = 0
        #expect(read(output.read, &byte, 1) == 1)
        usleep(200_000)
        kill(copying, SIGINT)
        let second = Child.wait(copying, within: .seconds(10))
        close(output.read)
        close(output.write)
        #expect(second.signal == SIGINT, "\(second)")
    }

    @Test("a 1 GiB evicted file comes out byte for byte, read through the engine")
    func oneGiB() throws {
        let file = try PatternFile(size: 1 << 30, name: "cat-1g")
        file.evict()
        let output = try Child.pipe()
        let errors = try TemporaryFile()
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(null) }
        let pid = try Child.start([try baio(), "cat", file.path], stdin: null, stdout: output.write, stderr: errors.fd)
        close(output.write)
        // Streamed against the pread oracle (GNU cat's output is these bytes), never holding 1 GiB.
        let block = 1 << 20
        var received = [UInt8](repeating: 0, count: block)
        var fill = 0
        var offset = 0
        var mismatch: Int?
        while true {
            let n = received.withUnsafeMutableBytes { read(output.read, $0.baseAddress! + fill, block - fill) }
            if n <= 0 { break }
            fill += n
            if fill == block || offset + fill == file.size {
                if mismatch == nil && Array(received.prefix(fill)) != file.expected(offset, fill) { mismatch = offset }
                offset += fill
                fill = 0
            }
        }
        close(output.read)
        let ended = Child.wait(pid, within: .seconds(120))
        #expect(ended.status == 0, "\(ended) \(String(decoding: errors.contents(), as: UTF8.self))")
        #expect(offset + fill == file.size)
        #expect(mismatch == nil, "first differing block at \(mismatch ?? -1)")
    }

    @Test("the progress line goes to standard error only, never into the data")
    func progressLine() throws {
        let file = try PatternFile(size: 32 << 20, name: "cat-progress")
        file.evict()
        let result = try Child.run([try baio(), "cat", "--progress", file.path])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == file.expected(0, file.size))
        #expect(result.stderr.hasPrefix("\r") && result.stderr.hasSuffix("\n"), "\(result.stderr.debugDescription)")
        #expect(
            result.stderr.contains("baio: \(file.path): 32.0 MiB of 32.0 MiB (100%)"),
            "\(result.stderr.debugDescription)")
        let quiet = try Child.run([try baio(), "cat", file.path])
        #expect(quiet.stderr.isEmpty, "no progress line when standard error is not a terminal")
    }

    @Test("on a terminal, a slow copy's progress line is drawn on standard error in place and removed at the end")
    func progressOnTerminal() throws {
        try #require(access("/usr/bin/script", X_OK) == 0, "util-linux script(1) gives the tool a terminal")
        let file = try PatternFile(size: 3 << 20, name: "cat-tty")
        let copy = try TemporaryFile()
        // The first MiB, a pause longer than the half second before a line is drawn, then the rest.
        let producer = "{ head -c 1048576 \(quoted(file.path)); sleep 1; tail -c +1048577 \(quoted(file.path)); }"
        let command = "\(producer) | \(quoted(try baio())) cat > /dev/fd/3"
        let out = try TemporaryFile()
        let errors = try TemporaryFile()
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(null) }
        // script(1) runs the pipeline on a new terminal; descriptor 3 (the copy) is inherited through it.
        let pid = try Child.start(
            ["/usr/bin/script", "-qec", command, "/dev/null"], stdin: null, stdout: out.fd, stderr: errors.fd,
            fd3: copy.fd)
        let ended = Child.wait(pid, within: .seconds(30))
        #expect(ended.status == 0, "\(ended) \(String(decoding: errors.contents(), as: UTF8.self))")
        #expect(copy.contents() == file.expected(0, file.size), "the data must not carry the progress line")
        let terminal = String(decoding: out.contents(), as: UTF8.self)
        #expect(terminal.contains("\rbaio: -: "), "no progress line on the terminal: \(terminal.debugDescription)")
        #expect(terminal.contains("MiB/s\u{1B}[K"), "\(terminal.debugDescription)")
        #expect(terminal.hasSuffix("\r\u{1B}[K"), "the line must be removed at the end: \(terminal.debugDescription)")
    }

    @Test("help with examples, and bad options refused with what to do")
    func helpAndValidation() throws {
        let help = try Child.run([try baio(), "cat", "--help"])
        let text = String(decoding: help.stdout, as: UTF8.self)
        #expect(help.status == 0)
        #expect(text.contains("Examples:") && text.contains("baio cat /var/log/syslog"), "\(text)")
        #expect(text.contains("--chunk-size") && text.contains("--window") && text.contains("--progress"))
        let root = try Child.run([try baio(), "--help"])
        let rootText = String(decoding: root.stdout, as: UTF8.self)
        #expect(rootText.contains("cat") && rootText.contains("residency"), "\(rootText)")
        #expect(rootText.contains("Examples:") && rootText.contains("baio cat big.iso"), "\(rootText)")
        let window = try Child.run([try baio(), "cat", "--window", "0", "/dev/null"])
        #expect(window.status == 64 && window.stderr.contains("--window must be between 1 and 1024"), "\(window)")
        let chunk = try Child.run([try baio(), "cat", "--chunk-size", "lots", "/dev/null"])
        #expect(chunk.status == 64 && chunk.stderr.contains("is not a size"), "\(chunk)")
        let unknown = try Child.run([try baio(), "cat", "--frobnicate"])
        #expect(unknown.status == 64, "\(unknown)")
    }
}

extension String {
    /// The script with each word `cat` (the tool under test) replaced; /bin/cat stays GNU cat.
    func replacingCat(with tool: String) -> String {
        var words = split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        for i in words.indices where words[i] == "cat" || words[i] == "cat;" { words[i] = tool + words[i].dropFirst(3) }
        return words.joined(separator: " ")
    }
}

/// cat's formatting options, each run by baio and by GNU cat on the same files (below). Add a row to test
/// another combination.
let catFormattingRows: [String] = [
    "-n", "-b", "-s", "-E", "-T", "-v", "-A", "-e", "-t",
    "-nb", "-sn", "-bs", "-nE", "-sE", "-vT", "-ET", "-nsA",
    "--number --squeeze-blank", "--show-all", "--show-ends --show-tabs", "--number-nonblank --show-nonprinting",
]

extension CatCommandTests {
    /// Files that exercise every rule: runs of blank lines across files, a CR that ends one file and the LF
    /// that starts the next, a CR LF split over the formatter's 4 KiB pieces, every byte value, no final
    /// newline, and an evicted file of several MiB read through the engine in many chunks.
    func formattingInputs() throws -> [String] {
        guard let directory = Scratch.directory else { return [] }
        var everyByte = [UInt8](0...255) + Array("\n\tx\r\n".utf8)
        everyByte += everyByte.reversed()
        var split = [UInt8](repeating: UInt8(ascii: "a"), count: 4095) + [13, 10] + Array("\n\n\n\t\r\r\n".utf8)
        split += [UInt8](repeating: 10, count: 5000)
        var generator = SeededGenerator(seed: 11)
        let pieces: [[UInt8]] = [
            [13, 10], [10], [10, 10, 10], [9], [13], [0], [255], [127], Array("line".utf8), [200],
        ]
        var large: [UInt8] = []
        while large.count < 3 << 20 { large += pieces[Int(generator.next() % UInt64(pieces.count))] }
        let contents: [(String, [UInt8])] = [
            ("blank-runs", Array("x\n\n\n".utf8)), ("starts-blank", Array("\n\n\n  y\n\n".utf8)),
            ("ends-cr", Array("a\r".utf8)), ("every-byte", everyByte), ("no-newline", Array("abc".utf8)),
            ("split", split), ("large", large),
        ]
        var paths: [String] = []
        for (name, bytes) in contents {
            let path = "\(directory)/cat-format-\(name)"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            try #require(fd >= 0)
            #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count)
            close(fd)
            paths.append(path)
        }
        let fd = open(paths.last!, O_RDONLY)
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        close(fd)
        return paths
    }

    @Test("formatting options (-n -b -s -E -T -v and -A -e -t) give GNU cat's bytes, across files, pieces and stdin")
    func formattingOptions() throws {
        let inputs = try formattingInputs()
        try #require(inputs.count == 7)
        for row in catFormattingRows {
            let options = row.split(separator: " ").map(String.init)
            // All files in one run (state carries across them), then orders that put a CR before an LF file.
            try expectSameAsCat(options + inputs)
            try expectSameAsCat(options + [inputs[2], inputs[1], inputs[2], inputs[0]])
            try expectSameAsCat(options + [inputs[4], "-", inputs[2]], stdinPath: inputs[5])
        }
        // Standard input as a pipe, numbered on from the file before it.
        let (piped, _) = try sh("/bin/cat \(quoted(inputs[3])) | cat -nA \(quoted(inputs[0])) - \(quoted(inputs[2]))")
        #expect(piped.status == 0 && piped.stdout.count > 1024)
    }
}
