// This file owns `Request`, one read's life inside the engine: the refcounted request of the 2011
// proposal, holding one reference per missing page until every page is resident.
import CBufferedAIO
import Glibc
import Synchronization

/// Receives requests whose pages are resident (or that finished or failed), in batches.
protocol CompletionSink: AnyObject, Sendable {
    /// Called on the submitting thread once the request exists and before the poller can see it, so the
    /// sink can track it (for cancel and close) before any delivery.
    func accept(_ request: Request)

    /// Called by the poller once per pass with everything that became ready in it, and by cancel and
    /// shutdown. Must not block.
    func deliver(_ batch: [Request])
}

/// One read in flight.
///
/// Ownership moves with the request: the submitting thread fills it, the poller owns its probe fields
/// while it is pending, and the reaper owns it once delivered. Each move crosses a lock (the poller's
/// inbox, the sink's queue), which orders the field accesses; only the state word is touched concurrently,
/// by cancellation. Its states and legal moves are the table in Request+State.swift.
final class Request: @unchecked Sendable {
    enum Probe {
        case mincore(FileMapping)
        case nowait
        /// RWF_NOWAIT unsupported and mincore untrustworthy: nothing can tell, so the reaper reads.
        case none
    }

    // MARK: Fixed at submit

    let serial: UInt64
    let tag: UInt64
    let offset: Int64
    /// The length after clipping to the kernel's MAX_RW_COUNT; end of file is found by the reads.
    let length: Int
    let buffer: UnsafeMutableRawPointer?
    let path: String?
    let sink: CompletionSink
    let submittedAt: ContinuousClock.Instant

    // MARK: Shared: the lifecycle state, changed only through handle(_:)

    let sharedState = Atomic<UInt8>(State.pending.rawValue)

    // MARK: Submit's, then read-only: the pinned descriptors

    /// The pinned descriptor: our own duplicate of a caller's descriptor (closed when the request is
    /// freed), or a ``BufferedFile``'s, kept open by ``pin``.
    var fd: Int32 = -1
    var pin: DescriptorPin?
    /// The pinned O_DIRECT descriptor for direct reads, likewise.
    var directFD: Int32 = -1
    var directPin: DescriptorPin?

    // MARK: The poller's while pending (set by submit or a re-arm before the request is enqueued)

    var probe: Probe = .none
    var runs: [PageRun] = []
    var runIndex = 0
    /// References still held: missing pages not yet confirmed resident.
    var references: Int64 = 0
    var lastProgress: ContinuousClock.Instant
    var stalls = 0
    /// Whether the request ever stalled: its time to completion then says nothing about the device.
    var stalled = false
    /// Set when the bounded wait ran out (or a probe, a direct fallback or a re-arm failed): the reaper
    /// reads with a blocking pread at once.
    var forceBlocking = false
    /// Cleared by the stage that meets EOPNOTSUPP from RWF_NOWAIT (submit or the reaper): only blocking
    /// reads work on this file.
    var nowaitSupported = true
    /// A direct read's libaio progress; the poller drives it, and drops it to fall back to buffered.
    var direct: DirectState?

    // MARK: The reaper's once delivered

    /// Bytes already in the caller's buffer: submit's inline prefix, a direct read's bounce copies (made on
    /// the poller while it owns the request), then the reaper's copies.
    var done = 0
    /// The final result: bytes read, or a negative errno.
    var result = 0
    /// The syscall behind a negative result, for the error message.
    var failedCall = "pread"
    /// How often the reaper sent the request back to the poller.
    var rearms = 0

    init(
        serial: UInt64, tag: UInt64, offset: Int64, length: Int, buffer: UnsafeMutableRawPointer?, path: String?,
        sink: CompletionSink
    ) {
        self.serial = serial
        self.tag = tag
        self.offset = offset
        self.length = length
        self.buffer = buffer
        self.path = path
        self.sink = sink
        let now = ContinuousClock.now
        self.submittedAt = now
        self.lastProgress = now
    }

    deinit {
        if fd >= 0 && pin == nil { _ = system_close(fd) }
        if directFD >= 0 && directPin == nil { _ = system_close(directFD) }
    }

    /// Pins `fd` for the request's lifetime: holds `pin` if there is one, else duplicates the descriptor.
    /// Returns false if the duplicate could not be made (EMFILE).
    func pinDescriptor(_ fd: Int32, _ pin: DescriptorPin?) -> Bool {
        if let pin {
            self.pin = pin
            self.fd = pin.fd
            return true
        }
        self.fd = system_dup_cloexec(fd)
        return self.fd >= 0
    }

    /// Whether anything can tell this request's pages are resident.
    var canProbe: Bool {
        if case .none = probe { return false }
        return true
    }

    /// The event for this request once finished or cancelled.
    var event: IOEvent {
        if state == .cancelled {
            return IOEvent(
                tag: tag,
                result: .failure(BufferedAIOError(.cancelled, "read cancelled", errno: .canceled, path: path)))
        }
        if result >= 0 { return IOEvent(tag: tag, result: .success(result)) }
        let errno = Errno(rawValue: Int32(-result))
        return IOEvent(
            tag: tag, result: .failure(.syscall(failedCall, errno, fd: fd, path: path, code: .readFailed)))
    }
}
