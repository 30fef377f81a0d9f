// The engine's costs per operation: submit of a cached and of an uncached read, reap, the async read of
// cached data, and the residency probe by range size. Wall clock, CPU, allocations and syscalls; the
// cached benchmarks run 1,000 operations per sample (scalingFactor .kilo), so divide by 1,000.
import Benchmark
import BufferedAIO
import Glibc

/// A scratch file in $TMPDIR, written once per benchmark process.
final class ScratchFile: @unchecked Sendable {
    let path: String
    let fd: Int32
    let size: Int

    init(size: Int) {
        let directory = String(cString: getenv("TMPDIR") ?? strdup("/tmp"))
        path = "\(directory)/baio-engine-costs-\(getpid()).bin"
        self.size = size
        let writer = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var block = [UInt8](repeating: 0, count: 1 << 20)
        for i in 0..<block.count { block[i] = UInt8(truncatingIfNeeded: i &* 131) }
        var offset = 0
        while offset < size {
            offset += block.withUnsafeBytes {
                pwrite(writer, $0.baseAddress, min($0.count, size - offset), off_t(offset))
            }
        }
        fsync(writer)
        close(writer)
        fd = open(path, O_RDONLY)
    }

    deinit {
        close(fd)
        unlink(path)
    }

    func warm() { _ = try? PageCache.warm(descriptor: fd) }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .syscalls],
        maxDuration: .seconds(3), maxIterations: 200_000)
    let file = ScratchFile(size: 256 << 20)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)

    Benchmark(
        "Submit.cached.4KiB (submit + getEvents, completes inline)",
        configuration: .init(scalingFactor: .kilo)
    ) { benchmark in
        let context = try IOContext(capacity: 8)
        defer { context.close() }
        file.warm()
        var offset: Int64 = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let request = ReadRequest(descriptor: file.fd, offset: offset, length: 4096, into: buffer)
            try context.submit(request)
            blackHole(try context.getEvents(minimum: 1, maximum: 1))
            offset = (offset + 4096) % Int64(file.size)
        }
    }

    Benchmark(
        "Submit.uncached.4KiB (submit only; the page is evicted first)",
        configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxIterations: 2_000)
    ) { benchmark in
        let context = try IOContext(capacity: 8)
        defer { context.close() }
        var offset: Int64 = 0
        for _ in benchmark.scaledIterations {
            // The whole file: DONTNEED of 4 KiB inside a large folio evicts nothing.
            _ = posix_fadvise(file.fd, 0, 0, POSIX_FADV_DONTNEED)
            let request = ReadRequest(descriptor: file.fd, offset: offset, length: 4096, into: buffer)
            benchmark.startMeasurement()
            try context.submit(request)
            benchmark.stopMeasurement()
            blackHole(try context.getEvents(minimum: 1, maximum: 1))
            offset = (offset + 1 << 20) % Int64(file.size)
        }
    }

    Benchmark(
        "Reap.ready.4KiB (getEvents of a read the poller found resident)",
        configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxIterations: 2_000)
    ) { benchmark in
        let context = try IOContext(capacity: 8)
        defer { context.close() }
        var offset: Int64 = 0
        for _ in benchmark.scaledIterations {
            _ = posix_fadvise(file.fd, 0, 0, POSIX_FADV_DONTNEED)
            try context.submit(ReadRequest(descriptor: file.fd, offset: offset, length: 4096, into: buffer))
            var pfd = pollfd(fd: context.eventDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 10_000)
            benchmark.startMeasurement()
            blackHole(try context.getEvents(minimum: 1, maximum: 1))
            benchmark.stopMeasurement()
            offset = (offset + 1 << 20) % Int64(file.size)
        }
    }

    Benchmark("Async.read.cached.4KiB (one await, served inline)", configuration: .init(scalingFactor: .kilo)) {
        benchmark in
        let engine = try ReadEngine()
        defer { engine.shutdown() }
        let handle = try BufferedFile(path: file.path, engine: engine)
        defer { handle.close() }
        file.warm()
        var offset: Int64 = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try await handle.read(fromAbsoluteOffset: offset, count: 4096))
            offset = (offset + 4096) % Int64(file.size)
        }
    }

    for megabytes in [1, 64, 256] {
        Benchmark("Residency.mincore.\(megabytes)MiB (PageCache.residency of a cached range)") { benchmark in
            file.warm()
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(try PageCache.residency(descriptor: file.fd, offset: 0, length: Int64(megabytes) << 20))
            }
        }
    }
}
