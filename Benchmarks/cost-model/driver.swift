// cost-driver: the loops of `baio bench` (random 4 KiB reads of a permutation of the file's blocks, FADV_RANDOM)
// through the context API or the async API, with a synchronous main. `baio` itself cannot run under valgrind
// 3.19: its async main parks the main thread in libdispatch's sigsuspend, where valgrind crashes. Every 64th
// read is checked against pread. Built by Benchmarks/cost-model/run from the release build's objects.
//   cost-driver FILE context|async QD SECONDS   -> reads=N iops=X cpu_us_per_read=Y mismatches=0 waited=W ...
// (waited: reads that went to the poller, i.e. not completed by the submit's own RWF_NOWAIT read)
import BufferedAIO
import Dispatch
import Glibc

func monotonic() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(
        usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

let blockSize = 4096

/// Bench.Walk: block n of a permutation (a stride coprime with the number of blocks).
struct Walk: Sendable {
    let blocks: Int
    let stride: UInt64
    init(blocks: Int) {
        self.blocks = blocks
        var s = Int(Double(blocks) * 0.618_033_988_7) | 1
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        while gcd(s, blocks) != 1 { s += 2 }
        stride = UInt64(s % blocks)
    }
    /// Where in the permutation this run starts: random, so repeated runs do not read the same blocks (the
    /// host caches the virtual disk, and a block read by the previous run comes back in microseconds).
    let start = UInt64(getenv("SEED").flatMap { UInt64(String(cString: $0)) } ?? UInt64.random(in: 0..<(1 << 40)))
    func offset(_ n: Int) -> Int64 { Int64(((UInt64(n) &+ start) &* stride) % UInt64(blocks)) * Int64(blockSize) }
}

/// Whether the bytes at `offset` are the file's, by pread (the oracle).
func matches(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ offset: Int64) -> Bool {
    var check = [UInt8](repeating: 0, count: blockSize)
    let n = check.withUnsafeMutableBytes { pread(fd, $0.baseAddress, blockSize, off_t(offset)) }
    return n == bytes.count && check.withUnsafeBytes { memcmp($0.baseAddress!, bytes.baseAddress!, blockSize) == 0 }
}

/// The engine's counters at the end of the run (reads that waited for the poller, poll passes, ...).
nonisolated(unsafe) var statistics = EngineStatistics()

func runContext(_ file: BufferedFile, _ fd: Int32, _ walk: Walk, depth: Int, deadline: Double) throws -> (Int, Int) {
    let context = try IOContext(capacity: depth)
    defer {
        statistics = context.statistics
        context.close()
    }
    let buffers = (0..<depth).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096) }
    defer { buffers.forEach { $0.deallocate() } }
    var offsets = [Int64](repeating: 0, count: depth)
    var next = 0, reads = 0, mismatches = 0, outstanding = 0
    func submit(_ slot: Int) throws {
        offsets[slot] = walk.offset(next)
        next += 1
        try context.submit(ReadRequest(.file(file), offset: offsets[slot], into: buffers[slot], tag: UInt64(slot)))
        outstanding += 1
    }
    for slot in 0..<depth { try submit(slot) }
    var events: [IOEvent] = []
    events.reserveCapacity(depth)
    while outstanding > 0 {
        try context.getEvents(minimum: 1, maximum: depth, into: &events)
        let stop = monotonic() >= deadline
        for event in events {
            outstanding -= 1
            let slot = Int(event.tag)
            guard try event.get() == blockSize else {
                mismatches += 1
                continue
            }
            if reads % 64 == 0 && !matches(fd, UnsafeRawBufferPointer(buffers[slot]), offsets[slot]) { mismatches += 1 }
            reads += 1
            if !stop { try submit(slot) }
        }
    }
    return (reads, mismatches)
}

final class Totals: @unchecked Sendable {
    var reads = 0, mismatches = 0
    let lock = NSLockLike()
}

/// A pthread mutex, so the driver needs no Foundation.
final class NSLockLike: @unchecked Sendable {
    var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func with(_ body: () -> Void) {
        pthread_mutex_lock(&mutex)
        body()
        pthread_mutex_unlock(&mutex)
    }
}

func runAsync(_ path: String, _ fd: Int32, _ walk: Walk, depth: Int, deadline: Double) throws -> (Int, Int) {
    let engine = try ReadEngine()
    defer {
        statistics = engine.statistics
        engine.shutdown()
    }
    let file = try BufferedFile(path: path, accessPattern: .random, engine: engine)
    defer { file.close() }
    let totals = Totals()
    let done = DispatchSemaphore(value: 0)
    for task in 0..<depth {
        Task {
            var n = task, reads = 0, mismatches = 0
            while monotonic() < deadline {
                let offset = walk.offset(n)
                do {
                    let data = try await file.read(fromAbsoluteOffset: offset, count: blockSize)
                    if data.count != blockSize { mismatches += 1 }
                    if reads % 64 == 0 && !data.withUnsafeBytes({ matches(fd, $0, offset) }) { mismatches += 1 }
                } catch {
                    mismatches += 1
                }
                reads += 1
                n += depth
            }
            totals.lock.with {
                totals.reads += reads
                totals.mismatches += mismatches
            }
            done.signal()
        }
    }
    for _ in 0..<depth { done.wait() }
    return (totals.reads, totals.mismatches)
}

let arguments = CommandLine.arguments
guard arguments.count == 5, let depth = Int(arguments[3]), let seconds = Double(arguments[4]), depth > 0 else {
    fputs("usage: cost-driver FILE context|async QD SECONDS\n", stderr)
    exit(2)
}
let path = arguments[1]
let file = try BufferedFile(path: path, accessPattern: .random)
let fd = file.descriptor!
var info = stat()
fstat(fd, &info)
let walk = Walk(blocks: Int(info.st_size) / blockSize)
let (cpu0, t0) = (cpuSeconds(), monotonic())
let (reads, mismatches) =
    arguments[2] == "async"
    ? try runAsync(path, fd, walk, depth: depth, deadline: t0 + seconds)
    : try runContext(file, fd, walk, depth: depth, deadline: t0 + seconds)
let (cpu, elapsed) = (cpuSeconds() - cpu0, monotonic() - t0)
file.close()
print(
    "reads=\(reads) iops=\(Int(Double(reads) / elapsed)) cpu_us_per_read=\((cpu / Double(max(reads, 1)) * 1e8).rounded() / 100)"
        + " mismatches=\(mismatches) waited=\(statistics.submitted - statistics.completedInline)"
        + " poll_passes=\(statistics.pollPasses) reaper_waits=\(statistics.reaperWaits) lone_waits=\(statistics.loneReadWaits)"
)
exit(mismatches == 0 ? 0 : 1)
