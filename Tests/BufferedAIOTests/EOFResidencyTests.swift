// Reads that cross the end of a file whose size is not a page multiple, by a reader mincore lies to
// (uid 65534 on a root-owned 0644 file, so the engine probes with RWF_NOWAIT), through the context API,
// the async API and `baio cat`. RWF_NOWAIT returns a short count at end of file; the engine must take
// one that stops exactly there as "resident", not leave the tail page to the stall path and its
// blocking pread (issue 12, defect 2: 1 s per read, then 10-30 s, with the poller spinning a CPU).
// The reads run in a child under setpriv (this test bundle again, or `baio`); the engine's counters,
// not the time, say which path they took, and pread is the oracle for the bytes.
import BufferedAIO
import Glibc
import TestSupport
import Testing

/// What the parent tells its child through the environment, and how the child answers on stdout.
enum EOFChild {
    static let modeVariable = "BAIO_EOF_CHILD"
    static let fileVariable = "BAIO_EOF_FILE"
    static let marker = "eof-child:"
}

@Suite(
    "Reads across end of file by an unprivileged reader", .serialized,
    .enabled(if: geteuid() == 0, "needs root to drop to uid 65534 with setpriv"),
    .enabled(if: Scratch.available, Scratch.skipReason))
struct EOFResidencyTests {
    static let drop = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    /// Not a page multiple, and more than one of readAll's 1 MiB chunks and of cat's 128 KiB ones.
    static let size = (3 << 20) + 1234

    @Test("through IOContext: the bytes are pread's, with no stall and no blocking read")
    func contextAPI() throws {
        let counters = try runChild("context")
        #expect(counters["equal"] == 1, "\(counters)")
        #expect(counters["submitted"] == 2 && counters["inline"] == 0, "both reads go to the poller: \(counters)")
        #expect(counters["stalls"] == 0, "\(counters)")
        #expect(counters["blockingReads"] == 0, "\(counters)")
        #expect(counters["reaperWaits"] == 0, "getEvents had a timeout: the poller confirmed the pages")
    }

    @Test("through BufferedFile.read and readAll: pread's bytes, no stall, no blocking read, no spinning wait")
    func asyncAPI() throws {
        let counters = try runChild("async")
        #expect(counters["equal"] == 1, "\(counters)")
        // Two reads and readAll's four chunks of the 3 MiB + 1234-byte file: counts are clamped to the file's
        // size at submit, so no chunk lies wholly past the end, and every one goes to the poller.
        #expect(counters["submitted"] == 6 && counters["inline"] == 0, "all go to the poller: \(counters)")
        #expect(counters["stalls"] == 0, "\(counters)")
        #expect(counters["blockingReads"] == 0, "\(counters)")
        // At most one wait per missing page; a poller re-entering a pread that returns at once counts
        // thousands.
        #expect(counters["loneReadWaits", default: .max] <= counters["pagesMissing", default: 0], "\(counters)")
    }

    @Test("baio cat as uid 65534 copies the evicted file byte for byte with no stall and no blocking read")
    func cat() throws {
        let baio = try #require(BaioBinary.path, "the baio binary is missing next to the test bundle")
        let file = try PatternFile(size: Self.size, name: "eof-cat", mode: 0o644)
        // cat takes no configuration, so its reads meet the poller only if the data has not arrived by the
        // end of submit (see EOFResidencyChild.configuration): try a few times for a run where one waited.
        for _ in 0..<10 {
            file.evict()
            let ran = try Spawned.run(Self.drop + [baio, "cat", "--engine-statistics", file.path])
            #expect(ran.status == 0, "\(ran.stderr)")
            #expect(ran.stdout == file.expected(0, file.size), "baio cat's output differs from the file")
            let line = try #require(ran.stderr.split(separator: "\n").first { $0.hasPrefix("baio: statistics: ") })
            let counters = Self.counters(in: line.dropFirst("baio: statistics: ".count))
            #expect(counters["stalls"] == 0, "\(counters)")
            #expect(counters["blockingReads"] == 0, "\(counters)")
            if counters["pagesMissing", default: 0] > 0 { return }
        }
        Issue.record("no run of baio cat waited for pages: every read found them cached")
    }

