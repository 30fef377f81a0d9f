// This file owns `IOContext`, the libaio-shaped API: io_setup, io_submit, io_getevents, io_cancel and
// io_destroy for reads, with an eventfd like io_set_eventfd.
import Glibc
import Synchronization

/// A context for asynchronous buffered reads, shaped like a libaio `io_context_t`.
///
/// ```swift
/// let context = try IOContext(capacity: 64)
/// defer { context.close() }
/// try context.submit([ReadRequest(descriptor: fd, offset: 0, into: buffer, tag: 1)])
/// for event in try context.getEvents(minimum: 1, maximum: 64) { print(event.tag, try event.get()) }
/// ```
///
/// `submit` never waits for data I/O: cached data is copied at once, missing pages are started with
/// readahead, and a poller thread notices when they arrive. The final copy happens in `getEvents`, on the
/// caller's thread. Each context owns one poller thread, started here and joined by ``close()``.
public final class IOContext: Sendable {
    /// The most requests in flight (submitted and not yet returned by ``getEvents(minimum:maximum:timeout:)``),
    /// like `io_setup`'s `nr_events`.
    public let capacity: Int
    let engine: Engine
    let queue: ReadyQueue

    /// Creates a context (the corresponding C function is `io_setup`).
    ///
    /// - Parameters:
    ///   - capacity: The most requests in flight, from 1 to 1,048,576.
    ///   - configuration: The engine's policies.
    /// - Throws: ``BufferedAIOError/Code/invalidArgument`` for a capacity out of range,
    ///   ``BufferedAIOError/Code/systemResource`` if the eventfd or thread cannot be created.
    public init(capacity: Int, configuration: EngineConfiguration = .init()) throws(BufferedAIOError) {
        guard capacity > 0 && capacity <= 1 << 20 else {
            throw BufferedAIOError(
                .invalidArgument, "capacity \(capacity) is out of range (1...1048576)", errno: .invalidArgument)
        }
        self.capacity = capacity
        self.queue = try ReadyQueue()
        self.engine = try Engine(configuration: configuration)
    }

    deinit { close() }

    // MARK: - Operations

    /// Submits reads (the corresponding C function is `io_submit`).
    ///
    /// - Returns: How many were accepted, in order. Fewer than given means the context is full or request
    ///   number *returned* was refused; resubmit it to get its error, as with `io_submit`.
    /// - Throws: The first request's error if none was accepted: ``BufferedAIOError/Code/wouldBlock``
    ///   when the context is full, ``BufferedAIOError/Code/contextClosed`` after ``close()``, or a validation
    ///   error naming the file (negative offset, overflowing range, bad or write-only descriptor,
    ///   directory, buffer smaller than the length).
    @discardableResult
    public func submit(_ requests: some Sequence<ReadRequest>) throws(BufferedAIOError) -> Int {
        try submit(requests, checked: nil)
    }

    /// ``submit(_:)`` of reads of one descriptor whose fstat and status flags the caller already has.
    package func submit(
        _ requests: some Sequence<ReadRequest>, checked: FileFacts?
    ) throws(BufferedAIOError) -> Int {
        var accepted = 0
        for read in requests {
            do throws(BufferedAIOError) {
                try submitOne(read, checked: checked)
                accepted += 1
            } catch {
                if accepted == 0 { throw error }
                return accepted
            }
        }
        return accepted
    }

    private func submitOne(_ read: ReadRequest, checked: FileFacts?) throws(BufferedAIOError) {
        try queue.reserve(capacity: capacity)
        do {
            let prepared = try engine.prepare(read)
            if let count = prepared.copiedAll {
                // A cached read: its event is all that is left of it.
                queue.deliverCopied(IOEvent(tag: read.tag, result: .success(count)))
            } else if case .ready(let request) = try engine.start(prepared, sink: queue, checked: checked) {
                // A read that finished in the slow path was queued by accept, in the lock that tracked it.
                queue.deliver([request])
            }
        } catch {
            queue.unreserve()
            throw error
        }
    }

    /// Submits one read; see ``submit(_:)``.
    public func submit(_ request: ReadRequest) throws(BufferedAIOError) {
        try submitOne(request, checked: nil)
    }

    /// Waits for completed reads and returns their events (the corresponding C function is
    /// `io_getevents`).
    ///
    /// The final copy of each read happens here, in the caller's thread, with `preadv2(RWF_NOWAIT)`; if the
    /// pages were evicted since the poller saw them, the read goes back to the poller, and after
    /// ``EngineConfiguration/maximumRearms`` such returns it is read with a blocking pread, so data is
    /// always correct.
    ///
    /// - Parameters:
    ///   - minimum: Wait until at least this many events are ready (0 returns at once).
    ///   - maximum: Return at most this many.
    ///   - timeout: The longest wait; nil waits until `minimum` events arrive or the context is closed.
    /// - Returns: Between 0 and `maximum` events; fewer than `minimum` only if the timeout passed or the
    ///   context was closed while waiting.
    /// - Throws: ``BufferedAIOError/Code/invalidArgument`` if `minimum < 0`, `maximum < 0` or
    ///   `minimum > maximum`; ``BufferedAIOError/Code/contextClosed`` if the context is closed and no event was
    ///   collected.
    public func getEvents(minimum: Int, maximum: Int, timeout: Duration? = nil) throws(BufferedAIOError) -> [IOEvent] {
        var events: [IOEvent] = []
        try getEvents(minimum: minimum, maximum: maximum, timeout: timeout, into: &events)
        return events
    }

