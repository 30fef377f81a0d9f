// The soak (issue 13, docs/robustness.md): the engine for minutes under mixed reads through IOContext and the
// async API, cancellations, contexts and files closed with reads in flight, and eviction pressure. Built and
// run by scripts/soak, which runs Soak/libbaio_soak.c beside it under libbaio. Every byte read is checked
// against the files' pattern; a read that takes over 60 s is a hang. Prints one summary line and exits 1 if
// anything was wrong, hung, failed unexpectedly, or if descriptors, threads or memory grew.
//
//   soak DIRECTORY SECONDS
@_spi(Experiments) import BufferedAIO
import Glibc
import Synchronization

let fileCount = 8
let fileSize = 16 << 20

/// The byte at `offset` of file `index`: the same function as libbaio_soak.c's, so files need no oracle.
@inline(__always) func patternByte(_ index: Int, _ offset: Int) -> UInt8 {
    var z = UInt64(offset >> 3) &+ UInt64(index) &* 0x9e37_79b9_7f4a_7c15
    z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
    z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
    z ^= z >> 31
    return UInt8(truncatingIfNeeded: z >> ((offset & 7) * 8))
}

func checked(_ bytes: UnsafeRawBufferPointer, file: Int, offset: Int) -> Bool {
    for i in 0..<bytes.count where bytes[i] != patternByte(file, offset + i) { return false }
    return true
}

/// What every worker adds up.
final class Tally: Sendable {
    let reads = Atomic<Int>(0), bytes = Atomic<Int>(0), wrong = Atomic<Int>(0), hangs = Atomic<Int>(0)
    let errors = Atomic<Int>(0), cancelled = Atomic<Int>(0), closedInFlight = Atomic<Int>(0)
    let evictions = Atomic<Int>(0)
    let lastError = Mutex<String>("")

    func fail(_ message: String) {
        errors.bump(1)
        lastError.withLock { $0 = message }
    }
}

extension Atomic<Int> {
    func bump(_ value: Int) { _ = wrappingAdd(value, ordering: .relaxed) }
    var value: Int { load(ordering: .relaxed) }
}

func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// IOContext: batches of random reads in three modes, some cancelled; every 50th batch the context is closed
/// with its reads in flight.
func contextWorker(_ paths: [String], until end: Double, _ tally: Tally, seed: UInt64) {
    var random = SplitMix(seed)
    let fds = paths.map { open($0, O_RDONLY | O_CLOEXEC) }
    defer { fds.forEach { close($0) } }
    var batch = 0
    while now() < end {
        var configuration = EngineConfiguration()
        if getenv("SOAK_NO_REAPER_WAIT") != nil { configuration.reaperWaitsInRead = false }
        guard let context = try? IOContext(capacity: 32, configuration: configuration) else {
            tally.fail("IOContext init")
            return
        }
        for _ in 0..<50 where now() < end {
            batch += 1
            let count = getenv("SOAK_NO_CTX") != nil ? 0 : 1 + random.below(16)
            if count == 0 { usleep(10000); continue }
            var reads: [(file: Int, offset: Int, buffer: UnsafeMutableRawBufferPointer)] = []
            var requests: [ReadRequest] = []
            for tag in 0..<count {
                let file = random.below(fileCount)
                let length = random.below(4) == 0 ? 1 + random.below(1 << 20) : 1 + random.below(64 << 10)
                let offset = random.below(fileSize + 4096)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 4096)
                reads.append((file, offset, buffer))
                var mode: ReadMode = [.buffered, .buffered, .direct, .automatic][random.below(4)]
                if getenv("SOAK_NO_DIRECT") != nil { mode = .buffered }
                requests.append(ReadRequest(descriptor: fds[file], offset: Int64(offset), into: buffer, tag: UInt64(tag), mode: mode))
            }
            guard (try? context.submit(requests)) == count else { tally.fail("submit"); break }
            var cancelledTag: UInt64? = nil
            if random.below(4) == 0 && getenv("SOAK_NO_CANCEL") == nil {
                let tag = UInt64(random.below(count))
                if context.cancel(tag: tag) { cancelledTag = tag }
            }
            var done = 0
            var seen = Set<UInt64>()
            var firstResults: [UInt64: String] = [:]
            while done < count {
                guard let events = try? context.getEvents(minimum: 1, maximum: count, timeout: .seconds(60)) else {
                    tally.fail("getEvents")
                    break
                }
                if events.isEmpty {
                    tally.hangs.bump(1)
                    break
                }
                for event in events {
                    done += 1
                    if !seen.insert(event.tag).inserted {
                        tally.fail("a second event for tag \(event.tag): \(event.result)")
                        print("soak: duplicate event for tag \(event.tag) of \(count): \(event.result), first \(firstResults[event.tag] ?? "?"), cancelled tag \(cancelledTag.map(String.init) ?? "none"), batch \(batch), \(context.statistics)")
                        fflush(stdout)
                        exit(3)
                    }
                    firstResults[event.tag] = "\(event.result)"
                    let read = reads[Int(event.tag)]
                    switch event.result {
                    case .success(let n):
                        tally.reads.bump(1)
                        tally.bytes.bump(n)
                        let expected = max(0, min(read.buffer.count, fileSize - read.offset))
                        if n != expected || !checked(UnsafeRawBufferPointer(rebasing: read.buffer[..<n]), file: read.file, offset: read.offset) {
                            tally.wrong.bump(1)
                        }
                    case .failure(let error) where error.code == .cancelled: tally.cancelled.bump(1)
                    case .failure(let error): tally.fail("IOContext read: \(error)")
                    }
                }
            }
            reads.forEach { $0.buffer.deallocate() }
            if done < count { return }  // a hang or failure: the buffers may still be written; stop here
        }
        // Close with a batch in flight, then free its buffers (close waits for reads the kernel is doing).
        let buffers = (0..<8).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 4096) }
        let inFlight = buffers.enumerated().map { tag, buffer in
            ReadRequest(descriptor: fds[random.below(fileCount)], offset: Int64(random.below(fileSize)), into: buffer, tag: UInt64(tag))
        }
        if getenv("SOAK_NO_CTX_CLOSE") == nil { _ = try? context.submit(inFlight) }
        context.close()
        tally.closedInFlight.bump(1)
        buffers.forEach { $0.deallocate() }
    }
}

