// This file owns the cache bypass: O_DIRECT reads through libaio (io_submit/io_getevents), with
// alignment handled for the caller by bounded bounce buffers. Only the poller thread touches the libaio
// context, so it needs no lock.
import CBufferedAIO
import Glibc

/// A direct read's progress. Reads whose offset, length and buffer are all aligned go straight into the
/// caller's buffer; others go through a bounce buffer of at most
/// ``EngineConfiguration/directBounceLimit`` bytes, one aligned chunk at a time, so memory never grows
/// with the caller's length.
final class DirectState {
    let iocb = UnsafeMutablePointer<iocb>.allocate(capacity: 1)
    let inPlace: Bool
    let offsetAlignment: Int64
    let bounce: UnsafeMutableRawPointer?
    let bounceLength: Int
    /// The next aligned file offset to read (bounce mode).
    var position: Int64
    /// Bytes read, or a negative errno, once finished.
    var result = 0

    init(inPlace: Bool, offsetAlignment: Int64, memoryAlignment: Int, bounceLength: Int, start: Int64) {
        self.inPlace = inPlace
        self.offsetAlignment = offsetAlignment
        self.position = start
        self.bounceLength = bounceLength
        if inPlace {
            bounce = nil
        } else {
            bounce = system_posix_memalign(max(memoryAlignment, systemPageSize), bounceLength)
        }
        iocb.initialize(to: CBufferedAIO.iocb())
    }

    deinit {
        iocb.deallocate()
        free(bounce)
    }
}

extension Engine {
    /// Prepares a direct or automatic read. Returns nil when it should take the buffered path instead:
    /// automatic mode found the data cached or the read short, or no O_DIRECT descriptor exists (the
    /// engine never re-opens a file to get one), which counts as a fallback.
    func submitDirect(
        _ request: Request, read: ReadRequest, fd: Int32, directFD: Int32, pins: FilePins, info: stat
    ) throws(BufferedAIOError) -> Outcome? {
        var source = directFD
        if source < 0, case .descriptor = read.source, system_fcntl_getfl(fd) & cbaio_O_DIRECT != 0 {
            source = fd
        }
        if read.mode == .automatic {
            guard source >= 0, request.length >= configuration.automaticDirectThreshold else { return nil }
            if mostlyCached(fd, request) { return nil }
        }
        guard source >= 0 else {
            counters.directFallbacks.add(1)
            return nil
        }
        var memoryAlignment: UInt32 = 0
        var offsetAlignment: UInt32 = 0
        if system_dio_alignment(source, &memoryAlignment, &offsetAlignment) != 0 || offsetAlignment == 0 {
            // No STATX_DIOALIGN answer: 4096 satisfies every logical block size up to a page.
            memoryAlignment = 4096
            offsetAlignment = 4096
        }
        let alignment = Int64(offsetAlignment)
        let address = Int(bitPattern: request.buffer)
        let inPlace =
            request.offset % alignment == 0 && Int64(request.length) % alignment == 0
            && address % Int(memoryAlignment) == 0
        let start = request.offset / alignment * alignment
        let end = (request.offset + Int64(request.length) + alignment - 1) / alignment * alignment
        let bounce = Int(
            min(end - start, max(alignment, Int64(configuration.directBounceLimit) / alignment * alignment)))
        let state = DirectState(
            inPlace: inPlace, offsetAlignment: alignment, memoryAlignment: Int(memoryAlignment),
            bounceLength: inPlace ? 0 : bounce, start: start)
        if !inPlace && state.bounce == nil {
            throw BufferedAIOError(.systemResource, "cannot allocate a bounce buffer", errno: Errno(rawValue: ENOMEM))
        }
        if let pin = pins.direct {
            request.directPin = pin
            request.directFD = pin.fd
        } else {
            request.directFD = system_dup_cloexec(source)
        }
        guard request.directFD >= 0 else {
            throw BufferedAIOError(
                .wouldBlock, "cannot pin \(BufferedAIOError.name(source, path: request.path)) for the read",
                syscall: "fcntl(F_DUPFD_CLOEXEC)", errno: .resourceTemporarilyUnavailable, path: request.path)
        }
        // The buffered twin is pinned too, for the fallback when the kernel refuses the alignment.
        _ = request.pinDescriptor(fd, pins.buffered)
        request.direct = state
        return .pending(request)
    }

    /// Automatic mode's test: is at least half of the range in the page cache? cachestat answers without
    /// side effects; where it is refused (a file the caller cannot write, or a kernel before 6.5), one
    /// RWF_NOWAIT byte says whether the start is cached.
    private func mostlyCached(_ fd: Int32, _ request: Request) -> Bool {
        var stat = cbaio_cachestat()
        if system_cachestat(fd, UInt64(request.offset), UInt64(request.length), &stat) == 0 {
            return Int(stat.nr_cache) * 2 >= pageCount(bytes: request.length)
        }
        var byte: UInt8 = 0
        return system_preadv2(fd, &byte, 1, request.offset, cbaio_RWF_NOWAIT) == 1
    }
}

