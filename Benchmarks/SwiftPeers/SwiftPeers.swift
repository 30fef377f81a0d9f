// The Swift peers of the async API, for Benchmarks/compare: SwiftNIO's NIOFileSystem and NonBlockingFileIO
// reading the same files in the same patterns as `baio bench --api async`, and printing the same JSON fields.
//
// Usage: swift-peers nio-fs|nbfio random|sequential FILE [tasks=32] [seconds=5] [block=4096] [pool=0]
// pool=0 means the API's default pool (FileSystem.shared, or NonBlockingFileIO.defaultThreadPoolSize).
// Every descriptor gets POSIX_FADV_RANDOM for random runs, as fio and baio bench do, so the device reads
// what was asked and no more.
import Glibc
import NIOCore
import NIOFileSystem
import NIOPosix

func fail(_ message: String, status: Int32) -> Never {
    let line = "swift-peers: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(status)
}

struct Options {
    var api = "nio-fs"
    var pattern = "random"
    var path = ""
    var tasks = 32
    var seconds = 5.0
    var block = 4096
    var pool = 0

    init(_ arguments: [String]) {
        guard arguments.count >= 3 else {
            fail(
                "usage: swift-peers nio-fs|nbfio random|sequential FILE [tasks=N] [seconds=S] [block=B] [pool=N]",
                status: 2)
        }
        (api, pattern, path) = (arguments[0], arguments[1], arguments[2])
        for argument in arguments.dropFirst(3) {
            let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let value = Double(parts[1]) else { fail("bad argument \(argument)", status: 2) }
            switch parts[0] {
            case "tasks": tasks = Int(value)
            case "seconds": seconds = value
            case "block": block = Int(value)
            case "pool": pool = Int(value)
            default: fail("unknown argument \(argument)", status: 2)
            }
        }
    }
}

/// The same walk as `baio bench`: a stride coprime with the block count visits every block once.
func block(_ n: Int, of blocks: Int, sequential: Bool) -> Int {
    guard !sequential, blocks > 2 else { return n % max(blocks, 1) }
    var stride = Int(Double(blocks) * 0.618_033_988_7) | 1
    func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
    while gcd(stride, blocks) != 1 { stride += 2 }
    return Int((UInt64(n) &* UInt64(stride % blocks)) % UInt64(blocks))
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

func threadCount() -> Int {
    guard let directory = opendir("/proc/self/task") else { return 0 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        if entry.pointee.d_name.0 != UInt8(ascii: ".") { count += 1 }
    }
    return count
}

/// Runs `tasks` child tasks; task `t` calls `read(t, offset)` for its share of the walk until the deadline.
func drive(
    _ options: Options, blocks: Int, read: @escaping @Sendable (Int, Int64) async throws -> Int
) async throws
    -> (reads: Int, bytes: Int)
{
    let deadline = ContinuousClock.now + .milliseconds(Int(options.seconds * 1000))
    let sequential = options.pattern == "sequential"
    let (tasks, blockSize) = (options.tasks, options.block)
    return try await withThrowingTaskGroup(of: (Int, Int).self) { group in
        for task in 0..<tasks {
            group.addTask {
                var (reads, bytes, n) = (0, 0, task)
                while ContinuousClock.now < deadline && !(sequential && n >= blocks) {
                    bytes += try await read(task, Int64(block(n, of: blocks, sequential: sequential) * blockSize))
                    reads += 1
                    n += tasks
                }
                return (reads, bytes)
            }
        }
        var total = (reads: 0, bytes: 0)
        for try await (reads, bytes) in group {
            total.reads += reads
            total.bytes += bytes
        }
        return total
    }
}

func adviseRandom(_ descriptor: CInt, _ options: Options) {
    if options.pattern == "random" { _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_RANDOM) }
}

/// NIOFileSystem: one shared ReadFileHandle, readChunk from every task (the handle allows concurrent use).
func runNIOFileSystem(_ options: Options, blocks: Int) async throws -> (reads: Int, bytes: Int) {
    var pool: NIOThreadPool?
    let fileSystem: FileSystem
    if options.pool > 0 {
        let started = NIOThreadPool(numberOfThreads: options.pool)
        started.start()
        pool = started
        fileSystem = FileSystem(threadPool: started)
    } else {
        fileSystem = .shared
    }
    let blockSize = Int64(options.block)
    let total = try await fileSystem.withFileHandle(forReadingAt: FilePath(options.path)) { handle in
        try await handle.withUnsafeDescriptor { adviseRandom($0.rawValue, options) }
        return try await drive(options, blocks: blocks) { _, offset in
            try await handle.readChunk(fromAbsoluteOffset: offset, length: .bytes(blockSize)).readableBytes
        }
    }
    try await pool?.shutdownGracefully()
    return total
}

/// NonBlockingFileIO: a handle per task, because NIOFileHandle refuses concurrent access (EBUSY).
func runNonBlockingFileIO(_ options: Options, blocks: Int) async throws -> (reads: Int, bytes: Int) {
    let pool = NIOThreadPool(numberOfThreads: options.pool > 0 ? options.pool : NonBlockingFileIO.defaultThreadPoolSize)
    pool.start()
    let fileIO = NonBlockingFileIO(threadPool: pool)
    let handles = try (0..<options.tasks).map { _ in try NIOFileHandle(_deprecatedPath: options.path) }
    defer { handles.forEach { try? $0.close() } }
    for handle in handles { try handle.withUnsafeFileDescriptor { adviseRandom($0, options) } }
    let allocator = ByteBufferAllocator()
    let blockSize = options.block
    let total = try await drive(options, blocks: blocks) { task, offset in
        try await fileIO.read(fileHandle: handles[task], fromOffset: offset, byteCount: blockSize, allocator: allocator)
            .readableBytes
    }
    try await pool.shutdownGracefully()
    return total
}

let options = Options(Array(CommandLine.arguments.dropFirst()))
var info = stat()
guard stat(options.path, &info) == 0 else {
    fail("\(options.path): \(String(cString: strerror(errno)))", status: 1)
}
let blocks = Int(info.st_size) / options.block
let cpuStart = cpuSeconds()
let start = ContinuousClock.now
let (reads, bytes) =
    options.api == "nbfio"
    ? try await runNonBlockingFileIO(options, blocks: blocks) : try await runNIOFileSystem(options, blocks: blocks)
let elapsed = ContinuousClock.now - start
let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let cpu = cpuSeconds() - cpuStart
print(
    "{\"api\": \"\(options.api)\", \"pattern\": \"\(options.pattern)\", \"tasks\": \(options.tasks), "
        + "\"pool\": \(options.pool), \"reads\": \(reads), \"seconds\": \(wall), \"iops\": \(Double(reads) / wall), "
        + "\"mib_per_s\": \(Double(bytes) / wall / 1_048_576), \"cpu_percent\": \(cpu / wall * 100), "
        + "\"cpu_us_per_read\": \(cpu / Double(max(reads, 1)) * 1e6), \"threads\": \(threadCount())}")
