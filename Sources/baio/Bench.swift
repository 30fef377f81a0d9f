// This file owns `baio bench`: a load generator that reports what fio reports (IOPS, MiB/s, completion and
// submit latency percentiles, CPU per GiB, counting every thread) for the context and the async APIs.
import ArgumentParser
@_spi(Experiments) import BufferedAIO
import Glibc
import Histogram

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read an existing file through the engine and report IOPS, latency percentiles and CPU.",
        discussion: """
            The random pattern walks a permutation of the file's blocks, so no block is read twice until all
            have been; the sequential pattern reads the file once, like cat; the file is opened with POSIX_FADV_RANDOM, as fio does by default. CPU counts every
            thread of the process, the poller included. `--pattern idle` measures an engine with nothing to do.
            `--pattern stream` streams the file once through the async API's chunks(), with --queue-depth
            chunks in the window and a consumer that sleeps --consumer-delay microseconds per chunk, and
            reports the peak resident memory against the window, to show the window bounds memory.

            Examples:
              baio bench /data/f --block-size 4K --queue-depth 32 --seconds 8 --evict
              baio bench /data/f --pattern sequential --block-size 1M --evict
              baio bench /data/f --api async --queue-depth 32 --json
              baio bench /data/f --pattern idle --seconds 2
              baio bench /data/f --pattern stream --block-size 1M --queue-depth 8 --consumer-delay 2000
            """)

    @Argument(help: "The file to read.")
    var file: String

    @Option(help: "random, sequential, idle or stream.")
    var pattern: String = "random"

    @Option(help: "Bytes per read (suffixes K, M, G).", transform: parseSize)
    var blockSize: Int = 4096

    @Option(help: "Reads in flight (context API) or concurrent tasks (async API).")
    var queueDepth: Int = 32

    @Option(help: "How long to run, in seconds.")
    var seconds: Double = 5

    @Flag(help: "Evict the file from the page cache first.")
    var evict = false

    @Option(help: "buffered, direct or automatic.")
    var mode: String = "buffered"

    @Option(help: "context (IOContext, one thread) or async (BufferedFile.read from --queue-depth tasks).")
    var api: String = "context"

    @Option(help: "The poller's shortest sleep, in microseconds (EngineConfiguration.minimumPollInterval).")
    var minimumPollMicroseconds: Int?

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Option(help: "stream: microseconds the consumer sleeps per chunk (a slow consumer).")
    var consumerDelay: Int = 0

    @Flag(
        help:
            "Never let a waiting reaper take a pending read into a blocking pread (EngineConfiguration.reaperWaitsInRead)."
    )
    var noReaperWaits = false

    @Flag(
        help:
            "Never let the poller wait in a pread for a lone pending read (EngineConfiguration.pollerWaitsForLoneRead)."
    )
    var noPollerWaits = false

    func validate() throws {
        guard ["random", "sequential", "idle", "stream"].contains(pattern) else {
            throw ValidationError("--pattern must be random, sequential, idle or stream, not '\(pattern)'")
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

    var engineConfiguration: EngineConfiguration {
        var configuration = EngineConfiguration()
        if let minimumPollMicroseconds { configuration.minimumPollInterval = .microseconds(minimumPollMicroseconds) }
        configuration.reaperWaitsInRead = !noReaperWaits
        configuration.pollerWaitsForLoneRead = !noPollerWaits
        return configuration
    }

    var readMode: ReadMode { mode == "direct" ? .direct : mode == "automatic" ? .automatic : .buffered }

    /// What one run measured.
    struct Result {
        var reads = 0
        var bytes = 0
        var wall = 0.0
        var cpu = 0.0
        var completion = Histogram<UInt64>(
            highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var submit = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var statistics = EngineStatistics()
        /// stream: the most chunks in flight seen, and resident memory before and at the peak, in bytes.
        var mostInFlight = 0
        var residentBefore = 0
        var residentPeak = 0
    }

    func run() async throws {
        let opened = try BufferedFile(path: file, accessPattern: pattern == "random" ? .random : .normal)
        defer { opened.close() }
        guard let fd = opened.descriptor else { return }
        var info = stat()
        fstat(fd, &info)
        let blocks = Int(info.st_size) / blockSize
        guard blocks > 0 else { throw ValidationError("'\(file)' is smaller than one block (\(blockSize) bytes)") }
        if evict { PageCache.evict(descriptor: fd) }

        var result: Result
        if pattern == "idle" {
            result = try idle()
        } else if pattern == "stream" {
            result = try await stream(opened)
        } else if api == "async" {
            result = try await runAsync(opened, blocks: blocks)
        } else {
            result = try runContext(opened, blocks: blocks)
        }
        report(&result)
    }

    /// The order of the reads, fixed before the timed loop: options are read through ArgumentParser's property
    /// wrappers (a generic metadata lookup per access), which showed as 15 % of a cached QD1 profile.
    struct Walk: Sendable {
        let blocks: Int
        let sequential: Bool
        let stride: UInt64

        init(blocks: Int, sequential: Bool) {
            self.blocks = blocks
            self.sequential = sequential
            self.stride = UInt64(Bench.coprimeStride(blocks))
        }

        /// The block the `n`th read takes: a permutation walk for random, in order for sequential.
        func block(_ n: Int) -> Int {
            sequential ? n % blocks : Int((UInt64(n) &* stride) % UInt64(blocks))
        }

        /// A sequential run reads the file once, as cat would; a random one runs until the deadline.
        func done(_ n: Int) -> Bool { sequential && n >= blocks }
    }

    func runContext(_ opened: BufferedFile, blocks: Int) throws -> Result {
        let (walk, blockSize, queueDepth, mode) = (
            Walk(blocks: blocks, sequential: pattern == "sequential"), blockSize, queueDepth, readMode
        )
        let context = try IOContext(capacity: queueDepth, configuration: engineConfiguration)
        defer { context.close() }
        let buffers = (0..<queueDepth).map { _ in
            UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
        }
        defer { buffers.forEach { $0.deallocate() } }
        var started = [UInt64](repeating: 0, count: queueDepth)
        var result = Result()
        var next = 0
        func submit(_ slot: Int) throws {
            let request = ReadRequest(
                .file(opened), offset: Int64(walk.block(next) * blockSize), into: buffers[slot], tag: UInt64(slot),
                mode: mode)
            next += 1
            let start = monotonicNanoseconds()
            try context.submit(request)
            started[slot] = start
            _ = result.submit.record(monotonicNanoseconds() &- start)
        }

        let cpuStart = Self.cpuSeconds()
        let start = ContinuousClock.now
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        let first = walk.sequential ? min(queueDepth, blocks) : queueDepth
        for slot in 0..<first { try submit(slot) }
        var outstanding = first
        var events: [IOEvent] = []
        events.reserveCapacity(queueDepth)
        while outstanding > 0 {
            try context.getEvents(minimum: 1, maximum: queueDepth, into: &events)
            for event in events {
                outstanding -= 1
                let slot = Int(event.tag)
                let now = monotonicNanoseconds()
                _ = result.completion.record(now &- started[slot])
                result.bytes += try event.get()
                result.reads += 1
                if now < deadline && !walk.done(next) {
                    try submit(slot)
                    outstanding += 1
                }
            }
        }
        result.wall = secondsOf(ContinuousClock.now - start)
        result.cpu = Self.cpuSeconds() - cpuStart
        result.statistics = context.statistics
        return result
    }

    /// `--queue-depth` tasks, each awaiting one read at a time, on disjoint parts of the same walk.
    func runAsync(_ opened: BufferedFile, blocks: Int) async throws -> Result {
        let engine = try ReadEngine(configuration: engineConfiguration)
        defer { engine.shutdown() }
        let file = try BufferedFile(
            path: self.file, accessPattern: pattern == "random" ? .random : .normal, engine: engine)
        defer { file.close() }
        let cpuStart = Self.cpuSeconds()
        let start = ContinuousClock.now
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        let options = ReadOptions(mode: readMode)
        let (blockSize, depth) = (self.blockSize, self.queueDepth)
        let walk = Walk(blocks: blocks, sequential: pattern == "sequential")
        var result = try await withThrowingTaskGroup(of: Result.self) { group in
            for task in 0..<depth {
                group.addTask {
                    var partial = Result()
                    var n = task
                    var begin = monotonicNanoseconds()
                    while begin < deadline && !walk.done(n) {
                        let data = try await file.read(
                            fromAbsoluteOffset: Int64(walk.block(n) * blockSize), count: blockSize, options: options)
                        let end = monotonicNanoseconds()
                        _ = partial.completion.record(end &- begin)
                        begin = end
                        partial.reads += 1
                        partial.bytes += data.count
                        n += depth
                    }
                    return partial
                }
            }
            var total = Result()
            for try await partial in group {
                total.reads += partial.reads
                total.bytes += partial.bytes
                total.completion.add(partial.completion)
            }
            return total
        }
        result.wall = secondsOf(ContinuousClock.now - start)
        result.cpu = Self.cpuSeconds() - cpuStart
        result.statistics = engine.statistics
        return result
    }

    /// The whole file through chunks() once, with a consumer slower than the reads when --consumer-delay is set.
    func stream(_ opened: BufferedFile) async throws -> Result {
        var result = Result()
        result.residentBefore = Self.peakResidentBytes()
        let cpuStart = Self.cpuSeconds()
        let start = ContinuousClock.now
        let chunks = opened.chunks(chunkLength: blockSize, options: ReadOptions(mode: readMode, window: queueDepth))
        let iterator = chunks.makeAsyncIterator()
        while let chunk = try await iterator.next() {
            result.mostInFlight = max(result.mostInFlight, iterator.readsInFlight)
            result.bytes += chunk.count
            result.reads += 1
            if consumerDelay > 0 { try await Task.sleep(for: .microseconds(consumerDelay)) }
        }
        result.wall = secondsOf(ContinuousClock.now - start)
        result.cpu = Self.cpuSeconds() - cpuStart
        result.residentPeak = Self.peakResidentBytes()
        result.statistics = try opened.engine.statistics
        return result
    }

    /// An engine with nothing to do: its poller should sleep and use no CPU.
    func idle() throws -> Result {
        let context = try IOContext(capacity: queueDepth, configuration: engineConfiguration)
        defer { context.close() }
        var result = Result()
        let cpuStart = Self.cpuSeconds()
        let start = ContinuousClock.now
        _ = try context.getEvents(minimum: 1, maximum: 1, timeout: .milliseconds(Int(seconds * 1000)))
        result.wall = secondsOf(ContinuousClock.now - start)
        result.cpu = Self.cpuSeconds() - cpuStart
        result.statistics = context.statistics
        return result
    }

    func report(_ result: inout Result) {
        let iops = Double(result.reads) / max(result.wall, 1e-9)
        let mibs = Double(result.bytes) / max(result.wall, 1e-9) / 1_048_576
        let cpuPercent = result.cpu / max(result.wall, 1e-9) * 100
        let cpuPerGiB = result.bytes > 0 ? result.cpu / (Double(result.bytes) / 1_073_741_824) : 0
        let cpuPerRead = result.reads > 0 ? result.cpu / Double(result.reads) * 1e6 : 0
        func us(_ histogram: Histogram<UInt64>, _ percentile: Double) -> Double {
            histogram.totalCount == 0 ? 0 : Double(histogram.valueAtPercentile(percentile)) / 1000
        }
        if json {
            let fields: [(String, String)] = [
                ("api", "\"\(api)\""), ("pattern", "\"\(pattern)\""), ("mode", "\"\(mode)\""),
                ("block_size", "\(blockSize)"), ("queue_depth", "\(queueDepth)"), ("reads", "\(result.reads)"),
                ("seconds", formatted(result.wall, places: 3)), ("iops", formatted(iops, places: 1)),
                ("mib_per_s", formatted(mibs, places: 1)), ("cpu_percent", formatted(cpuPercent, places: 1)),
                ("cpu_us_per_read", formatted(cpuPerRead, places: 2)),
                ("cpu_s_per_gib", formatted(cpuPerGiB, places: 3)),
                ("clat_p50_us", formatted(us(result.completion, 50), places: 1)),
                ("clat_p99_us", formatted(us(result.completion, 99), places: 1)),
                ("clat_p999_us", formatted(us(result.completion, 99.9), places: 1)),
                ("slat_p50_us", formatted(us(result.submit, 50), places: 2)),
                ("slat_p99_us", formatted(us(result.submit, 99), places: 2)),
                ("completed_inline", "\(result.statistics.completedInline)"),
                ("most_in_flight", "\(result.mostInFlight)"), ("window_bytes", "\(queueDepth * blockSize)"),
                ("peak_rss_before_bytes", "\(result.residentBefore)"), ("peak_rss_bytes", "\(result.residentPeak)"),
                ("poll_passes", "\(result.statistics.pollPasses)"),
            ]
            print("{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
            return
        }
        print("reads: \(result.reads) in \(formatted(result.wall)) s")
        print("IOPS: \(Int(iops))")
        print("MiB/s: \(formatted(mibs))")
        print(
            "completion latency us: p50 \(formatted(us(result.completion, 50))) p99 \(formatted(us(result.completion, 99))) "
                + "p99.9 \(formatted(us(result.completion, 99.9)))")
        if result.submit.totalCount > 0 {
            print(
                "submit latency us: p50 \(formatted(us(result.submit, 50), places: 2)) p99 \(formatted(us(result.submit, 99), places: 2))"
            )
        }
        print(
            "CPU: \(formatted(cpuPercent))% of one core, \(formatted(cpuPerRead)) us per read, "
                + "\(formatted(cpuPerGiB, places: 3)) s per GiB")
        if pattern == "stream" {
            print(
                "memory: peak RSS \(result.residentPeak >> 20) MiB (\(result.residentBefore >> 20) MiB before streaming), "
                    + "window \(queueDepth) x \(blockSize) bytes, at most \(result.mostInFlight) reads in flight")
        }
        print("statistics: \(result.statistics)")
    }

    static func coprimeStride(_ n: Int) -> Int {
        guard n > 2 else { return 1 }
        var stride = Int(Double(n) * 0.618_033_988_7) | 1
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        while gcd(stride, n) != 1 { stride += 2 }
        return stride % n
    }

    /// The process's peak resident set (ru_maxrss), in bytes.
    static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return usage.ru_maxrss * 1024
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
