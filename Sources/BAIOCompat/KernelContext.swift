// This file owns one libbaio context: a real kernel AIO context (io_setup's own handle), the buffered reads
// the engine holds for it while their pages are read ahead, and the final submit that ends each of them.
//
// The final submit: once every page of a held read is resident, the poller thread submits the caller's own
// iocb to the caller's kernel context. The kernel then copies from the page cache and posts a genuine event
// (`obj`, `data`, `res`, the iocb's eventfd), so io_getevents, io_pgetevents, reaping from the ring in user
// space, mremap of the ring, fork and aio-nr accounting are all the kernel's own.
import BufferedAIO
import CBufferedAIO
import Glibc
import Synchronization

final class KernelContext: ResidencyListener, @unchecked Sendable {
    /// A buffered read the engine holds until its pages are resident.
    struct Held: @unchecked Sendable {
        let iocb: UnsafeMutablePointer<iocb>
        /// The iocb as it was at io_submit: what the final submit hands the kernel, whatever the caller's
        /// memory holds by then.
        let submitted: iocb
        /// For IO_CMD_PREADV, a copy of the caller's iovec array: the kernel reads it at submit time, so a
        /// caller may free its own as soon as io_submit returns.
        let vector: UnsafeMutableBufferPointer<iovec>?
        /// A duplicate of the iocb's eventfd (IOCB_FLAG_RESFD), pinned like the file.
        let eventFD: Int32
        var read: WatchedRead?

        func release() {
            vector?.deallocate()
            if eventFD >= 0 { close(eventFD) }
        }
    }

    /// A held read whose pages are resident, on its way to the kernel.
    typealias Resident = (read: WatchedRead, held: Held)

    struct State: @unchecked Sendable {
        var held: [UInt64: Held] = [:]
        /// Resident reads the kernel refused for want of ring slots (EAGAIN): submitted again by the next
        /// caller inside libbaio for this context, or the next poller delivery. No longer in ``held``.
        var backlog: [Resident] = []
        var nextID: UInt64 = 1
        /// How many iocbs the kernel's ring takes: its `nr` less one at first, then what the kernel was
        /// seen to take when it last refused one for want of slots (its per-CPU slot caches keep a few).
        var slots: Int
    }

    /// The handle the program uses: the kernel's, moved if the program mremaps the ring.
    private let currentHandle: Atomic<UInt>
    let owner: pid_t
    /// The engine holds at most this many reads for the context at once: as many as the kernel's ring has
    /// slots for (its `nr` less one; the kernel itself gives io_setup(n) a ring of at least 2n slots).
    let maximumHeld: Int
    let state: Mutex<State>
    /// Taken around every write to a caller's iocb and every final submit, and by io_destroy, which sets it:
    /// once io_destroy has it, nothing is submitted into the context or written to a caller's iocb again.
    let gate = Mutex<Bool>(false)
    let counters = Counters()
    private let engineSink = Mutex<ResidencySink?>(nil)
    /// The address of the same sink once made, read with one atomic load by every held read (the lock cost
    /// two atomic read-modify-writes per read; Benchmarks/cost-model). `engineSink` keeps the sink alive
    /// as long as this context, so the unretained address stays valid (an AtomicLazyReference would cost
    /// more than the lock: its load is unspecialised generic code).
    private let madeSink = Atomic<UInt>(0)

    final class Counters: Sendable {
        let engineReads = Atomic<Int>(0)
        let probeMissed = Atomic<Int>(0)
        let cachedReads = Atomic<Int>(0)
        let kernelIocbs = Atomic<Int>(0)
        let finalSubmits = Atomic<Int>(0)
        let finalRetries = Atomic<Int>(0)
        let pinnedDescriptorUsed = Atomic<Int>(0)
        let iocbRestored = Atomic<Int>(0)
        let lost = Atomic<Int>(0)
    }

    /// The ring's `nr`: the most iocbs io_submit takes in one call.
    let ringSize: Int

