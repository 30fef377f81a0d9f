// This file owns libbaio's exported symbols: libaio's entry points with libaio's signatures and return
// conventions (negative errno, partial submit counts). A context is the kernel's own; libbaio only takes the
// buffered reads whose pages are missing out of io_submit and submits them later, when they are resident.
// Every other call is the kernel's, through the raw system calls (never libaio's functions: with libbaio
// preloaded those names resolve to these exports and would recurse).
import BufferedAIO
import CBAIOCompat
import CBufferedAIO
import Glibc

/// `int io_setup(int maxevents, io_context_t *ctxp)`: the kernel's, which checks every argument (EINVAL,
/// EFAULT, EAGAIN against fs.aio-max-nr). libbaio adds no thread and no descriptor per context.
@_cdecl("io_setup")
public func baio_io_setup(_ maximumEvents: Int32, _ contextPointer: UnsafeMutablePointer<io_context_t?>?) -> Int32 {
    let created = cbaio_sys_io_setup(UInt32(bitPattern: maximumEvents), contextPointer)
    guard created == 0, let contextPointer, let handle = contextPointer.pointee else { return Int32(created) }
    Registry.insert(KernelContext(handle: handle, maximumEvents: maximumEvents))
    return 0
}

/// `int io_destroy(io_context_t ctx)`: held reads are dropped first (their buffers are never written after
/// this returns), then the kernel's io_destroy waits for the I/O it has.
@_cdecl("io_destroy")
public func baio_io_destroy(_ handle: io_context_t?) -> Int32 {
    if let context = Registry.lookup(handle), Registry.remove(handle) {
        context.destroy()
        if Registry.isEmpty { StatisticsReport.reportEngine(when: "last io_destroy") }
    }
    return Int32(cbaio_sys_io_destroy(handle))
}

/// `int io_submit(io_context_t ctx, long nr, struct iocb *ios[])`.
@_cdecl("io_submit")
public func baio_io_submit(
    _ handle: io_context_t?, _ count: Int, _ iocbs: UnsafeMutablePointer<UnsafeMutablePointer<iocb>?>?
) -> Int32 {
    // What the kernel checks before it reads any iocb; an unknown handle is the kernel's alone.
    guard let context = Registry.lookup(handle), count > 0, let iocbs, !isBadUserPointer(iocbs) else {
        return Int32(cbaio_sys_io_submit(handle, count, iocbs))
    }
    // The kernel submits at most nr_events iocbs per call.
    return context.submit(min(count, context.ringSize), iocbs)
}

/// `int io_getevents(io_context_t ctx, long min_nr, long nr, struct io_event *events, struct timespec *timeout)`:
/// the kernel's, with libaio's shortcut (a zero timeout on an empty ring returns 0 without a system call).
@_cdecl("io_getevents")
public func baio_io_getevents(
    _ handle: io_context_t?, _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>?,
    _ timeout: UnsafeMutablePointer<timespec>?
) -> Int32 {
    baio_io_pgetevents(handle, minimum, maximum, events, timeout, nil)
}

/// `int io_pgetevents(io_context_t ctx, long min_nr, long nr, struct io_event *events, struct timespec *timeout,
/// sigset_t *sigmask)`: the kernel's, which sets the mask atomically for the wait.
@_cdecl("io_pgetevents")
public func baio_io_pgetevents(
    _ handle: io_context_t?, _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>?,
    _ timeout: UnsafeMutablePointer<timespec>?, _ signalMask: UnsafeMutablePointer<sigset_t>?
) -> Int32 {
    guard let context = Registry.lookup(handle) else {
        return Int32(cbaio_sys_io_pgetevents(handle, minimum, maximum, events, timeout, signalMask))
    }
    return context.getEvents(minimum, maximum, events, timeout, signalMask)
}

/// `int io_cancel(io_context_t ctx, struct iocb *iocb, struct io_event *evt)`: the kernel's. A read the
/// engine holds is unknown to it, so it answers EINVAL, as it does for a file read it has.
@_cdecl("io_cancel")
public func baio_io_cancel(
    _ handle: io_context_t?, _ iocb: UnsafeMutablePointer<iocb>?, _ result: UnsafeMutablePointer<io_event>?
) -> Int32 {
    Int32(cbaio_sys_io_cancel(handle, iocb, result))
}

/// `int io_queue_init(int maxevents, io_context_t *ctxp)`: libaio checks `maxevents` itself.
@_cdecl("io_queue_init")
public func baio_io_queue_init(
    _ maximumEvents: Int32, _ contextPointer: UnsafeMutablePointer<io_context_t?>?
) -> Int32 {
    guard maximumEvents > 0 else { return -EINVAL }
    contextPointer?.pointee = nil
    return baio_io_setup(maximumEvents, contextPointer)
}

/// `int io_queue_release(io_context_t ctx)`.
@_cdecl("io_queue_release")
public func baio_io_queue_release(_ handle: io_context_t?) -> Int32 {
    baio_io_destroy(handle)
}

/// `int io_queue_wait(io_context_t ctx, struct timespec *timeout)`: io_getevents for no event, as libaio.
@_cdecl("io_queue_wait")
public func baio_io_queue_wait(_ handle: io_context_t?, _ timeout: UnsafeMutablePointer<timespec>?) -> Int32 {
    baio_io_getevents(handle, 0, 0, nil, timeout)
}

/// `int io_queue_run(io_context_t ctx)`: calls each ready event's callback (set with `io_set_callback`,
/// stored in `data`) until none is ready; returns 0, or the error io_getevents returned.
@_cdecl("io_queue_run")
public func baio_io_queue_run(_ handle: io_context_t?) -> Int32 {
    typealias Callback = @convention(c) (io_context_t?, UnsafeMutablePointer<iocb>?, Int, Int) -> Void
    var zero = timespec(tv_sec: 0, tv_nsec: 0)
    var event = io_event()
    while true {
        let count = baio_io_getevents(handle, 0, 1, &event, &zero)
        guard count == 1 else { return count }
        guard let data = event.data else { continue }
        let callback = unsafeBitCast(data, to: Callback.self)
        callback(handle, event.obj, Int(bitPattern: event.res), Int(bitPattern: event.res2))
    }
}

/// Called by libbaio's mremap (CBAIOCompat/mremap.c) before the move: a final submit into this ring that
/// fails meanwhile waits for the move to end and tries the new address.
@_cdecl("baio_ring_moving")
public func baio_ring_moving(_ old: UnsafeMutableRawPointer?) {
    Registry.lookup(OpaquePointer(old))?.moving.wrappingAdd(1, ordering: .sequentiallyConsistent)
}

/// Called by libbaio's mremap after the call: if the mapping was a context's ring and it moved, the
/// context's handle is now the new address, as the kernel's is.
@_cdecl("baio_ring_moved")
public func baio_ring_moved(_ old: UnsafeMutableRawPointer?, _ new: UnsafeMutableRawPointer?) {
    guard let old, let context = Registry.lookup(OpaquePointer(old)) else { return }
    if let new, new != UnsafeMutableRawPointer(bitPattern: -1) {
        Registry.moved(from: UInt(bitPattern: old), to: UInt(bitPattern: new))
    }
    context.moving.wrappingSubtract(1, ordering: .sequentiallyConsistent)
}