/// The async API: concurrent reads with some tasks cancelled and files closed under them.
func asyncWorker(_ paths: [String], until end: Double, _ tally: Tally, engine: ReadEngine, seed: UInt64) async {
    var random = SplitMix(seed)
    while now() < end {
        let file = random.below(fileCount)
        guard let handle = try? BufferedFile(path: paths[file], engine: engine) else { tally.fail("open"); return }
        let closeEarly = random.below(8) == 0 && getenv("SOAK_NO_ASYNC_CLOSE") == nil
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                let offset = random.below(fileSize + 4096)
                let count = random.below(4) == 0 ? 1 + random.below(2 << 20) : 1 + random.below(64 << 10)
                let mode: ReadMode = [.buffered, .buffered, .direct, .automatic][random.below(4)]
                let started = now()
                let task = Task {
                    do {
                        let bytes = try await handle.read(fromAbsoluteOffset: Int64(offset), count: count, options: ReadOptions(mode: mode))
                        if now() - started > 60 { tally.hangs.bump(1) }
                        tally.reads.bump(1)
                        tally.bytes.bump(bytes.count)
                        let expected = max(0, min(count, fileSize - offset))
                        let good = bytes.count == expected && bytes.withUnsafeBytes { checked($0, file: file, offset: offset) }
                        if !good { tally.wrong.bump(1) }
                    } catch is CancellationError {
                        tally.cancelled.bump(1)
                    } catch let error as BufferedAIOError where [.cancelled, .contextClosed, .fileClosed, .shutDown].contains(error.code) {
                        tally.cancelled.bump(1)
                    } catch {
                        tally.fail("async read: \(error)")
                    }
                }
                if random.below(6) == 0 { task.cancel() }
                group.addTask { await task.value }
            }
            if closeEarly {
                try? await Task.sleep(for: .milliseconds(1))
                handle.close()
                tally.closedInFlight.bump(1)
            }
            await group.waitForAll()
        }
        handle.close()
    }
}

/// Eviction pressure: drops a random file, or part of one, every 20-200 ms.
func evictor(_ paths: [String], until end: Double, _ tally: Tally) {
    var random = SplitMix(7)
    let fds = paths.map { open($0, O_RDONLY | O_CLOEXEC) }
    defer { fds.forEach { close($0) } }
    while now() < end && getenv("SOAK_NO_EVICT") == nil {
        let fd = fds[random.below(fileCount)]
        if random.below(2) == 0 {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        } else {
            posix_fadvise(fd, off_t(random.below(fileSize)), off_t(1 + random.below(4 << 20)), POSIX_FADV_DONTNEED)
        }
        tally.evictions.bump(1)
        usleep(UInt32(20_000 + random.below(180_000)))
    }
}

struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// Threads other than libdispatch's workers (the async API's cooperative pool, named "...-qos...", grows
/// and shrinks with load on its own).
func ownThreads() -> Int {
    guard let directory = opendir("/proc/self/task") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard tid.first?.isNumber == true else { continue }
        var name = [UInt8](repeating: 0, count: 64)
        let fd = open("/proc/self/task/\(tid)/comm", O_RDONLY)
        let n = read(fd, &name, 63)
        close(fd)
        if !String(decoding: name.prefix(max(n, 0)), as: UTF8.self).contains("qos") { count += 1 }
    }
    return count
}