    init(handle: io_context_t, maximumEvents: Int32) {
        currentHandle = Atomic(UInt(bitPattern: handle))
        ringSize = Self.ringSize(handle)
        owner = getpid()
        maximumHeld = max(1, ringSize - 1)
        state = Mutex(State(slots: maximumHeld))
    }

    var handle: UInt { currentHandle.load(ordering: .acquiring) }
    var kernelHandle: io_context_t { OpaquePointer(bitPattern: handle)! }

    func moveHandle(to new: UInt) { currentHandle.store(new, ordering: .releasing) }

    /// mremap calls in progress on this context's ring (libbaio's mremap counts them).
    let moving = Atomic<Int>(0)

    /// The sink the engine reports this context's reads to, made with the engine.
    func sink(_ watcher: ResidencyWatcher) -> ResidencySink {
        let address = madeSink.load(ordering: .acquiring)
        if address != 0 { return Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: address)!).takeUnretainedValue() }
        return engineSink.withLock { sink in
            if let sink { return sink }
            let made = watcher.sink(for: self)
            sink = made
            madeSink.store(UInt(bitPattern: Unmanaged.passUnretained(made).toOpaque()), ordering: .releasing)
            return made
        }
    }

    // MARK: - Lifecycle

    /// io_destroy's part before the kernel's: no final submit after this returns; held reads are
    /// withdrawn from the engine and their buffers never written (the kernel's own io_destroy then waits for
    /// the I/O it has, as without libbaio).
    func destroy() {
        gate.withLock { $0 = true }
        let (held, backlog) = state.withLock { s in
            defer {
                s.held.removeAll()
                s.backlog.removeAll()
            }
            return (Array(s.held.values), s.backlog)
        }
        // A held read the poller is delivering right now cannot be withdrawn, but its final submit finds
        // the gate closed and drops it.
        for entry in held {
            _ = entry.read?.cancel()
            entry.release()
        }
        for entry in backlog { entry.held.release() }
        report(when: "io_destroy")
    }

    // MARK: - Hold

    /// The kernel refused an iocb, maybe for want of ring slots. If the ring is at least half full of events
    /// the program has not taken, that count is what the ring really holds (the kernel's per-CPU slot caches
    /// keep a few back): a held read must not count on more. With fewer waiting, the slots are held by the
    /// kernel's own I/O in flight (O_DIRECT), which says nothing lasting about the ring, so nothing is learnt.
    func kernelWasFull() {
        let waiting = unreapedEvents
        guard waiting >= maximumHeld / 2 else { return }
        state.withLock { $0.slots = min(maximumHeld, waiting) }
    }

    /// Registers a read before the engine can report it, so a delivery always finds its entry.
    func hold(
        _ iocb: UnsafeMutablePointer<iocb>, vector: UnsafeMutableBufferPointer<iovec>?, eventFD: Int32
    )
        -> UInt64?
    {
        state.withLock { s in
            // The kernel reserves a ring slot per iocb at submit and refuses one when the ring is full; a held
            // read takes its slot only at the final submit, so it is refused here when the events waiting in
            // the ring and the reads already held would fill it.
            guard s.held.count + s.backlog.count + unreapedEvents < s.slots else { return nil }
            let id = s.nextID
            s.nextID += 1
            s.held[id] = Held(iocb: iocb, submitted: iocb.pointee, vector: vector, eventFD: eventFD, read: nil)
            return id
        }
    }

    /// Records the engine's handle on a held read, unless the poller already delivered it.
    func watching(_ id: UInt64, _ read: WatchedRead) {
        state.withLock { s in
            if s.held[id] != nil { s.held[id]!.read = read }
        }
    }

    /// Forgets a held read the engine did not take or found resident at once; returns its entry.
    func unhold(_ id: UInt64) -> Held? {
        state.withLock { $0.held.removeValue(forKey: id) }
    }

    // MARK: - Final submit

    /// The poller's delivery: these reads are resident, submit them to the kernel.
    func resident(_ reads: [WatchedRead]) {
        // Out of `held` before the submit: the kernel may post the event inside io_submit, and the program
        // may reap it and submit again before this thread goes on; the slot is the kernel's by then.
        let entries: [Resident] = state.withLock { s in
            var entries = s.backlog
            s.backlog.removeAll()
            for read in reads {
                if let held = s.held.removeValue(forKey: read.tag) { entries.append((read, held)) }
            }
            return entries
        }
        finish(entries)
    }

    /// Submits the backlog, if any; called by callers inside libbaio for this context.
    func retryBacklog() {
        let backlog = takeBacklog()
        if !backlog.isEmpty { finish(backlog) }
    }

    var hasBacklog: Bool { state.withLock { !$0.backlog.isEmpty } }

    private func takeBacklog() -> [Resident] {
        state.withLock { s in
            defer { s.backlog.removeAll() }
            return s.backlog
        }
    }

    /// Final-submits resident reads in one io_submit, under the gate; after io_destroy they are dropped.
    private func finish(_ entries: [Resident]) {
        guard !entries.isEmpty else { return }
        gate.withLock { destroyed in
            guard !destroyed else {
                for entry in entries { entry.held.release() }
                return
            }
            var start = 0
            while start < entries.count {
                start += submitFrom(entries[start...])
            }
        }
    }

    /// Submits a run of entries; returns how many it dealt with (at least one). io_submit stops at the
    /// first iocb it refuses and says why only when that is the first, so a partial count is followed by
    /// another call that starts at the refused one.
    private func submitFrom(_ entries: ArraySlice<Resident>) -> Int {
        var lent: [Lent] = []
        var list: [UnsafeMutablePointer<iocb>?] = []
        lent.reserveCapacity(entries.count)
        list.reserveCapacity(entries.count)
        for (read, held) in entries {
            lent.append(lend(held, pinned: read.pinnedDescriptor))
            list.append(held.iocb)
        }
        let target = handle
        var accepted = list.withUnsafeMutableBufferPointer {
            cbaio_sys_io_submit(OpaquePointer(bitPattern: target), $0.count, $0.baseAddress)
        }
        if accepted == -Int(EINVAL) {
            // The ring moved (mremap) between reading the handle and the submit: the kernel no longer knows the
            // old address. Once the move is over, once more at the new one.
            while moving.load(ordering: .sequentiallyConsistent) > 0 { sched_yield() }
            if handle != target {
                accepted = list.withUnsafeMutableBufferPointer {
                    cbaio_sys_io_submit(kernelHandle, $0.count, $0.baseAddress)
                }
            }
        }
        for (entry, lent) in zip(entries, lent) { restore(entry.held, lent) }
        if accepted > 0 {
            for entry in entries.prefix(accepted) { completed(entry.read, entry.held) }
            counters.finalSubmits.wrappingAdd(accepted, ordering: .relaxed)
            return accepted
        }
        if accepted == -Int(EAGAIN) {
            // The ring is full of events the program has not reaped: these wait for the next chance.
            counters.finalRetries.wrappingAdd(1, ordering: .relaxed)
            state.withLock { $0.backlog.append(contentsOf: entries) }
            return entries.count
        }
        // Any other refusal means the iocb is no longer what the program submitted (unmapped memory): its
        // event cannot be posted. Counted and reported under BAIO_STATS, never silent.
        counters.lost.wrappingAdd(1, ordering: .relaxed)
        completed(entries.first!.read, entries.first!.held)
        return 1
    }

    private func completed(_ read: WatchedRead, _ held: Held) {
        if let watcher = Registry.startedWatcher { read.finished(watcher) }
        held.release()
    }

    // MARK: - Lending the kernel what it must find in the iocb

    /// A field of a caller's iocb the final submit changed: what libbaio wrote and what the caller had.
    struct Swap<Value> {
        var written: Value
        var original: Value
    }

    /// What the final submit changed in a caller's iocb, to put back after.
    struct Lent {
        var descriptor: Swap<UInt32>?
        var eventFD: Swap<UInt32>?
        var vector: Swap<UInt64>?
    }

    /// Makes the caller's iocb say what it said at io_submit, with the engine's pinned descriptors where the
    /// caller's numbers no longer name the same open files (closed after submit, maybe reused), and the
    /// copied iovec array. An iocb left as it was is not written at all.
    private func lend(_ held: Held, pinned: Int32) -> Lent {
        var lent = Lent()
        var wanted = held.submitted
        wanted.key = 0
        if cbaio_same_open_file(held.submitted.aio_fildes, pinned) != 0 {
            wanted.aio_fildes = pinned
            lent.descriptor = Swap(
                written: UInt32(bitPattern: pinned), original: UInt32(bitPattern: held.submitted.aio_fildes))
            counters.pinnedDescriptorUsed.wrappingAdd(1, ordering: .relaxed)
        }
        if held.eventFD >= 0,
            cbaio_same_open_file(Int32(bitPattern: held.submitted.u.c.resfd), held.eventFD) != 0
        {
            wanted.u.c.resfd = UInt32(bitPattern: held.eventFD)
            lent.eventFD = Swap(written: UInt32(bitPattern: held.eventFD), original: held.submitted.u.c.resfd)
        }
        if let vector = held.vector {
            wanted.u.v.vec = UnsafePointer(vector.baseAddress)
            lent.vector = Swap(
                written: UInt64(UInt(bitPattern: vector.baseAddress)),
                original: UInt64(UInt(bitPattern: held.submitted.u.v.vec)))
        }
        var current = held.iocb.pointee
        current.key = 0
        if !sameBytes(&current, &wanted) {
            if lent.descriptor == nil && lent.eventFD == nil && lent.vector == nil {
                counters.iocbRestored.wrappingAdd(1, ordering: .relaxed)
            }
            held.iocb.pointee = wanted
        }
        return lent
    }

    /// Puts back the caller's own values, each only if it still holds what libbaio lent: a program that
    /// already reused the iocb for a new request (its event may be reaped before this runs) keeps its own.
    private func restore(_ held: Held, _ lent: Lent) {
        let raw = UnsafeMutableRawPointer(held.iocb)
        if let swap = lent.descriptor {
            let field = (raw + IocbOffsets.descriptor).assumingMemoryBound(to: UInt32.self)
            _ = cbaio_cas_u32(field, swap.written, swap.original)
        }
        if let swap = lent.eventFD {
            let field = (raw + IocbOffsets.eventFD).assumingMemoryBound(to: UInt32.self)
            _ = cbaio_cas_u32(field, swap.written, swap.original)
        }
        if let swap = lent.vector {
            let field = (raw + IocbOffsets.vector).assumingMemoryBound(to: UInt64.self)
            _ = cbaio_cas_u64(field, swap.written, swap.original)
        }
    }

    private func sameBytes(_ a: inout iocb, _ b: inout iocb) -> Bool {
        memcmp(&a, &b, MemoryLayout<iocb>.size) == 0
    }

    // MARK: - Statistics

    func report(when moment: String) {
        guard StatisticsReport.destination != nil else { return }
        let c = counters
        StatisticsReport.write(
            "libbaio: pid \(owner) context 0x\(String(handle, radix: 16)) at \(moment): "
                + "engineReads=\(c.engineReads.load(ordering: .relaxed)) "
                + "probeMissed=\(c.probeMissed.load(ordering: .relaxed)) "
                + "cachedReads=\(c.cachedReads.load(ordering: .relaxed)) "
                + "kernelIocbs=\(c.kernelIocbs.load(ordering: .relaxed)) "
                + "finalSubmits=\(c.finalSubmits.load(ordering: .relaxed)) "
                + "finalRetries=\(c.finalRetries.load(ordering: .relaxed)) "
                + "pinnedDescriptorUsed=\(c.pinnedDescriptorUsed.load(ordering: .relaxed)) "
                + "iocbRestored=\(c.iocbRestored.load(ordering: .relaxed)) "
                + "lost=\(c.lost.load(ordering: .relaxed))")
    }
}

/// Where `struct iocb`'s fields are (the kernel's UAPI layout, the same on every 64-bit architecture);
/// Swift's MemoryLayout cannot see through the iocb's union.
enum IocbOffsets {
    static let descriptor = 20
    static let vector = 24
    static let eventFD = 60
}
