// This file owns the completion poller: one thread that drops requests' page references as pages become
// resident (stages 2 and 3 of the 2011 proposal), in batches, with a per-pass budget and an adaptive
// back-off, and that also drives the libaio context of the direct path.
import CBufferedAIO
import Glibc
import Synchronization

struct Poller {
    let engine: Engine
    var active: [Request] = []
    var direct: DirectIO
    /// Where RWF_NOWAIT probes copy to: the poller never writes a caller's buffer for buffered reads.
    let scratch: UnsafeMutableRawPointer
    let scratchLength = 256 << 10
    /// Buffers every pass reuses, so a pass allocates nothing once they have grown: what the inbox held
    /// (swapped out under its lock, leaving an empty buffer with capacity for the submitters), and the
    /// requests a pass keeps (those the budget did not reach, then those probed).
    var taken: [Request] = []
    var unprobed: [Request] = []
    var probed: [Request] = []
    /// The configured poll bounds and stall timeout in nanoseconds. The poller's time arithmetic is done
    /// in integers: the standard library's generic `Duration * Int` and `Duration / Int` go through
    /// _Int128(exactly:) and cost about 500 instructions a call (callgrind), and the poller made several
    /// per pass and one per pending request per pass (the stall timeout): 15 % of its instructions.
    let minimumPoll: Int
    let maximumPoll: Int
    let stallTimeout: Int

