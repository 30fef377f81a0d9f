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
    ///   when the context is full, ``BufferedAIOError/Code/closed`` after ``close()``, or a validation
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
            switch try engine.submitFast(read) {
            case .copied(let count):
                // A cached read: its event is all that is left of it.
                queue.deliverCopied(IOEvent(tag: read.tag, result: .success(count)))
            case .slow(let prepared):
                // A read that finished in the slow path was queued by accept, in the lock that tracked it.
                if case .ready(let request) = try engine.submitSlow(prepared, sink: queue, checked: checked) {
                    queue.deliver([request])
                }
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
    ///   `minimum > maximum`; ``BufferedAIOError/Code/closed`` if the context is closed and no event was
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
        case .closed: throw BufferedAIOError(.closed, "the context is closed", errno: .invalidArgument)
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

    /// Cancels the pending read with `tag` (the corresponding C function is `io_cancel`).
    ///
    /// A buffered read still waiting for its pages is cancelled: its event arrives with
    /// ``BufferedAIOError/Code/cancelled`` and its buffer is not written again. Reads already complete,
    /// and direct reads the kernel is doing, cannot be cancelled (the kernel's io_cancel returns EINVAL
    /// for file reads too); their events arrive as usual.
    ///
    /// - Returns: Whether a read was cancelled.
    /// Takes ready work for getEvents, counting the cached reads' events it moves as completed.
    private func take(_ count: Int, into events: inout [IOEvent]) -> [Request]? {
        let before = events.count
        defer { engine.counters.completed.add(events.count - before) }
        return queue.take(count, into: &events)
    }

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
        engine.mappings.keepRecent(0)
        queue.finishClosing()
    }

    /// An eventfd that is readable while events are ready, for an epoll or poll loop (like
    /// `io_set_eventfd`); -1 after ``close()``.
    public var eventDescriptor: Int32 { queue.eventDescriptor }

    /// What the engine has done so far.
    public var statistics: Statistics { engine.counters.snapshot() }

    /// Requests submitted and not yet returned.
    public var inFlight: Int { queue.inFlightCount }

    /// The name of this context's poller thread, as /proc/self/task/*/comm shows it.
    public var pollerThreadName: String { engine.threadName }

    /// Calls `handler` (on the poller thread, or the submitting thread for inline completions) each time
    /// events become ready; it must not block. For bridges such as libbaio that signal a caller's eventfd.
    /// Keeps the engine's `count` most recently used file mappings (its mincore windows) alive between
    /// requests until ``close()``, instead of unmapping a file when its last request finishes. For libbaio,
    /// whose callers submit one read at a time by descriptor.
    package func keepRecentMappings(_ count: Int) {
        engine.mappings.keepRecent(count)
    }

    package func setReadyNotification(_ handler: @escaping @Sendable () -> Void) {
        let box = ReadyHandler(handler)
        queue.notification.withLock { $0 = box }
        queue.hasNotification.store(true, ordering: .releasing)
    }
}

/// The context's side of completion: tracks requests in flight and queues the ready ones for the reaper.
/// Requests hold this, not the context, so a context can be freed with reads still referenced.
final class ReadyQueue: CompletionSink {
    struct State {
        var ready = FrontQueue<Request>()
        /// Events of reads that finished inside submit, with no request object behind them.
        var copied = FrontQueue<IOEvent>()
        var inFlight: [UInt64: Request] = [:]
        var reservations = 0
        var closed = false
        var waiters = 0
        /// Threads blocked in ``waitForReady(timeout:)``.
        var sleepers = 0
        /// Someone asked for the eventfd (an epoll loop), so it must track the queue at all times.
        var externalObserver = false
        /// The eventfd has been written since it was last drained.
        var signalled = false
        var readyCount: Int { ready.count + copied.count }
        /// Submitted and not yet reaped: what the capacity bounds.
        var outstanding: Int { inFlight.count + reservations + copied.count }

        mutating func drainEventFDIfEmpty(_ fd: Int32) {
            if readyCount == 0 && signalled {
                system_eventfd_drain(fd)
                signalled = false
            }
        }