    /// Runs the child suite below in this test bundle as uid 65534 and returns the counters it printed.
    func runChild(_ mode: String) throws -> [String: Int] {
        let file = try PatternFile(size: Self.size, name: "eof-\(mode)", mode: 0o644)
        file.evict()
        let bundle = try #require(Self.executable(), "cannot find this test bundle's executable")
        let ran = try Spawned.run(
            Self.drop + [bundle, "--testing-library", "swift-testing", "--filter", "EOFResidencyChild"],
            environment: ["\(EOFChild.modeVariable)=\(mode)", "\(EOFChild.fileVariable)=\(file.path)"])
        let output = String(decoding: ran.stdout, as: UTF8.self)
        let line = try #require(
            output.split(separator: "\n").first { $0.hasPrefix(EOFChild.marker) },
            "the child printed no result (status \(ran.status)):\n\(output)\n\(ran.stderr)")
        #expect(ran.status == 0, "the child failed:\n\(output)\n\(ran.stderr)")
        return Self.counters(in: line.dropFirst(EOFChild.marker.count))
    }

    /// `name=value` pairs separated by spaces, as ``EngineStatistics/description`` prints them.
    static func counters(in text: Substring) -> [String: Int] {
        var counters: [String: Int] = [:]
        for pair in text.split(separator: " ") {
            let parts = pair.split(separator: "=")
            if parts.count == 2, let value = Int(parts[1]) { counters[String(parts[0])] = value }
        }
        return counters
    }

    static func executable() -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }
}

/// The reads themselves, run only as ``EOFResidencyTests``' unprivileged child: each starts in the file's
/// last pages and asks for more than is left, on a freshly evicted file, with a fresh engine (a stalled read
/// would lengthen the next one's stall timeout otherwise).
@Suite(
    "Reads across end of file, the child's side",
    .enabled(if: getenv(EOFChild.modeVariable) != nil, "runs only as the child of EOFResidencyTests"))
struct EOFResidencyChild {
    /// No inline copy, so every read goes to the poller whether or not its pages are cached: on Linux
    /// 6.12+ the RWF_NOWAIT miss in submit starts the read, and on this host-cached disk the page often
    /// arrived before that call returned (3 of 6 runs of the context reads here, all 40 tries once), so
    /// the read completed inline and never met the poller's check of the tail page.
    static var configuration: EngineConfiguration {
        var configuration = EngineConfiguration()
        configuration.inlineCopyLimit = 0
        return configuration
    }

    @Test("reads across end of file and prints the engine's counters")
    func run() async throws {
        let mode = String(cString: getenv(EOFChild.modeVariable)!)
        let path = String(cString: try #require(getenv(EOFChild.fileVariable)))
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0, "cannot open \(path)")
        defer { close(fd) }
        var info = stat()
        try #require(fstat(fd, &info) == 0)
        let size = Int(info.st_size)
        // Inside the last page; from the start of the second-last page.
        let reads = [(size - 1000, 64 << 10), ((size / 4096 - 1) * 4096, 1 << 20)]
        var total = EngineStatistics()
        var equal = true
        switch mode {
        case "context":
            for (offset, length) in reads {
                let (bytes, statistics) = try readWithContext(fd, offset: offset, length: length)
                equal = equal && bytes == Self.pread(fd, offset, length)
                total.add(statistics)
            }
        case "async":
            for (offset, length) in reads {
                let (bytes, expected, statistics) = try await Self.withEngine(path: path, evicting: fd) { file in
                    let bytes = try await file.read(fromAbsoluteOffset: Int64(offset), count: length)
                    return (bytes, Self.pread(fd, offset, length))
                }
                equal = equal && bytes == expected
                total.add(statistics)
            }
            // Chunks of 1 MiB from the start; the last asks for more than is left.
            let (all, expected, statistics) = try await Self.withEngine(path: path, evicting: fd) { file in
                (try await file.readAll(maximumSize: 1 << 30), Self.pread(fd, 0, size))
            }
            equal = equal && all == expected
            total.add(statistics)
        default:
            Issue.record("unknown mode \(mode)")
        }
        let line = "\(EOFChild.marker) equal=\(equal ? 1 : 0) \(total)\n"
        _ = line.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) }
    }

    /// One read through its own IOContext, reaped with a timeout: without one, the reaper would claim
    /// the read and wait in a blocking pread, and the poller's residency check would not be exercised.
    func readWithContext(_ fd: Int32, offset: Int, length: Int) throws -> ([UInt8], EngineStatistics) {
        let context = try IOContext(capacity: 4, configuration: Self.configuration)
        defer { context.close() }
        let buffer = ReadBuffer(length)
        PageCache.evict(descriptor: fd)
        try context.submit(ReadRequest(descriptor: fd, offset: Int64(offset), into: buffer.bytes, tag: 7))
        let events = try context.getEvents(minimum: 1, maximum: 1, timeout: .seconds(60))
        let count = try #require(events.first).result.get()
        return (buffer.prefix(count), context.statistics)
    }

    /// Runs `body` with the file opened on a fresh engine, after evicting it; returns what `body` read,
    /// the oracle's bytes and the engine's counters.
    static func withEngine(
        path: String, evicting fd: Int32, _ body: (BufferedFile) async throws -> ([UInt8], [UInt8])
    ) async throws -> ([UInt8], [UInt8], EngineStatistics) {
        let engine = try ReadEngine(configuration: configuration)
        defer { engine.shutdown() }
        let file = try BufferedFile(path: path, engine: engine)
        defer { file.close() }
        PageCache.evict(descriptor: fd)
        let (bytes, expected) = try await body(file)
        return (bytes, expected, engine.statistics)
    }

    static func pread(_ fd: Int32, _ offset: Int, _ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes {
                Glibc.pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done))
            }
            if n <= 0 { break }
            done += n
        }
        return Array(bytes.prefix(done))
    }
}

