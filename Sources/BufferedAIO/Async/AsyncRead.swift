// This file owns the async reads of `BufferedFile`: a read is submitted on the awaiting task, the poller
// only resumes its continuation, and the final copy happens back in the task (the seeds' "deferred
// completion to the issuer").
import Glibc
import Synchronization

/// Options for the async reads of a ``BufferedFile``.
public struct ReadOptions: Sendable, Hashable {
    /// Buffered (default), direct (bypass the cache) or automatic.
    public var mode: ReadMode = .buffered
    /// How many chunk reads ``BufferedFile/chunks(in:chunkLength:options:)`` keeps in flight ahead of the
    /// consumer.
    public var window: Int = 4

    /// Options with the given mode and streaming window.
    public init(mode: ReadMode = .buffered, window: Int = 4) {
        self.mode = mode
        self.window = window
    }
}

/// One async read's meeting point with the poller. It owns the destination buffer, and requests hold it
/// until the engine lets go of them, so a cancelled or abandoned read never leaves the kernel or the
/// poller writing freed memory.
final class AsyncSink: CompletionSink, @unchecked Sendable {
    private enum State {
        case idle
        case waiting(CheckedContinuation<Void, Never>)
        case signalled
    }

    private let state = Mutex<State>(.idle)
    let buffer: UnsafeMutableRawBufferPointer