    /// ``getEvents(minimum:maximum:timeout:)`` into an array the caller keeps, so a loop that reaps one
    /// event at a time allocates nothing: `events` is emptied (keeping its capacity) and filled.
    public func getEvents(
        minimum: Int, maximum: Int, timeout: Duration? = nil, into events: inout [IOEvent]
    ) throws(BufferedAIOError) {
        events.removeAll(keepingCapacity: true)
        guard minimum >= 0, maximum >= 0, minimum <= maximum else {
            throw BufferedAIOError(
                .invalidArgument, "getEvents(minimum: \(minimum), maximum: \(maximum)) needs 0 <= minimum <= maximum",
                errno: .invalidArgument)
        }
        guard maximum > 0 else { return }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        // Entering, taking, retiring and leaving share locks where they can: on a cached read the queue's
        // locks are most of what the context adds to the preadv2.
        // Events of cached reads come straight from the queue; delivered requests need the reaper's copy.
        var batch: [Request]
        switch queue.enterWaiter(taking: maximum, minimum: minimum, into: &events) {
        case .closed: throw BufferedAIOError(.contextClosed, "the context is closed", errno: .invalidArgument)
        case .done:
            engine.counters.completed.add(events.count)
            return
        case .entered(let taken): batch = taken
        }
        engine.counters.completed.add(events.count)
        var left = false
        defer { if !left { queue.leaveWaiter() } }
        while true {
            var allReaped = true
            for request in batch {
                if engine.reap(request) {
                    events.append(request.event)
                } else {
                    allReaped = false
                }
            }
            left = events.count >= minimum || events.count == maximum
            queue.retire(batch, allReaped: allReaped, leaving: left)
            if left { return }
            var remaining: Duration? = nil
            if let deadline {
                remaining = deadline - ContinuousClock.now
                if remaining! <= .zero { return }
            } else if engine.configuration.reaperWaitsInRead, let claimed = queue.claimPending() {
                // Nothing is ready and the caller will wait as long as it takes: wait inside one pending
                // read's pread, which wakes the moment its I/O ends, instead of for the poller's next pass.
                engine.reapBlocking(claimed)
                events.append(claimed.event)
                left = events.count >= minimum || events.count == maximum
                queue.retire([claimed], allReaped: true, leaving: left)
                if left { return }
                guard let next = take(maximum - events.count, into: &events) else { return }
                batch = next
                continue
            }
            queue.waitForReady(timeout: remaining)
            guard let next = take(maximum - events.count, into: &events) else { return }
            batch = next
        }
    }

    /// Takes ready work for getEvents, counting the cached reads' events it moves as completed.
    private func take(_ count: Int, into events: inout [IOEvent]) -> [Request]? {
        let before = events.count
        defer { engine.counters.completed.add(events.count - before) }
        return queue.take(count, into: &events)
    }

    /// Cancels the pending read with `tag` (the corresponding C function is `io_cancel`).
    ///
    /// A buffered read still waiting for its pages is cancelled: its event arrives with
    /// ``BufferedAIOError/Code/cancelled`` and its buffer is not written again. Reads already complete,
    /// and direct reads the kernel is doing, cannot be cancelled (the kernel's io_cancel returns EINVAL
    /// for file reads too); their events arrive as usual.
    ///
    /// - Returns: Whether a read was cancelled.
    @discardableResult
    public func cancel(tag: UInt64) -> Bool {
        guard let request = queue.cancel(tag: tag) else { return false }
        engine.counters.cancelled.add(1)
        queue.deliver([request])
        return true
    }

    /// Closes the context (the corresponding C function is `io_destroy`): stops the poller thread,
    /// completes every pending read as cancelled, waits for direct reads the kernel is doing (so no buffer
    /// is written after this returns), wakes every thread waiting in ``getEvents(minimum:maximum:timeout:)``
    /// and closes the eventfd. Undelivered events are discarded, as io_destroy discards them. Idempotent.
    public func close() {
        guard queue.markClosed() else { return }
        engine.shutdown()
        queue.finishClosing()
    }

    /// An eventfd that is readable while events are ready, for an epoll or poll loop (like
    /// `io_set_eventfd`); -1 after ``close()``.
    public var eventDescriptor: Int32 { queue.eventDescriptor }

    /// What the engine has done so far.
    public var statistics: EngineStatistics { engine.counters.snapshot() }

    /// Requests submitted and not yet returned.
    public var inFlight: Int { queue.inFlightCount }

    /// The name of this context's poller thread, as /proc/self/task/*/comm shows it (for tests).
    package var pollerThreadName: String { engine.threadName }

    /// Keeps the engine's `count` most recently used file mappings (its mincore windows) alive between
    /// requests until ``close()``, instead of unmapping a file when its last request finishes. For libbaio,
    /// whose callers submit one read at a time by descriptor.
    package func keepRecentMappings(_ count: Int) {
        engine.mappings.keepRecent(count)
    }

    /// Calls `handler` (on the poller thread, or the submitting thread for inline completions) each time
    /// events become ready; it must not block. For bridges such as libbaio that signal a caller's eventfd.
    package func setReadyNotification(_ handler: @escaping @Sendable () -> Void) {
        let box = ReadyHandler(handler)
        queue.notification.withLock { $0 = box }
        queue.hasNotification.store(true, ordering: .releasing)
    }
}
