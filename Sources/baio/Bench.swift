// This file owns `baio bench`: a load generator for the context API, reporting IOPS, throughput and the
// CPU the whole process (poller included) spent per read.
import ArgumentParser
import BufferedAIO
import Glibc

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Random or sequential reads of an existing file through an IOContext, with IOPS and CPU.",
        discussion: """
            Examples:
              baio bench /data/f --block-size 4K --queue-depth 32 --seconds 8 --evict
              baio bench /data/f --pattern sequential --block-size 1M
            """)

    @Argument(help: "The file to read.")
    var file: String

    @Option(help: "random or sequential.")
    var pattern: String = "random"

    @Option(help: "Bytes per read (suffixes K, M, G).", transform: parseSize)
    var blockSize: Int = 4096

    @Option(help: "Reads in flight.")
    var queueDepth: Int = 32

    @Option(help: "How long to run.")
    var seconds: Double = 5

    @Flag(help: "Evict the file from the page cache first.")
    var evict = false

    @Option(help: "buffered, direct or automatic.")
    var mode: String = "buffered"

    @Option(help: "context (IOContext, one thread) or async (BufferedFile.read from --queue-depth tasks).")
    var api: String = "context"

    @Option(help: "The poller's shortest sleep, in microseconds (EngineConfiguration.minimumPollInterval).")
    var minimumPollMicroseconds: Int?

    var configuration: EngineConfiguration {
        var configuration = EngineConfiguration()
        if let minimumPollMicroseconds { configuration.minimumPollInterval = .microseconds(minimumPollMicroseconds) }
        return configuration
    }

    func validate() throws {
        guard ["random", "sequential"].contains(pattern) else {
            throw ValidationError("--pattern must be random or sequential, not '\(pattern)'")
        }
        guard ["buffered", "direct", "automatic"].contains(mode) else {
            throw ValidationError("--mode must be buffered, direct or automatic, not '\(mode)'")
        }
        guard ["context", "async"].contains(api) else {
            throw ValidationError("--api must be context or async, not '\(api)'")
        }
        guard blockSize > 0, queueDepth > 0, seconds > 0 else {
            throw ValidationError("--block-size, --queue-depth and --seconds must be positive")
        }
    }

    func run() async throws {
        if api == "async" {
            try await runAsync()
            return
        }
        // Like fio's default fadvise_hint: random reads tell the kernel not to read ahead.
        let opened = try BufferedFile(path: file, accessPattern: pattern == "random" ? .random : .normal)
        defer { opened.close() }
        guard let fd = opened.descriptor else { return }
        var info = stat()
        fstat(fd, &info)
        let blocks = Int(info.st_size) / blockSize
        guard blocks > 0 else { throw ValidationError("'\(file)' is smaller than one block") }
        if evict { PageCache.evict(descriptor: fd) }
        let readMode: ReadMode = mode == "direct" ? .direct : mode == "automatic" ? .automatic : .buffered

        let context = try IOContext(capacity: queueDepth, configuration: configuration)
        defer { context.close() }
        let buffers = (0..<queueDepth).map { _ in
            UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
        }
        defer { buffers.forEach { $0.deallocate() } }
        // A seeded permutation walk, so no block is read twice until every block has been.
        var state: UInt64 = 0x9e37_79b9_7f4a_7c15
        let stride = Self.coprimeStride(blocks)
        var cursor = Int(state % UInt64(blocks))
        func nextBlock() -> Int {
            if pattern == "sequential" {
                defer { cursor = (cursor + 1) % blocks }
                return cursor
            }
            cursor = (cursor + stride) % blocks
            return cursor
        }
        state = 0

        let cpuStart = Self.cpuSeconds()
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int(seconds * 1000))
        if pattern == "sequential" { cursor = 0 }
        for slot in 0..<queueDepth {
            try context.submit(
                ReadRequest(
                    .file(opened), offset: Int64(nextBlock() * blockSize), into: buffers[slot], tag: UInt64(slot),
                    mode: readMode))
        }
        var reads = 0
        var bytes = 0
        var outstanding = queueDepth
        while outstanding > 0 {
            for event in try context.getEvents(minimum: 1, maximum: queueDepth) {
                outstanding -= 1
                let count = try event.get()
                reads += 1
                bytes += count
                if ContinuousClock.now < deadline {
                    let slot = Int(event.tag)
                    try context.submit(
                        ReadRequest(
                            .file(opened), offset: Int64(nextBlock() * blockSize), into: buffers[slot],
                            tag: UInt64(slot), mode: readMode))
                    outstanding += 1
                }
            }
        }
        let elapsed = ContinuousClock.now - start
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let cpu = Self.cpuSeconds() - cpuStart
        print("reads: \(reads) in \(formatted(wall)) s")
        print("IOPS: \(Int(Double(reads) / wall))")
        print("MiB/s: \(formatted(Double(bytes) / wall / 1_048_576))")
        print("CPU: \(formatted(cpu / wall * 100))% of one core, \(formatted(cpu / Double(max(reads, 1)) * 1e6)) us per read")
        print("statistics: \(context.statistics)")
    }

    /// `--queue-depth` tasks, each awaiting one read at a time, on disjoint strides of the same walk.
    func runAsync() async throws {
        let engine = try ReadEngine(configuration: configuration)
        defer { engine.shutdown() }
        let opened = try BufferedFile(
            path: file, accessPattern: pattern == "random" ? .random : .normal, engine: engine)
        defer { opened.close() }
        guard let fd = opened.descriptor else { return }
        var info = stat()
        fstat(fd, &info)
        let blocks = Int(info.st_size) / blockSize
        guard blocks > 0 else { throw ValidationError("'\(file)' is smaller than one block") }
        if evict { PageCache.evict(descriptor: fd) }
        let readMode: ReadMode = mode == "direct" ? .direct : mode == "automatic" ? .automatic : .buffered
        let stride = pattern == "sequential" ? 1 : Self.coprimeStride(blocks)
        let cpuStart = Self.cpuSeconds()
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int(seconds * 1000))
        let (reads, bytes) = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for task in 0..<queueDepth {
                group.addTask { [blockSize, queueDepth] in
                    var reads = 0
                    var bytes = 0
                    var index = task
                    while ContinuousClock.now < deadline {
                        let block = (index * stride) % blocks
                        let data = try await opened.read(
                            fromAbsoluteOffset: Int64(block * blockSize), count: blockSize,
                            options: ReadOptions(mode: readMode))
                        reads += 1
                        bytes += data.count
                        index += queueDepth
                    }
                    return (reads, bytes)
                }
            }
            var total = (0, 0)
            for try await (r, b) in group { total = (total.0 + r, total.1 + b) }
            return total
        }
        let elapsed = ContinuousClock.now - start
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let cpu = Self.cpuSeconds() - cpuStart
        print("reads: \(reads) in \(formatted(wall)) s")
        print("IOPS: \(Int(Double(reads) / wall))")
        print("MiB/s: \(formatted(Double(bytes) / wall / 1_048_576))")
        print("CPU: \(formatted(cpu / wall * 100))% of one core, \(formatted(cpu / Double(max(reads, 1)) * 1e6)) us per read")
        print("statistics: \(engine.statistics)")
    }

    static func coprimeStride(_ n: Int) -> Int {
        var stride = Int(Double(n) * 0.618_033_988_7) | 1
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        while gcd(stride, n) != 1 { stride += 2 }
        return max(1, stride % max(n, 1))
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