/// The poller's libaio context, created on the first direct read so an engine that never bypasses the
/// cache consumes none of the system-wide `aio-max-nr`.
struct DirectIO {
    let engine: Engine
    var context: io_context_t? = nil
    var setupFailed = false
    /// Requests with an iocb in the kernel, by serial (the iocb's `data`).
    var inFlight: [UInt64: Request] = [:]
    static let capacity: Int32 = 256

    init(engine: Engine) { self.engine = engine }

    /// Submits the request's first chunk. If libaio is unavailable or full, the request takes the
    /// buffered path: it is appended to `buffered` (pages to wait for) or `ready`.
    mutating func submit(_ request: Request, buffered: inout [Request], ready: inout [Request]) {
        guard request.state == .pending else { return }
        if context == nil && !setupFailed {
            var created: io_context_t? = nil
            if system_io_setup(Self.capacity, &created) == 0 { context = created } else { setupFailed = true }
        }
        if let context, inFlight.count < Int(Self.capacity), submitChunk(request, context: context) { return }
        fallBack(request, buffered: &buffered, ready: &ready)
    }

    private mutating func submitChunk(_ request: Request, context: io_context_t) -> Bool {
        guard let state = request.direct else { return false }
        let buffer: UnsafeMutableRawPointer?
        let count: Int
        if state.inPlace {
            buffer = request.buffer
            count = request.length
        } else {
            buffer = state.bounce
            count = state.bounceLength
        }
        cbaio_prep_pread(
            state.iocb, request.directFD, buffer, count, state.inPlace ? request.offset : state.position,
            engine.wakeFD, request.serial)
        var list: UnsafeMutablePointer<iocb>? = state.iocb
        let submitted = system_io_submit(context, 1, &list)
        guard submitted == 1 else { return false }
        inFlight[request.serial] = request
        return true
    }

    /// Reaps libaio completions without waiting; finished requests join `ready`, refused ones go to the
    /// buffered path through `fallback`.
    mutating func collect(into ready: inout [Request], buffered: inout [Request]) {
        guard let context, !inFlight.isEmpty else { return }
        var events = [io_event](repeating: io_event(), count: 64)
        var zero = timespec(tv_sec: 0, tv_nsec: 0)
        let count = events.withUnsafeMutableBufferPointer {
            system_io_getevents(context, 0, 64, $0.baseAddress!, &zero)
        }
        guard count > 0 else { return }
        for event in events.prefix(Int(count)) {
            guard let request = inFlight.removeValue(forKey: UInt64(UInt(bitPattern: event.data))),
                let state = request.direct
            else { continue }
            let result = Int(bitPattern: UInt(event.res))
            if result == -Int(EINVAL) && request.done == 0 {
                // The kernel refused the alignment (reported in the event, not by io_submit).
                fallBack(request, buffered: &buffered, ready: &ready)
                continue
            }
            if result < 0 {
                state.result = request.done > 0 ? request.done : result
            } else if state.inPlace {
                state.result = result
            } else if advance(request, state: state, read: result, context: context) {
                continue  // the next chunk is in flight
            }
            engine.counters.directReads.add(1)
            if request.handle(.didBecomeResident) == .deliver { ready.append(request) }
        }
    }

    /// Copies a completed bounce chunk into the caller's buffer and submits the next one. Returns true
    /// if another chunk is in flight.
    private mutating func advance(_ request: Request, state: DirectState, read: Int, context: io_context_t) -> Bool {
        let chunkStart = state.position
        let wantedStart = request.offset + Int64(request.done)
        let skip = Int(wantedStart - chunkStart)
        let available = max(0, read - skip)
        let copy = min(available, request.length - request.done)
        if copy > 0 { (request.buffer! + request.done).copyMemory(from: state.bounce! + skip, byteCount: copy) }
        request.done += copy
        state.position += Int64(read)
        let endOfFile = read < state.bounceLength
        if request.done >= request.length || endOfFile {
            state.result = request.done
            return false
        }
        if submitChunk(request, context: context) { return true }
        state.result = request.done
        return false
    }

    /// Sends a direct request down the buffered path (from the poller thread).
    private func fallBack(_ request: Request, buffered: inout [Request], ready: inout [Request]) {
        request.direct = nil
        engine.counters.directFallbacks.add(1)
        if startBuffered(request) {
            buffered.append(request)
        } else if request.handle(.didBecomeResident) == .deliver {
            ready.append(request)
        }
    }

    /// Converts the request to a buffered one; returns true if it has pages to wait for.
    private func startBuffered(_ request: Request) -> Bool {
        var info = stat()
        guard request.fd >= 0, system_fstat(request.fd, &info) == 0 else {
            request.forceBlocking = true
            return false
        }
        engine.chooseProbe(for: request, info: info)
        engine.startMissingPages(request, info: info, nowaitStartedFirstPage: false)
        return request.references > 0
    }

    /// Destroys the context, which waits for every in-flight read (the kernel's io_destroy contract), and
    /// returns the requests that were in flight.
    mutating func destroy() -> [Request] {
        if let context { _ = system_io_destroy(context) }
        context = nil
        defer { inFlight.removeAll() }
        return Array(inFlight.values)
    }
}