extension EngineStatistics {
    /// Adds every counter of `other`.
    mutating func add(_ other: EngineStatistics) {
        submitted += other.submitted
        completed += other.completed
        completedInline += other.completedInline
        cancelled += other.cancelled
        pagesFoundResident += other.pagesFoundResident
        pagesFoundMissing += other.pagesFoundMissing
        readaheadBytes += other.readaheadBytes
        nowaitStartedBytes += other.nowaitStartedBytes
        pollPasses += other.pollPasses
        pollProbes += other.pollProbes
        rearms += other.rearms
        stalls += other.stalls
        blockingReads += other.blockingReads
        reaperWaits += other.reaperWaits
        loneReadWaits += other.loneReadWaits
        directReads += other.directReads
        directFallbacks += other.directFallbacks
    }
}

/// A child process with its standard output and error captured separately.
enum Spawned {
    struct Ended {
        var status: Int32
        var stdout: [UInt8]
        var stderr: String
    }

    /// Runs `argv` (argv[0] an absolute path) with `environment` added to this process's, killing it after
    /// 120 s. Output goes through unlinked files, so a child that writes a lot cannot block on a pipe.
    static func run(_ argv: [String], environment: [String] = []) throws -> Ended {
        let out = try unlinkedFile()
        let err = try unlinkedFile()
        defer {
            close(out)
            close(err)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out, 1)
        posix_spawn_file_actions_adddup2(&actions, err, 2)
        var arguments = argv.map { strdup($0) } + [nil]
        defer { arguments.forEach { free($0) } }
        var inherited: [String] = []
        var entry = environ
        while let variable = entry.pointee {
            inherited.append(String(cString: variable))
            entry += 1
        }
        var variables = (inherited + environment).map { strdup($0) } + [nil]
        defer { variables.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, &arguments, &variables)
        try #require(spawned == 0, "cannot start \(argv[0]): \(String(cString: strerror(spawned)))")
        var raw: Int32 = 0
        let deadline = ContinuousClock.now + .seconds(120)
        while waitpid(pid, &raw, WNOHANG) == 0 {
            if ContinuousClock.now > deadline {
                Issue.record("\(argv.joined(separator: " ")) did not end within 120 s")
                kill(pid, SIGKILL)
                waitpid(pid, &raw, 0)
                break
            }
            usleep(5_000)
        }
        let status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        return Ended(status: status, stdout: contents(out), stderr: String(decoding: contents(err), as: UTF8.self))
    }

    private static func unlinkedFile() throws -> Int32 {
        var template = Array("/tmp/baio-eof-output-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        try #require(fd >= 0)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        unlink(template)
        return fd
    }

    private static func contents(_ fd: Int32) -> [UInt8] {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset: off_t = 0
        while true {
            let n = Glibc.pread(fd, &buffer, buffer.count, offset)
            if n <= 0 { break }
            data += buffer.prefix(n)
            offset += off_t(n)
        }
        return data
    }
}
