// This file owns the engine's counters: what a user reads to see what the engine did.
import Synchronization

/// A snapshot of what an engine has done since it started.
public struct EngineStatistics: Sendable, Hashable, CustomStringConvertible {
    /// Requests accepted by `submit`.
    public var submitted = 0
    /// Requests whose data was all cached, copied inside `submit` with no wait.
    public var completedInline = 0
    /// Requests whose events were delivered (inline, reaped, failed or cancelled).
    public var completed = 0
    /// Requests cancelled before completion.
    public var cancelled = 0
    /// Pages found resident when a request was submitted.
    public var pagesFoundResident = 0
    /// Pages found missing when a request was submitted (the references the requests held).
    public var pagesFoundMissing = 0
    /// Bytes handed to `posix_fadvise(WILLNEED)`/`readahead(2)`.
    public var readaheadBytes = 0
    /// Bytes whose read was started by the `RWF_NOWAIT` miss itself (Linux 6.12 and later).
    public var nowaitStartedBytes = 0
    /// Passes of the completion poller over its pending requests.
    public var pollPasses = 0
    /// Residency probes (mincore or RWF_NOWAIT calls) the poller made.
    public var pollProbes = 0
    /// Requests sent back to the poller because their pages were evicted between completion and reap.
    public var rearms = 0
    /// Readahead issued again for requests that made no progress for a stall timeout.
    public var stalls = 0
    /// Blocking preads the reaper did as the safety net.
    public var blockingReads = 0
    /// Reads a reaper with nothing ready took from the poller and waited for in pread
    /// (`EngineConfiguration.reaperWaitsInRead`, SPI).
    public var reaperWaits = 0
    /// Times the poller waited for a lone pending read in a one-byte blocking pread
    /// (`EngineConfiguration.pollerWaitsForLoneRead`, SPI): about one per missing page or readahead window of
    /// such reads, never a loop.
    public var loneReadWaits = 0
    /// Reads done through O_DIRECT and libaio.
    public var directReads = 0
    /// Direct or automatic reads that fell back to the buffered path (no O_DIRECT descriptor, refused
    /// alignment, a filesystem without O_DIRECT).
    public var directFallbacks = 0

    /// All counters zero.
    public init() {}

    /// Every counter as `name=value`, on one line.
    public var description: String {
        """
        submitted=\(submitted) completed=\(completed) inline=\(completedInline) cancelled=\(cancelled) \
        pagesResident=\(pagesFoundResident) pagesMissing=\(pagesFoundMissing) \
        readaheadBytes=\(readaheadBytes) nowaitStartedBytes=\(nowaitStartedBytes) \
        pollPasses=\(pollPasses) pollProbes=\(pollProbes) rearms=\(rearms) stalls=\(stalls) \
        blockingReads=\(blockingReads) reaperWaits=\(reaperWaits) loneReadWaits=\(loneReadWaits) directReads=\(directReads) directFallbacks=\(directFallbacks)
        """
    }
}

/// The live counters behind ``EngineStatistics``. Relaxed atomics: each is an independent tally and no
/// reader infers anything about memory from its value.
final class StatisticsCounters: Sendable {
    let submitted = Atomic<Int>(0)
    let completedInline = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let cancelled = Atomic<Int>(0)
    let pagesFoundResident = Atomic<Int>(0)
    let pagesFoundMissing = Atomic<Int>(0)
    let readaheadBytes = Atomic<Int>(0)
    let nowaitStartedBytes = Atomic<Int>(0)
    let pollPasses = Atomic<Int>(0)
    let pollProbes = Atomic<Int>(0)
    let rearms = Atomic<Int>(0)
    let stalls = Atomic<Int>(0)
    let blockingReads = Atomic<Int>(0)
    let reaperWaits = Atomic<Int>(0)
    let loneReadWaits = Atomic<Int>(0)
    let directReads = Atomic<Int>(0)
    let directFallbacks = Atomic<Int>(0)

    func snapshot() -> EngineStatistics {
        var s = EngineStatistics()
        s.submitted = submitted.load(ordering: .relaxed)
        s.completedInline = completedInline.load(ordering: .relaxed)
        s.completed = completed.load(ordering: .relaxed)
        s.cancelled = cancelled.load(ordering: .relaxed)
        s.pagesFoundResident = pagesFoundResident.load(ordering: .relaxed)
        s.pagesFoundMissing = pagesFoundMissing.load(ordering: .relaxed)
        s.readaheadBytes = readaheadBytes.load(ordering: .relaxed)
        s.nowaitStartedBytes = nowaitStartedBytes.load(ordering: .relaxed)
        s.pollPasses = pollPasses.load(ordering: .relaxed)
        s.pollProbes = pollProbes.load(ordering: .relaxed)
        s.rearms = rearms.load(ordering: .relaxed)
        s.stalls = stalls.load(ordering: .relaxed)
        s.blockingReads = blockingReads.load(ordering: .relaxed)
        s.reaperWaits = reaperWaits.load(ordering: .relaxed)
        s.loneReadWaits = loneReadWaits.load(ordering: .relaxed)
        s.directReads = directReads.load(ordering: .relaxed)
        s.directFallbacks = directFallbacks.load(ordering: .relaxed)
        return s
    }
}

extension Atomic where Value == Int {
    @inline(__always)
    func add(_ amount: Int) {
        if amount != 0 { wrappingAdd(amount, ordering: .relaxed) }
    }
}