        /// Moves up to `count` events of reads that finished inside submit into `events`, then takes
        /// delivered requests for the rest of `count`.
        mutating func take(_ count: Int, fd: Int32, into events: inout [IOEvent]) -> [Request] {
            let before = events.count
            copied.take(count) { events.append(contentsOf: $0) }
            var batch: [Request] = []
            ready.take(count - (events.count - before)) { batch = Array($0) }
            drainEventFDIfEmpty(fd)
            return batch
        }

        /// The eventfd is written only when someone could be waiting on it: a reaper asleep in getEvents
        /// or a caller that took the descriptor. A busy caller that reaps what it submitted makes no
        /// eventfd syscalls at all.
        mutating func signalIfWatched(_ fd: Int32) {
            if !signalled && readyCount > 0 && (sleepers > 0 || externalObserver) {
                system_eventfd_signal(fd)
                signalled = true
            }
        }
    }

    let state = Mutex(State())
    let notification = Mutex<ReadyHandler?>(nil)
    /// Lets delivery skip the notification's lock when nobody set one (the common case).
    let hasNotification = Atomic<Bool>(false)
    private let fd: Int32
    private let fdOpen = Atomic<Bool>(true)

    init() throws(BufferedAIOError) {
        fd = system_eventfd()
        guard fd >= 0 else {
            throw BufferedAIOError(.systemResource, "eventfd failed", syscall: "eventfd", errno: Errno(rawValue: errno))
        }
    }

    deinit { finishClosing() }

    var eventDescriptor: Int32 {
        state.withLock { s in
            s.externalObserver = true
            s.signalIfWatched(fd)
        }
        return fdOpen.load(ordering: .acquiring) ? fd : -1
    }
    var inFlightCount: Int { state.withLock { $0.inFlight.count + $0.copied.count } }

    func reserve(capacity: Int) throws(BufferedAIOError) {
        let result: BufferedAIOError? = state.withLock { s in
            if s.closed { return BufferedAIOError(.closed, "the context is closed", errno: .invalidArgument) }
            if s.outstanding >= capacity {
                return BufferedAIOError(
                    .wouldBlock, "the context is full (\(capacity) reads in flight): reap events first",
                    errno: .resourceTemporarilyUnavailable)
            }
            s.reservations += 1
            return nil
        }
        if let result { throw result }
    }

    func unreserve() { state.withLock { $0.reservations -= 1 } }

    /// Queues the event of a read that finished inside submit, in place of its reservation.
    func deliverCopied(_ event: IOEvent) {
        let delivered = state.withLock { s in
            s.reservations -= 1
            guard !s.closed else { return false }
            s.copied.append(event)
            s.signalIfWatched(fd)
            return true
        }
        if delivered { notify() }
    }

    /// Tracks the request, and queues it at once if it finished inside submit.
    func accept(_ request: Request) {
        let finished = request.state == .finished
        let delivered = state.withLock { s in
            s.reservations -= 1
            s.inFlight[request.serial] = request
            guard finished && !s.closed else { return false }
            s.ready.append(request)
            s.signalIfWatched(fd)
            return true
        }
        if delivered { notify() }
    }

    private func notify() {
        guard hasNotification.load(ordering: .acquiring) else { return }
        if let handler = notification.withLock({ $0 }) { handler.call() }
    }

    func deliver(_ batch: [Request]) {
        let delivered = state.withLock { s in
            guard !s.closed else { return false }
            s.ready.append(contentsOf: batch)
            // Written under the lock with the queue change, so "readable" and "non-empty" never disagree.
            s.signalIfWatched(fd)
            return true
        }
        if delivered { notify() }
    }

    /// Up to `count` ready requests; nil once closed.
    func take(_ count: Int, into events: inout [IOEvent]) -> [Request]? {
        state.withLock { s in
            if s.closed { return nil }
            return s.take(count, fd: fd, into: &events)
        }
    }

    /// Forgets the reaped requests of `batch` (all of them, or those no longer waiting for the poller when
    /// some went back to it), and leaves the waiters in the same lock when the caller is done.
    func retire(_ batch: [Request], allReaped: Bool, leaving: Bool) {
        guard !batch.isEmpty || leaving else { return }
        state.withLock { s in
            for request in batch where allReaped || request.state == .finished || request.state == .cancelled {
                s.inFlight.removeValue(forKey: request.serial)
            }
            if leaving { s.waiters -= 1 }
        }
    }

