// This file owns libbaio's io_submit: which iocbs the engine holds and which go straight to the kernel
// context, in order, with io_submit's partial-count rules.
//
// Only a plain buffered read of a regular file whose pages are not all resident is held by the engine.
// Everything else goes to the kernel as it came: writes, fsync, poll, O_DIRECT, RWF_* flags, priorities,
// pipes and devices, and every iocb the kernel would refuse (so its synchronous errors are the kernel's own)
// and cached reads (the kernel copies them inside io_submit, as it would without libbaio).
import BufferedAIO
import CBufferedAIO
import Glibc

extension KernelContext {
    /// io_submit.
    func submit(_ count: Int, _ iocbs: UnsafeMutablePointer<UnsafeMutablePointer<iocb>?>) -> Int32 {
        retryBacklog()
        var batch = KernelBatch(context: self, iocbs: iocbs)
        var index = 0
        while index < count {
            guard let iocb = iocbs[index], !isBadUserPointer(iocb) else {
                // The kernel faults on reading the pointer or the iocb: its EFAULT, after what came before.
                batch.add(index, checked: false)
                index += 1
                break
            }
            guard let read = BufferedRead(iocb) else {
                batch.add(index, checked: false)
                index += 1
                continue
            }
            // A probe writes the caller's buffer: not before the iocbs ahead of it are surely accepted.
            if batch.hasUnchecked, let stop = batch.flush() { return stop }
            switch read.probe() {
            case .resident:
                counters.cachedReads.wrappingAdd(1, ordering: .relaxed)
                batch.add(index, checked: true)
            case .missing(let firstCopy):
                counters.probeMissed.wrappingAdd(1, ordering: .relaxed)
                if let stop = batch.flush() { return stop }
                switch holdInEngine(iocb, read, firstCopy: firstCopy) {
                case .held:
                    batch.accepted(index)
                case .resident:
                    counters.cachedReads.wrappingAdd(1, ordering: .relaxed)
                    batch.add(index, checked: true)
                case .refused(let error):
                    return batch.result(error)
                }
            }
            index += 1
        }
        return batch.flush() ?? batch.result(0)
    }

    enum HoldOutcome {
        case held
        case resident
        case refused(Int32)
    }

    /// Hands a read with missing pages to the engine. Refused with EAGAIN when the context already holds
    /// `nr_events` reads (the kernel's ring could not take them all at once) or a descriptor cannot be
    /// pinned; falls back to the kernel when the engine cannot run at all.
    private func holdInEngine(_ iocb: UnsafeMutablePointer<iocb>, _ read: BufferedRead, firstCopy: Int) -> HoldOutcome {
        guard let watcher = Registry.watcher() else { return .resident }
        var eventFD: Int32 = -1
        if read.eventFD >= 0 {
            eventFD = cbaio_dup_cloexec(read.eventFD)
            guard eventFD >= 0 else { return .refused(EAGAIN) }
        }
        let vector = read.copiedVector()
        guard let id = hold(iocb, vector: vector, eventFD: eventFD) else {
            vector?.deallocate()
            if eventFD >= 0 { close(eventFD) }
            return .refused(EAGAIN)
        }
        // The kernel writes aio_key at submit; so does libbaio for a read it holds. (Only when it is not
        // already 0: an iocb in read-only memory would fault here, where the kernel returns EFAULT.)
        if iocb.pointee.key != 0 { iocb.pointee.key = 0 }
        let outcome: WatchOutcome
        do throws(BufferedAIOError) {
            outcome = try watcher.watch(
                descriptor: read.descriptor, facts: read.facts, offset: read.offset, length: read.length,
                firstCopy: firstCopy, tag: id, sink: sink(watcher))
        } catch {
            unhold(id)?.release()
            return .refused(EAGAIN)  // out of descriptors to pin the file
        }
        switch outcome {
        case .resident:
            unhold(id)?.release()
            return .resident
        case .watching(let watched):
            watching(id, watched)
            counters.engineReads.wrappingAdd(1, ordering: .relaxed)
            return .held
        }
    }
}

/// The iocbs of one io_submit call that go to the kernel, as runs of the caller's own array: a held read
/// ends a run, so the kernel sees every other iocb in the order given and stops where it would have.
struct KernelBatch {
    let context: KernelContext
    let iocbs: UnsafeMutablePointer<UnsafeMutablePointer<iocb>?>
    /// The run waiting for the kernel: `runStart..<runEnd` of the caller's array.
    private var runStart = 0
    private var runEnd = 0
    /// Iocbs libbaio did not check, which the kernel may refuse.
    private(set) var hasUnchecked = false
    /// Accepted so far: submitted to the kernel, or held by the engine.
    private var done = 0

    init(context: KernelContext, iocbs: UnsafeMutablePointer<UnsafeMutablePointer<iocb>?>) {
        self.context = context
        self.iocbs = iocbs
    }

    /// Appends the iocb at `index` (always the next one) to the run.
    mutating func add(_ index: Int, checked: Bool) {
        if runStart == runEnd { runStart = index }
        runEnd = index + 1
        if !checked { hasUnchecked = true }
    }

    /// Counts a read the engine holds; the run was flushed before it.
    mutating func accepted(_ index: Int) {
        done += 1
        runStart = index + 1
        runEnd = index + 1
    }

    /// Submits the run. Returns io_submit's final answer if the kernel stopped short (a refused iocb ends
    /// the call, as it does in the kernel), nil if it took the whole run.
    mutating func flush() -> Int32? {
        let count = runEnd - runStart
        guard count > 0 else { return nil }
        let accepted = cbaio_sys_io_submit(context.kernelHandle, count, iocbs + runStart)
        runStart = runEnd
        hasUnchecked = false
        if accepted > 0 {
            done += accepted
            context.counters.kernelIocbs.wrappingAdd(accepted, ordering: .relaxed)
        }
        if accepted == count { return nil }
        // A partial count says the kernel refused the next iocb without saying why; kernelWasFull judges by how
        // full the ring is.
        if accepted == -Int(EAGAIN) || accepted >= 0 { context.kernelWasFull() }
        return accepted < 0 ? result(Int32(-accepted)) : Int32(done)
    }

    /// io_submit's return: the count accepted, or the first iocb's error when none was.
    func result(_ error: Int32) -> Int32 { done > 0 || error == 0 ? Int32(done) : -error }
}