    init(engine: Engine) {
        self.engine = engine
        self.direct = DirectIO(engine: engine)
        self.scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchLength, alignment: systemPageSize)
        self.minimumPoll = Self.nanoseconds(engine.configuration.minimumPollInterval)
        self.maximumPoll = Self.nanoseconds(engine.configuration.maximumPollInterval)
        self.stallTimeout = Self.nanoseconds(engine.configuration.stallTimeout)
    }

    /// `duration` in nanoseconds, between 0 and about 4.5 years (Int.max / 64), so that the few small
    /// multiples the poller takes of a configured bound cannot overflow.
    static func nanoseconds(_ duration: Duration) -> Int {
        let limit = Int.max / 64
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        guard seconds < Int64(limit / 1_000_000_000) else { return limit }
        return Int(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    mutating func run() {
        defer { scratch.deallocate() }
        var interval = minimumPoll  // nanoseconds
        var idleSince: ContinuousClock.Instant? = nil
        // When two or more reads were last pending together: a caller at depth 1 has none recently.
        var lastDeep = ContinuousClock.now
        // Where the poller last waited in a lone read's pread: never twice at one spot (see below).
        var lastLoneWait: LoneWait? = nil
        while true {
            // A swap, not a copy: copying the array out and emptying it "keeping capacity" allocated a new
            // buffer on every loop, because the copy still shared the old one. `taken` is moved out first,
            // so the buffer the submitters get is not shared (their appends would copy it).
            var incoming: [Request] = []
            swap(&incoming, &taken)
            let stopping = engine.inbox.withLock { inbox in
                swap(&inbox.requests, &incoming)
                return inbox.stopping
            }
            var ready: [Request] = []
            for request in incoming {
                if request.direct != nil {
                    direct.submit(request, buffered: &active, ready: &ready)
                } else {
                    active.append(request)
                }
            }
            incoming.removeAll(keepingCapacity: true)
            swap(&incoming, &taken)
            if stopping {
                Self.deliverGrouped(ready)
                break
            }

            let now = ContinuousClock.now
            ready += pass(now: now)
            direct.collect(into: &ready, buffered: &active)
            deliver(ready, now: now)
            engine.pollerPending.store(active.count + direct.inFlight.count, ordering: .relaxed)
            if active.count + direct.inFlight.count > 1 { lastDeep = now }

            if active.isEmpty && direct.inFlight.isEmpty {
                // A busy caller resubmits within microseconds of reaping. Waking a sleeping thread costs
                // the submitter an eventfd write and a cross-CPU interrupt (a VM exit here), so linger on
                // short timed sleeps for about one device latency before sleeping without a timeout.
                if idleSince == nil { idleSince = now }
                let ceiling = backoffCeiling()
                if now - idleSince! < .nanoseconds(ceiling * 4) {
                    nap(.nanoseconds(ceiling))
                    continue
                }
                sleepUntilWoken()
                idleSince = nil
                interval = minimumPoll
            } else if now - lastDeep > .nanoseconds(backoffCeiling() * 16), let lone = loneReadWait(),
                lone != lastLoneWait
            {
                // At depth 1 a poll pass can only notice the I/O late; a blocking pread of one byte
                // sleeps on the page lock and wakes when the I/O ends. The byte goes to scratch. Only
                // when the depth has stayed at 1 for a while: at depth 4 or 8 a new read submitted while
                // the poller sleeps in the pread would wait for the old one (measured: 15-20 % fewer IOPS).
                // Only once per spot: if the pass after it confirmed nothing there (the file shrank, so the
                // pread returns 0 at once; a read error; a probe that cannot confirm the page), another
                // pread would return at once again and the poller would spin a CPU until the stall path
                // gave up; the timed back-off below takes over until the read moves on.
                idleSince = nil
                lastLoneWait = lone
                engine.counters.loneReadWaits.add(1)
                _ = system_pread(active[0].fd, scratch, 1, lone.offset)
                interval = minimumPoll
            } else {
                idleSince = nil
                // Multiplicative increase while nothing completes, decrease when something does: the
                // interval settles near the gap between completions instead of spinning at the minimum.
                interval = ready.isEmpty ? min(interval * 2, backoffCeiling()) : max(interval / 2, minimumPoll)
                nap(.nanoseconds(interval))
            }
        }
        shutdownPending()
    }

    /// Sleeps until the wake eventfd is written or `timeout` passes. The eventfd is drained only when
    /// ppoll saw it written: after a timeout the read would only return EAGAIN, one syscall per pass for
    /// nothing (an EINTR leaves it set, and the next ppoll returns at once and drains it).
    func nap(_ timeout: Duration?) {
        if system_ppoll_readable(engine.wakeFD, timeout: timeout) { system_eventfd_drain(engine.wakeFD) }
    }

    /// One pass over the pending requests, probing at most the budget's worth of pages. Requests the
    /// budget did not reach go first next pass, so a large request cannot starve the others.
    mutating func pass(now: ContinuousClock.Instant) -> [Request] {
        engine.counters.pollPasses.add(1)
        var ready: [Request] = []
        guard !active.isEmpty else { return ready }
        var budget = Int64(engine.configuration.pollBudgetPages)
        var probes = 0
        let stallTimeout = currentStallTimeout()
        probed.removeAll(keepingCapacity: true)
        unprobed.removeAll(keepingCapacity: true)
        for request in active {
            // Cancelled, or claimed by a reaper that chose to wait in its pread: no longer ours.
            if request.state != .pending { continue }
            guard budget > 0 else {
                unprobed.append(request)
                continue
            }
            let before = request.references
            probes += probe(request, budget: &budget)
            if request.references < before {
                request.lastProgress = now
                request.stalls = 0
            } else if request.references > 0 {
                checkStall(request, now: now, timeout: stallTimeout)
            }
            if request.references == 0 || request.forceBlocking {
                if request.handle(.didBecomeResident) == .deliver { ready.append(request) }
            } else {
                probed.append(request)
            }
        }
        active.removeAll(keepingCapacity: true)
        active.append(contentsOf: unprobed)
        active.append(contentsOf: probed)
        probed.removeAll(keepingCapacity: true)
        unprobed.removeAll(keepingCapacity: true)
        engine.counters.pollProbes.add(probes)
        return ready
    }

    /// Drops the references of pages now resident, in order from the request's first unconfirmed page.
    /// Returns the number of probe syscalls made.
    func probe(_ request: Request, budget: inout Int64) -> Int {
        var calls = 0
        let pageSize = Int64(systemPageSize)
        while budget > 0 && request.runIndex < request.runs.count {
            let run = request.runs[request.runIndex]
            var confirmed: Int64
            switch request.probe {
            case .mincore(let mapping):
                confirmed = mapping.residentPrefix(of: run, limit: budget)
            case .nowait:
                let start = max(run.byteStart, request.offset)
                let end = min(run.byteEnd, request.offset + Int64(request.length))
                let length = Int(min(end - start, Int64(scratchLength), budget * pageSize))
                let count = system_preadv2(request.fd, scratch, length, start, cbaio_RWF_NOWAIT)
                if count < 0 {
                    if errno != EAGAIN { request.forceBlocking = true }  // EIO and such: let pread report it
                    confirmed = 0
                } else if start + Int64(count) >= end {
                    confirmed = run.count
                } else if count < length && reachesEndOfFile(request.fd, start + Int64(count)) {
                    // A short count that stops at end of file: the tail page is resident (it is partial, so a
                    // read through it can never be full), or the file shrank and nothing more will come.
                    // Either way the reaper's read finds EOF there.
                    confirmed = run.count
                } else {
                    // A short count before end of file: the page it stopped in is still missing. (A 0 before
                    // end of file is the 5.9/5.10 RWF_NOWAIT bug; the stall path reads it with pread.)
                    confirmed = PageRun.page(containing: start + Int64(count)) - run.first
                }
            case .none:
                confirmed = run.count
            }
            calls += 1
            budget -= max(confirmed, 1)
            request.references -= confirmed
            if confirmed >= run.count {
                request.runIndex += 1
            } else {
                request.runs[request.runIndex].first += confirmed
                request.runs[request.runIndex].count -= confirmed
                break
            }
        }
        return calls
    }

    /// Whether `position` is at or past the end of the file now. Asked only after a short RWF_NOWAIT count,
    /// which is rare except at the tail: the file's size at submit cannot be trusted, since it may have grown
    /// (then the short count is a real miss) or shrunk since.
    func reachesEndOfFile(_ fd: Int32, _ position: Int64) -> Bool {
        var info = stat()
        return system_fstat(fd, &info) == 0 && position >= Int64(info.st_size)
    }

    /// A request that has made no progress for a stall timeout has its readahead issued again (pages can
    /// be evicted while waiting, or dropped by a capped call); after too many stalls the reaper reads it
    /// with a blocking pread, which also surfaces read errors such as EIO.
    func checkStall(_ request: Request, now: ContinuousClock.Instant, timeout: Duration) {
        guard now - request.lastProgress > timeout else { return }
        engine.counters.stalls.add(1)
        request.stalls += 1
        request.stalled = true
        request.lastProgress = now
        if request.stalls > engine.configuration.maximumStalls {
            request.forceBlocking = true
            return
        }
        var info = stat()
        guard system_fstat(request.fd, &info) == 0, request.runIndex < request.runs.count else { return }
        engine.issueReadahead(fd: request.fd, run: request.runs[request.runIndex], device: UInt64(info.st_dev))
    }

    /// The stall timeout: the configured one, or eight observed latencies (each capped) if longer. Computed
    /// once per pass, not per pending request.
    func currentStallTimeout() -> Duration {
        let latency = min(engine.observedLatency.load(ordering: .relaxed), Self.latencyCeilingNanoseconds)
        return .nanoseconds(max(stallTimeout, latency * 8))
    }

    /// A place the poller may wait in a pread for a lone read: the read and the offset of its next
    /// unconfirmed page.
    struct LoneWait: Equatable {
        let serial: UInt64
        let offset: Int64
    }

    /// The next unconfirmed page of the only pending read, when the poller should wait for it in a pread
    /// (see `EngineConfiguration.pollerWaitsForLoneRead`).
    func loneReadWait() -> LoneWait? {
        guard engine.configuration.pollerWaitsForLoneRead, active.count == 1, direct.inFlight.isEmpty else {
            return nil
        }
        let request = active[0]
        guard request.state == .pending, request.runIndex < request.runs.count else { return nil }
        let offset = max(request.runs[request.runIndex].byteStart, request.offset)
        return LoneWait(serial: request.serial, offset: offset)
    }

    /// The longest sleep while requests are pending, in nanoseconds: a quarter of the observed device
    /// latency, so a completion waits at most about that long to be noticed, within the configured bounds.
    func backoffCeiling() -> Int {
        min(max(engine.observedLatency.load(ordering: .relaxed) / 4, minimumPoll), maximumPoll)
    }

    /// Delivers a pass's ready requests: one call per sink, so an IOContext takes one lock and makes one
    /// wake-up per batch.
    func deliver(_ ready: [Request], now: ContinuousClock.Instant) {
        guard !ready.isEmpty else { return }
        recordLatency(of: ready, now: now)
        Self.deliverGrouped(ready)
    }

    /// The most a latency sample counts for: 100 ms, about ten seeks of a spinning disk. The latency sets
    /// the stall timeout (8x), so unbounded it let slow reads make the next stall slower still: it fed on
    /// itself from 1 s to 10-30 s (issue 12). Capped, a stall is noticed within 800 ms whatever came
    /// before; on a slower device a stall only issues the readahead again, and the blocking safety net
    /// after ``EngineConfiguration/maximumStalls`` of them still returns the right bytes.
    static let latencyCeiling: Duration = .milliseconds(100)
    static let latencyCeilingNanoseconds = 100_000_000

    /// Feeds the observed latency with how long the requests whose pages arrived took. Requests that
    /// stalled or go to the blocking safety net are left out: their time measures the stall timeout, not
    /// the device.
    func recordLatency(of ready: [Request], now: ContinuousClock.Instant) {
        var total: Int64 = 0
        var count: Int64 = 0
        let ceiling = Self.latencyCeiling
        for request in ready where !request.stalled && !request.forceBlocking {
            let (seconds, attoseconds) = min(now - request.submittedAt, ceiling).components
            total += seconds * 1_000_000_000 + attoseconds / 1_000_000_000
            count += 1
        }
        guard count > 0 else { return }
        let sample = Int(total / count)
        let old = engine.observedLatency.load(ordering: .relaxed)
        engine.observedLatency.store(old - old / 8 + sample / 8, ordering: .relaxed)
    }

    /// Delivers each sink its requests in one call, in the order they became ready.
    static func deliverGrouped(_ requests: [Request]) {
        guard let firstSink = requests.first?.sink else { return }
        if requests.allSatisfy({ $0.sink === firstSink }) {
            firstSink.deliver(requests)
            return
        }
        // Several sinks: the async API gives every read its own. Up to a few dozen requests a linear scan
        // of the sinks seen so far is cheaper than a Dictionary, whose hashing, growth and copies cost
        // about 1,500 instructions per read at the async API's QD32 (callgrind, Benchmarks/cost-model).
        if requests.count <= 64 {
            var groups: [(sink: any CompletionSink, requests: [Request])] = []
            groups.reserveCapacity(requests.count)
            for request in requests {
                if let index = groups.firstIndex(where: { $0.sink === request.sink }) {
                    groups[index].requests.append(request)
                } else {
                    groups.append((request.sink, [request]))
                }
            }
            for group in groups { group.sink.deliver(group.requests) }
            return
        }
        var groups: [ObjectIdentifier: [Request]] = [:]
        for request in requests { groups[ObjectIdentifier(request.sink), default: []].append(request) }
        for group in groups.values { group[0].sink.deliver(group) }
    }

    /// Sleeps with no timeout until a submit, a direct completion or shutdown writes the wake eventfd.
    func sleepUntilWoken() {
        let sleep = engine.inbox.withLock { inbox in
            if !inbox.requests.isEmpty || inbox.stopping { return false }
            inbox.pollerIdle = true
            return true
        }
        guard sleep else { return }
        nap(nil)
        engine.inbox.withLock { $0.pollerIdle = false }
    }

    /// Completes everything still pending as cancelled; direct reads are waited for first, because the
    /// kernel may still write their buffers until io_destroy returns.
    mutating func shutdownPending() {
        var cancelled: [Request] = []
        let leftovers = engine.inbox.withLock { inbox in
            defer { inbox.requests.removeAll() }
            return inbox.requests
        }
        for request in active + leftovers + direct.destroy() {
            if request.handle(.didCancel) == .deliverCancellation { cancelled.append(request) }
        }
        active = []
        engine.counters.cancelled.add(cancelled.count)
        Self.deliverGrouped(cancelled)
    }
}
