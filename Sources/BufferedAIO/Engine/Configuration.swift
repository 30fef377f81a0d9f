// This file owns the engine's tunables, each with the default we measured and why.

/// How a read reaches the data.
public enum ReadMode: Sendable, Hashable {
    /// Through the page cache: residency-tracked readahead, then a copy in the reaper. The default.
    case buffered
    /// Around the page cache: O_DIRECT through libaio, with alignment handled by bounce buffers.
    case direct
    /// Direct for large reads of data that is not cached, buffered otherwise; see
    /// ``EngineConfiguration/automaticDirectThreshold``.
    case automatic
}

/// The engine's policies. The defaults suit a local SSD or virtio disk; every field says what it trades.
///
/// Switches that exist to measure one design choice against another (which readahead call, which probe,
/// the two blocking-wait shortcuts) are SPI: `@_spi(Experiments) import BufferedAIO` reaches them, so a
/// benchmark can, while the public API promises only the tunables a deployment should touch.
public struct EngineConfiguration: Sendable, Hashable {
    /// Bytes that `submit` may copy inline with `preadv2(RWF_NOWAIT)` when they are already cached.
    /// Larger cached requests are finished by the reaper, so one submit never copies unbounded data.
    public var inlineCopyLimit: Int = 1 << 20

    /// Pages the poller may probe in one pass over all pending requests, so one huge request cannot
    /// starve the others or make a pass slow.
    public var pollBudgetPages: Int = 4096

    /// The shortest and longest sleep between poll passes while requests are pending. The poller backs
    /// off from the shortest toward a quarter of the observed device latency, never beyond the longest.
    public var minimumPollInterval: Duration = .microseconds(10)
    /// See ``minimumPollInterval``.
    public var maximumPollInterval: Duration = .milliseconds(2)

    /// How long a request may make no progress before its readahead is issued again; after
    /// ``maximumStalls`` such re-issues the reaper reads it with a blocking pread (the safety net), so a
    /// page that never becomes resident (a read error, an eviction) cannot hang the request.
    public var stallTimeout: Duration = .milliseconds(250)
    /// See ``stallTimeout``.
    public var maximumStalls: Int = 3

    /// How often the reaper may send a request back to the poller because its pages were evicted between
    /// completion and reap, before it falls back to a blocking pread.
    public var maximumRearms: Int = 2

    /// When `IOContext.getEvents` has nothing ready and no timeout, the calling thread takes one pending
    /// buffered read from the poller and waits for it in a blocking pread, which wakes the moment the I/O
    /// ends, rather than sleeping until the poller's next pass notices some read. It lowers latency most at
    /// small queue depths; the thread would have blocked anyway.
    @_spi(Experiments) public var reaperWaitsInRead: Bool = true

    /// When one buffered read is pending and the depth has stayed at one for a few device latencies (the
    /// async API, one await at a time), the poller waits for that read's next missing page in a one-byte
    /// blocking pread instead of polling, so the read completes the moment its I/O ends. A read submitted
    /// meanwhile waits at most that one I/O for the poller to notice it (its own I/O has already started).
    @_spi(Experiments) public var pollerWaitsForLoneRead: Bool = true

    /// In ``ReadMode/automatic``, reads at least this long whose first page is not cached go direct.
    public var automaticDirectThreshold: Int = 1 << 20

    /// The largest range given to one `posix_fadvise(WILLNEED)` call. The kernel silently drops what one
    /// call asks beyond about one readahead window, so ranges are split; the device's own window caps it too.
    public var readaheadChunkLimit: Int = 2 << 20

    /// How many files' mincore mappings stay alive after their last request, until shutdown. At queue depth
    /// 1 the one request holding a file's mapping finishes before the next is submitted, so without this
    /// every read would mmap and munmap the file (a TLB shootdown each). The price: a file deleted while
    /// its mapping is kept holds its disk space until `recentMappings` other files have been read or the
    /// engine shuts down. 0 keeps none.
    public var recentMappings: Int = 4

    /// The largest bounce buffer a direct read of unaligned data uses; longer reads go in chunks.
    public var directBounceLimit: Int = 1 << 20

    /// Which syscall starts readahead for missing pages.
    @_spi(Experiments) public var readaheadCall: ReadaheadCall = .fadvise

    /// How pending pages are checked.
    @_spi(Experiments) public var residencyProbe: ResidencyProbePolicy = .automatic

    /// The defaults described on each property.
    public init() {}
}

/// The syscall that starts reading missing pages into the cache. Both reach the same kernel path
/// (`force_page_cache_ra`); the choice is measured in docs/benchmarks.md.
@_spi(Experiments) public enum ReadaheadCall: Sendable, Hashable {
    /// `posix_fadvise(POSIX_FADV_WILLNEED)`.
    case fadvise
    /// `readahead(2)`.
    case readahead
}

/// How the engine learns that pages are resident.
@_spi(Experiments) public enum ResidencyProbePolicy: Sendable, Hashable {
    /// mincore where the kernel tells the caller the truth (the caller owns or may write the file),
    /// `preadv2(RWF_NOWAIT)` probes elsewhere.
    case automatic
    /// `preadv2(RWF_NOWAIT)` probes only: accurate for every caller, costs a copy into a scratch buffer.
    case nowait
}
