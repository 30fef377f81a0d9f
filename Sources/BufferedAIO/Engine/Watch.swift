// This file owns the engine's face for a front end that does the final copy itself: libbaio, which hands
// the caller's own iocb to a kernel AIO context once the pages are resident, so that the kernel copies
// from the page cache and posts a genuine event. Stages 1-3 are the engine's as for every read (find the
// missing pages, start them, refcount them in the poller); stage 4 is the listener's.
import Glibc
import Synchronization

/// Told, on the poller thread, which watched reads have every page resident. It must not block for long:
/// it delays every other read's completion.
package protocol ResidencyListener: AnyObject, Sendable {
    func resident(_ reads: [WatchedRead])
}

/// A read the engine watches for a listener.
package struct WatchedRead: Sendable {
    let request: Request

    /// The caller's tag, given to ``ResidencyWatcher/watch(descriptor:facts:offset:length:firstCopy:tag:sink:)``.
    package var tag: UInt64 { request.tag }

    /// The engine's pinned duplicate of the caller's descriptor, open until the read is released: it names
    /// the file the caller submitted even if the caller closed its descriptor and the number was reused.
    package var pinnedDescriptor: Int32 { request.fd }

    /// Whether the read stalled (its pages never became resident within the engine's bounds, or a probe
    /// failed): the final read will block in the kernel, which reports the error (EIO) if there is one.
    package var stalled: Bool { request.forceBlocking }

    /// Withdraws a read still waiting for pages; false if the poller already passed it to the listener.
    package func cancel() -> Bool { request.handle(.didCancel) == .deliverCancellation }

    /// Marks the read done once the listener finished it, for the engine's counters.
    package func finished(_ engine: ResidencyWatcher) {
        request.finish(0)
        engine.engine.counters.completed.add(1)
    }
}

/// What ``ResidencyWatcher/watch(descriptor:facts:offset:length:firstCopy:tag:sink:)`` found.
package enum WatchOutcome: Sendable {
    /// Every page is resident already (or nothing can tell): finish the read now.
    case resident
    /// The missing pages are being read; the listener hears when they are resident.
    case watching(WatchedRead)
}

/// An engine whose reads end at "resident" instead of in a copy.
package final class ResidencyWatcher: Sendable {
    let engine: Engine

    /// Starts the engine's poller thread.
    package init(configuration: EngineConfiguration = EngineConfiguration()) throws(BufferedAIOError) {
        engine = try Engine(configuration: configuration)
        // libbaio's callers read by descriptor, often one read at a time: keep recent mincore windows
        // mapped instead of mapping and unmapping the file per read (a TLB shootdown each time).
        engine.mappings.keepRecent(8)
    }

    /// Stops the poller; reads still watched are dropped (their listener is not called). Idempotent.
    package func shutdown() { engine.shutdown() }

    /// What the engine has done so far.
    package var statistics: EngineStatistics { engine.counters.snapshot() }

    /// Starts the missing pages of a read the caller already validated and probed, and watches them.
    ///
    /// - Parameters:
    ///   - descriptor: The caller's descriptor; the engine pins a duplicate.
    ///   - facts: What fstat and F_GETFL said of it (a readable regular file without O_DIRECT).
    ///   - firstCopy: The caller's RWF_NOWAIT probe of the range: the resident prefix in bytes, or a
    ///     negative errno (-EAGAIN: nothing resident, and on Linux 6.12+ the first page is being read).
    ///   - sink: Where the poller reports this read (one per listener, made by ``sink(for:)``).
    /// - Throws: ``BufferedAIOError/Code/wouldBlock`` when the descriptor cannot be pinned (EMFILE).
    package func watch(
        descriptor: Int32, facts: FileFacts, offset: Int64, length: Int, firstCopy: Int, tag: UInt64,
        sink: ResidencySink
    ) throws(BufferedAIOError) -> WatchOutcome {
        let read = ReadRequest(descriptor: descriptor, offset: offset, into: ResidencySink.noBuffer, tag: tag)
        let prepared = Engine.Prepared(
            read: read, fd: descriptor, directFD: -1, path: nil, pins: Engine.FilePins(),
            length: min(length, Engine.maximumReadCount), firstCopy: firstCopy)
        switch try engine.start(prepared, sink: sink, checked: facts) {
        case .finished, .ready: return .resident
        case .pending(let request): return .watching(WatchedRead(request: request))
        }
    }

    /// The sink that passes this listener's resident reads to it, one batch per poller pass.
    package func sink(for listener: some ResidencyListener) -> ResidencySink { ResidencySink(listener) }
}

/// Adapts the poller's deliveries to a listener: requests delivered as ready go to the listener;
/// cancelled ones (withdrawn, or dropped at shutdown) are the front end's business already. The sink holds
/// its listener weakly: requests hold the sink, and must not keep a destroyed context alive.
package final class ResidencySink: CompletionSink, @unchecked Sendable {
    /// The engine never copies into a watched read's buffer: the listener's kernel does the final copy.
    static var noBuffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: nil, count: 0) }

    // Written once in init; read on the poller thread.
    private weak var listener: (any ResidencyListener)?

    init(_ listener: some ResidencyListener) { self.listener = listener }

    func accept(_ request: Request) {}

    func deliver(_ batch: [Request]) {
        guard let listener else { return }
        let ready = batch.compactMap { $0.state == .ready ? WatchedRead(request: $0) : nil }
        if !ready.isEmpty { listener.resident(ready) }
    }
}