    init(capacity: Int, alignment: Int = 16) {
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 1), alignment: alignment)
    }

    deinit { buffer.deallocate() }

    func accept(_ request: Request) {}

    func deliver(_ batch: [Request]) { signal() }

    /// Resumes the waiter exactly once; a signal with no waiter yet is remembered.
    func signal() {
        let continuation: CheckedContinuation<Void, Never>? = state.withLock { state in
            switch state {
            case .waiting(let continuation):
                state = .idle
                return continuation
            case .idle:
                state = .signalled
                return nil
            case .signalled:
                return nil
            }
        }
        continuation?.resume()
    }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLock { state in
                if case .signalled = state {
                    state = .idle
                    return true
                }
                state = .waiting(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}

/// A submitted async read: the request and the sink that owns its buffer.
struct AsyncRead {
    let request: Request
    let sink: AsyncSink
    var finished: Bool
    /// The bytes asked of the engine: the caller's count bounded by the file's size at submit (see
    /// ``BufferedFile/boundedLength(offset:count:)``).
    var length = 0

    /// Submits a read of at most `length` bytes at `offset` into a new buffer owned by the sink, which is
    /// never larger than what the file holds there.
    static func start(
        _ file: BufferedFile, engine: Engine, offset: Int64, length: Int, mode: ReadMode
    ) throws(BufferedAIOError) -> AsyncRead {
        let alignment = mode == .buffered ? 16 : 4096
        let bounded = try file.boundedLength(offset: offset, count: length)
        let sink = AsyncSink(capacity: bounded ?? 0, alignment: alignment)
        let read = ReadRequest(.file(file), offset: offset, length: bounded ?? length, into: sink.buffer, mode: mode)
        let prepared = try engine.prepare(read)
        let outcome: Engine.Outcome
        if let count = prepared.copiedAll {
            outcome = .finished(engine.finishedRequest(copying: count, of: read, sink: sink))
        } else {
            outcome = try engine.start(prepared, sink: sink)
        }
        var started = make(outcome, engine: engine, sink: sink)
        started.length = read.length
        return started
    }

    private static func make(_ outcome: Engine.Outcome, engine: Engine, sink: AsyncSink) -> AsyncRead {
        switch outcome {
        case .finished(let request):
            _ = engine.reap(request)  // already final: this only counts it as completed
            return AsyncRead(request: request, sink: sink, finished: true)
        case .ready(let request): return AsyncRead(request: request, sink: sink, finished: false)
        case .pending(let request):
            // Not yet reaped: the sink's signal says when.
            return AsyncRead(request: request, sink: sink, finished: false, pending: true)
        }
    }

    /// Continues a read whose fast path already missed, into a new buffer the sink owns. `length` is at
    /// most the inline-copy limit (only reads that short take the fast path).
    static func start(_ prepared: Engine.Prepared, engine: Engine, length: Int) throws(BufferedAIOError) -> AsyncRead {
        let sink = AsyncSink(capacity: length)
        var started = make(
            try engine.start(prepared.retargeted(to: sink.buffer), sink: sink), engine: engine, sink: sink)
        started.length = length
        return started
    }

    private init(request: Request, sink: AsyncSink, finished: Bool, pending: Bool = false) {
        self.request = request
        self.sink = sink
        self.finished = finished
        if !pending && !finished { sink.signal() }
    }

    /// Waits for the poller, reaps in this task, and returns the byte count. Cancelling the task cancels a
    /// buffered read still waiting for pages; a direct read the kernel is doing is waited for (its buffer
    /// is being written), then the cancellation is reported.
    mutating func complete(engine: Engine) async throws -> Int {
        if !finished {
            while true {
                let request = self.request
                let sink = self.sink
                await withTaskCancellationHandler {
                    await sink.wait()
                } onCancel: {
                    AsyncRead.cancel(request, sink: sink, engine: engine)
                }
                if engine.reap(request) { break }
            }
            finished = true
        }
        if request.state == .cancelled {
            if engine.isStopped {
                throw BufferedAIOError(.shutDown, "the read engine was shut down", errno: .canceled, path: request.path)
            }
            throw CancellationError()
        }
        if Task.isCancelled && request.direct != nil { throw CancellationError() }
        return try request.event.get()
    }

    /// Cancels the read if it is still waiting for pages (used when a stream is abandoned).
    func cancel(engine: Engine) { Self.cancel(request, sink: sink, engine: engine) }

    private static func cancel(_ request: Request, sink: AsyncSink, engine: Engine) {
        guard request.direct == nil && request.handle(.didCancel) == .deliverCancellation else { return }
        engine.counters.cancelled.add(1)
        sink.signal()
    }
}

extension BufferedFile {
    /// How many bytes a read of `count` at `offset` can return, checked when it is submitted: at most what
    /// the file holds there now and the kernel's MAX_RW_COUNT, so `count: Int.max` ("the rest") allocates
    /// the rest, not 8 EiB. A file that grows during the read gives what was there at submit, as a pread
    /// issued then would. Nil for a range the engine must refuse (negative, overflowing) or a closed file:
    /// the engine's validation then says why, and nothing is allocated for it.
    func boundedLength(offset: Int64, count: Int) throws(BufferedAIOError) -> Int? {
        guard offset >= 0, count >= 0, !offset.addingReportingOverflow(Int64(count)).overflow,
            let fd = descriptor
        else { return nil }
        var info = stat()
        guard system_fstat(fd, &info) == 0 else {
            throw .syscall("fstat", Errno(rawValue: errno), fd: fd, path: path, code: .badDescriptor)
        }
        let available = max(0, Int64(info.st_size) - offset)
        return Int(min(Int64(count), available, Int64(Engine.maximumReadCount)))
    }

    /// Reads up to `count` bytes at `offset`; fewer only at end of file.
    ///
    /// `count` may exceed the file (`Int.max` reads to the end): the result and the memory behind it are
    /// bounded by the file's size when the read is submitted, and by the kernel's MAX_RW_COUNT
    /// (0x7ffff000 bytes) as for `pread`.
    ///
    /// Cached data is copied at once without leaving the calling task's thread; missing pages are read
    /// ahead and the task suspends until the poller sees them, then copies them itself.
    ///
    /// - Parameters:
    ///   - offset: The file offset of the first byte.
    ///   - count: The most bytes to read.
    ///   - options: The read mode; see ``ReadOptions``.
    /// - Returns: The bytes read.
    /// - Throws: ``BufferedAIOError`` naming the file (invalid range, closed file, read error);
    ///   `CancellationError` if the task was cancelled while the read waited.
    ///
    /// The corresponding C function is `pread`.
    public func read(
        fromAbsoluteOffset offset: Int64, count: Int, options: ReadOptions = ReadOptions()
    ) async throws
        -> [UInt8]
    {
        try Task.checkCancellation()
        let engine = try self.engine.engine
        var read: AsyncRead
        if let (bytes, prepared) = try readCached(fromAbsoluteOffset: offset, count: count, options: options) {
            if prepared.copiedAll != nil { return bytes }
            read = try AsyncRead.start(prepared, engine: engine, length: count)
        } else {
            read = try AsyncRead.start(self, engine: engine, offset: offset, length: count, mode: options.mode)
        }
        let bytes = try await read.complete(engine: engine)
        return Array(UnsafeRawBufferPointer(rebasing: read.sink.buffer[..<bytes]))
    }

    /// Reads into `buffer` at `offset` and returns the byte count (short only at end of file).
    ///
    /// The buffer is written only while this call is running; if the task is cancelled, the call returns
    /// (throwing `CancellationError`) only once nothing can write it any more.
    ///
    /// The corresponding C function is `pread`.
    public func read(
        fromAbsoluteOffset offset: Int64, into buffer: UnsafeMutableRawBufferPointer,
        options: ReadOptions = ReadOptions()
    ) async throws -> Int {
        try Task.checkCancellation()
        // A cached read is one synchronous preadv2, so it may go straight into the caller's memory.
        let engine = try self.engine.engine
        var read: AsyncRead
        if options.mode == .buffered && buffer.count > 0 && buffer.count <= engine.configuration.inlineCopyLimit {
            let prepared = try engine.prepare(
                ReadRequest(.file(self), offset: offset, length: buffer.count, into: buffer, mode: .buffered))
            if let count = prepared.copiedAll {
                engine.counters.completed.add(1)
                return count
            }
            read = try AsyncRead.start(prepared, engine: engine, length: buffer.count)
        } else {
            // Bounded by the file's size inside start: a 4 GiB buffer over a 1 GiB file costs 1 GiB of sink.
            read = try AsyncRead.start(self, engine: engine, offset: offset, length: buffer.count, mode: options.mode)
        }
        // Otherwise the engine reads into a buffer the sink owns, so that a cancelled read can never write
        // the caller's memory after this returns; the copy out is the price of that guarantee.
        let count = try await read.complete(engine: engine)
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: read.sink.buffer[..<count]))
        return count
    }

    /// The bytes at `offset` if every one of them is cached: one preadv2 into the array that is returned,
    /// with no request, sink or suspension (then the prepared read's ``Engine/Prepared/copiedAll`` is
    /// set). Otherwise the prepared read, for the slow path; nil when the fast path does not apply.
    private func readCached(
        fromAbsoluteOffset offset: Int64, count: Int, options: ReadOptions
    ) throws(BufferedAIOError)
        -> ([UInt8], Engine.Prepared)?
    {
        let engine = try self.engine.engine
        guard options.mode == .buffered, count > 0, count <= engine.configuration.inlineCopyLimit else {
            return nil
        }
        var prepared: Engine.Prepared? = nil
        var failure: BufferedAIOError? = nil
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            do throws(BufferedAIOError) {
                prepared = try engine.prepare(
                    ReadRequest(
                        .file(self), offset: offset, length: count, into: UnsafeMutableRawBufferPointer(buffer),
                        mode: .buffered))
            } catch {
                failure = error
            }
            initialized = prepared?.copiedAll ?? 0
        }
        if let failure { throw failure }
        guard let prepared else { return nil }
        if prepared.copiedAll != nil { engine.counters.completed.add(1) }
        return (bytes, prepared)
    }

    /// Reads the whole file, refusing files larger than `maximumSize` so a huge file cannot exhaust memory
    /// by accident.
    ///
    /// - Throws: ``BufferedAIOError/Code/invalidArgument`` if the file is larger than `maximumSize`.
    public func readAll(maximumSize: Int, options: ReadOptions = ReadOptions()) async throws -> [UInt8] {
        guard let fd = descriptor else {
            throw BufferedAIOError(.fileClosed, "'\(path)' is closed", errno: .badFileDescriptor, path: path)
        }
        var info = stat()
        guard system_fstat(fd, &info) == 0 else {
            throw BufferedAIOError.syscall("fstat", Errno(rawValue: errno), fd: fd, path: path, code: .badDescriptor)
        }
        guard Int(info.st_size) <= maximumSize else {
            throw BufferedAIOError(
                .invalidArgument, "'\(path)' is \(info.st_size) bytes, more than the limit of \(maximumSize)",
                errno: .invalidArgument, path: path)
        }
        var result: [UInt8] = []
        result.reserveCapacity(Int(info.st_size))
        for try await chunk in chunks(chunkLength: 1 << 20, options: options) {
            result += chunk
            guard result.count <= maximumSize else {
                throw BufferedAIOError(
                    .invalidArgument, "'\(path)' grew past the limit of \(maximumSize) bytes while being read",
                    errno: .invalidArgument, path: path)
            }
        }
        return result
    }
}

extension BufferedFile {
    /// Opens `path`, runs `body` with the file, and closes it whatever happens.
    ///
    /// - Parameters:
    ///   - path: The file to open.
    ///   - accessPattern: Readahead advice for the open file.
    ///   - engine: The engine that serves the reads (the shared one by default).
    ///   - isolation: The caller's actor, inherited so `body` runs where the caller does.
    ///   - body: What to do with the file.
    public static func withFile<Result>(
        at path: String, accessPattern: AccessPattern = .normal, engine: ReadEngine? = nil,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (BufferedFile) async throws -> Result
    ) async throws -> Result {
        let file = try BufferedFile(path: path, accessPattern: accessPattern, engine: engine)
        do {
            let result = try await body(file)
            file.close()
            return result
        } catch {
            file.close()
            throw error
        }
    }
}