    /// Takes a buffered read still waiting for its pages away from the poller, for a reaper that would
    /// otherwise sleep.
    func claimPending() -> Request? {
        state.withLock { s in
            for request in s.inFlight.values where request.direct == nil && request.fd >= 0 {
                if request.transition(from: .pending, to: .ready) { return request }
            }
            return nil
        }
    }

    func cancel(tag: UInt64) -> Request? {
        state.withLock { s in
            for request in s.inFlight.values where request.tag == tag && request.direct == nil {
                if request.transition(from: .pending, to: .cancelled) { return request }
            }
            return nil
        }
    }

    /// Sleeps until events are ready, the context closes or `timeout` passes. Registers as a sleeper
    /// and re-checks the queue under the lock first, so a delivery cannot slip in unsignalled.
    func waitForReady(timeout: Duration?) {
        let sleep = state.withLock { s in
            if s.readyCount > 0 || s.closed { return false }
            s.sleepers += 1
            return true
        }
        guard sleep else { return }
        _ = system_ppoll_readable(fd, timeout: timeout)
        state.withLock { $0.sleepers -= 1 }
    }

    enum Entry {
        case closed
        /// The events taken already satisfy the caller: it returns without entering, so without a second
        /// lock to leave (most of a cached read's getEvents).
        case done
        case entered([Request])
    }

    /// Takes up to `count` ready events and requests, entering as a waiter unless the events alone reach
    /// `minimum`.
    func enterWaiter(taking count: Int, minimum: Int, into events: inout [IOEvent]) -> Entry {
        state.withLock { s in
            if s.closed { return .closed }
            let batch = s.take(count, fd: fd, into: &events)
            if batch.isEmpty && events.count >= minimum { return .done }
            s.waiters += 1
            return .entered(batch)
        }
    }

    func leaveWaiter() { state.withLock { $0.waiters -= 1 } }

    /// Returns false if already closed.
    func markClosed() -> Bool {
        state.withLock { s in
            if s.closed { return false }
            s.closed = true
            return true
        }
    }

    /// Drops every request, wakes the waiters, waits for them to leave, and closes the eventfd.
    func finishClosing() {
        let dropped = state.withLock { s in
            s.closed = true
            defer {
                s.ready = FrontQueue()
                s.copied = FrontQueue()
                s.inFlight.removeAll()
            }
            return (s.ready, s.inFlight)
        }
        _ = dropped
        guard fdOpen.load(ordering: .acquiring) else { return }
        system_eventfd_signal(fd)
        // Waiters leave promptly: each wakes from ppoll on the now-readable eventfd and sees `closed`.
        while state.withLock({ $0.waiters }) > 0 { sched_yield() }
        if fdOpen.exchange(false, ordering: .acquiringAndReleasing) { _ = system_close(fd) }
    }
}

/// The ready notification, boxed. A closure kept straight in a generic Mutex is re-wrapped in two
/// reabstraction thunks by every `withLock` that reads it (an inout access converts it out and back), so a
/// handler read once per delivery grew a chain of thunks without end: under libbaio, fio's thread and the
/// poller spent about 30 % of their samples calling down that chain (perf record of fio QD32).
final class ReadyHandler: Sendable {
    let call: @Sendable () -> Void
    init(_ call: @escaping @Sendable () -> Void) { self.call = call }
}

/// An array consumed from the front, without moving the rest on every take.
struct FrontQueue<Element> {
    private var items: [Element] = []
    private var head = 0

    var count: Int { items.count - head }

    mutating func append(_ item: Element) { items.append(item) }

    mutating func append(contentsOf more: [Element]) { items.append(contentsOf: more) }

    /// Hands up to `limit` elements from the front to `body`, then forgets them.
    mutating func take(_ limit: Int, _ body: (ArraySlice<Element>) -> Void) {
        let n = min(limit, count)
        guard n > 0 else { return }
        body(items[head..<head + n])
        head += n
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 1024 {
            items.removeFirst(head)
            head = 0
        }
    }
}