/// Open descriptors, threads (without the concurrency pool's), resident MiB.
func resources() -> (fds: Int, threads: Int, rssMiB: Int) {
    func entries(_ path: String) -> Int {
        guard let directory = opendir(path) else { return -1 }
        defer { closedir(directory) }
        var count = 0
        while readdir(directory) != nil { count += 1 }
        return count - 2
    }
    var text = [UInt8](repeating: 0, count: 256)
    let fd = open("/proc/self/statm", O_RDONLY)
    let n = read(fd, &text, 255)
    close(fd)
    let fields = String(decoding: text.prefix(max(n, 0)), as: UTF8.self).split(separator: " ")
    let rss = fields.count > 1 ? ((Int(fields[1]) ?? 0) * 4096) >> 20 : -1
    return (entries("/proc/self/fd") - 1, ownThreads(), rss)
}

/// Writes the pattern files that are missing or have the wrong size.
func createFiles(_ paths: [String]) {
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    for (index, path) in paths.enumerated() {
        var info = stat()
        if stat(path, &info) == 0 && Int(info.st_size) == fileSize { continue }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        for start in stride(from: 0, to: fileSize, by: chunk.count) {
            for i in 0..<chunk.count { chunk[i] = patternByte(index, start + i) }
            _ = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, off_t(start)) }
        }
        fsync(fd)
        close(fd)
    }
}

@main
struct Soak {
    static func main() async {
        let arguments = CommandLine.arguments
        guard arguments.count == 3, let seconds = Double(arguments[2]) else {
            print("usage: soak DIRECTORY SECONDS")
            exit(2)
        }
        let paths = (0..<fileCount).map { "\(arguments[1])/soak-\($0).bin" }
        createFiles(paths)
        if seconds == 0 { exit(0) }
        let tally = Tally()
        guard let engine = try? ReadEngine() else { exit(1) }
        // A short warm-up first, so the baseline includes the threads and caches that stay for the run.
        let warmUpEnd = now() + min(10, seconds / 10)
        contextWorker(paths, until: warmUpEnd, tally, seed: 99)
        await asyncWorker(paths, until: now() + 1, tally, engine: engine, seed: 98)
        // The baseline: descriptors and threads after the warm-up (no context open, as at the end); memory
        // after the first minute of a longer run, once the allocator's arenas have grown to the load (the
        // first 10-minute run went from 45 MiB after the warm-up to a plateau of 115 MiB within a minute).
        let warm = resources()
        let baseline = Mutex(warm)
        let start = now()
        let end = start + seconds
        let threads = (0..<2).map { index in
            Thread { contextWorker(paths, until: end, tally, seed: UInt64(index + 1)) }
        } + [Thread { evictor(paths, until: end, tally) }]
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<(getenv("SOAK_NO_ASYNC") != nil ? 0 : 3) { group.addTask { await asyncWorker(paths, until: end, tally, engine: engine, seed: UInt64(100 + index)) } }
            group.addTask {
                var reported = start
                while now() < end {
                    try? await Task.sleep(for: .seconds(1))
                    if now() - reported < 60 && now() < end { continue }
                    reported = now()
                    if now() - start < 90 && seconds >= 120 { baseline.withLock { $0.rssMiB = resources().rssMiB } }
                    print("soak: \(Int(now() - start)) s, \(tally.reads.value) reads, wrong \(tally.wrong.value), hangs \(tally.hangs.value), errors \(tally.errors.value), rss \(resources().rssMiB) MiB")
                }
            }
        }
        threads.forEach { $0.join() }
        let after = resources()
        engine.shutdown()
        let before = baseline.withLock { $0 }
        let grew = after.fds > before.fds || after.threads > before.threads || after.rssMiB > before.rssMiB + 64
        print(
            "soak: \(Int(now() - start)) s, reads \(tally.reads.value), bytes \(tally.bytes.value >> 20) MiB, wrong \(tally.wrong.value), hangs \(tally.hangs.value), unexpected errors \(tally.errors.value), cancelled \(tally.cancelled.value), closed in flight \(tally.closedInFlight.value), evictions \(tally.evictions.value), fds \(before.fds)->\(after.fds), threads \(before.threads)->\(after.threads), rss \(before.rssMiB)->\(after.rssMiB) MiB (after the warm-up: \(warm.fds) fds, \(warm.threads) threads, \(warm.rssMiB) MiB)"
        )
        let lastError = tally.lastError.withLock { $0 }
        if !lastError.isEmpty { print("soak: last error: \(lastError)") }
        let bad = tally.wrong.value + tally.hangs.value + tally.errors.value > 0 || grew
        exit(bad ? 1 : 0)
    }
}

/// A joinable pthread running a closure.
final class Thread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void
    init(_ body: @escaping () -> Void) {
        self.body = body
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, context)
    }
    func join() { pthread_join(thread, nil) }
}
