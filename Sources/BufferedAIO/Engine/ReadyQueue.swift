// This file owns `ReadyQueue`, the context's side of completion: the requests in flight, the ready ones the
// reaper (IOContext.getEvents) drains, the events of reads that finished inside submit, and the eventfd
// that says they are there.
import Glibc
import Synchronization

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
        fd = try makeEventFD()
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
            if s.closed { return BufferedAIOError(.contextClosed, "the context is closed", errno: .invalidArgument) }
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
                if request.handle(.wasClaimedByReaper) == .readBlocking { return request }
            }
            return nil
        }
    }

    func cancel(tag: UInt64) -> Request? {
        state.withLock { s in
            for request in s.inFlight.values where request.tag == tag && request.direct == nil {
                if request.handle(.didCancel) == .deliverCancellation { return request }
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
        while state.withLock({ $0.waiters }) > 0 { system_sched_yield() }
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
