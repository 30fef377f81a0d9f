// This file owns libbaio's exported symbols: libaio's entry points with libaio's signatures and return
// conventions (negative errno, partial submit counts), over CompatContext. Nothing here runs at load time:
// the registry is a lazily initialised global, and threads start in io_setup, per process.
import BufferedAIO
import CBufferedAIO
import Glibc
import Synchronization

// MARK: - Entry points

/// `int io_setup(int maxevents, io_context_t *ctxp)`.
@_cdecl("io_setup")
public func baio_io_setup(_ maximumEvents: Int32, _ contextPointer: UnsafeMutablePointer<io_context_t?>?) -> Int32 {
    CompatContext.setup(maximumEvents, contextPointer)
}

/// `int io_destroy(io_context_t ctx)`.
@_cdecl("io_destroy")
public func baio_io_destroy(_ handle: io_context_t?) -> Int32 {
    switch Registry.lookup(handle) {
    case .ours(let context):
        // Two threads destroying the same context: one wins, the other gets the kernel's EINVAL.
        guard Registry.remove(handle) else { return -EINVAL }
        context.destroy()
        return 0
    case .otherProcess: return -EINVAL
    case .unknown: return Int32(cbaio_sys_io_destroy(handle))
    }
}

/// `int io_submit(io_context_t ctx, long nr, struct iocb *ios[])`.
@_cdecl("io_submit")
public func baio_io_submit(
    _ handle: io_context_t?, _ count: Int, _ iocbs: UnsafeMutablePointer<UnsafeMutablePointer<iocb>?>?
) -> Int32 {
    switch Registry.lookup(handle) {
    case .ours(let context): return context.submit(count, iocbs)
    case .otherProcess: return -EINVAL
    case .unknown: return Int32(cbaio_sys_io_submit(handle, count, iocbs))
    }
}

/// `int io_getevents(io_context_t ctx, long min_nr, long nr, struct io_event *events, struct timespec *timeout)`.
@_cdecl("io_getevents")
public func baio_io_getevents(
    _ handle: io_context_t?, _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>?,
    _ timeout: UnsafeMutablePointer<timespec>?
) -> Int32 {
    switch Registry.lookup(handle) {
    case .ours(let context): return context.getEvents(minimum, maximum, events, timeout)
    case .otherProcess: return -EINVAL
    case .unknown: return Int32(cbaio_sys_io_getevents(handle, minimum, maximum, events, timeout))
    }
}

/// `int io_pgetevents(io_context_t ctx, long min_nr, long nr, struct io_event *events, struct timespec *timeout,
/// sigset_t *sigmask)`: io_getevents with `sigmask` in force while it waits.
@_cdecl("io_pgetevents")
public func baio_io_pgetevents(
    _ handle: io_context_t?, _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>?,
    _ timeout: UnsafeMutablePointer<timespec>?, _ signalMask: UnsafeMutablePointer<sigset_t>?
) -> Int32 {
    guard let signalMask else { return baio_io_getevents(handle, minimum, maximum, events, timeout) }
    var previous = sigset_t()
    guard pthread_sigmask(SIG_SETMASK, signalMask, &previous) == 0 else { return -EFAULT }
    defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
    return baio_io_getevents(handle, minimum, maximum, events, timeout)
}

/// `int io_cancel(io_context_t ctx, struct iocb *iocb, struct io_event *evt)`.
@_cdecl("io_cancel")
public func baio_io_cancel(
    _ handle: io_context_t?, _ iocb: UnsafeMutablePointer<iocb>?, _ result: UnsafeMutablePointer<io_event>?
) -> Int32 {
    // The kernel checks the iocb before the context.
    guard let iocb, !isBadUserPointer(iocb) else { return -EFAULT }
    switch Registry.lookup(handle) {
    case .ours(let context): return context.cancel(iocb, result)
    case .otherProcess: return -EINVAL
    case .unknown: return Int32(cbaio_sys_io_cancel(handle, iocb, result))
    }
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

// MARK: - Internal

/// NULL, `(void *)-1` and kernel addresses: what the kernel's access_ok refuses with EFAULT. An unmapped
/// user address cannot be told apart without touching it; libbaio reads such an iocb and faults, where
/// the kernel would return EFAULT (documented in docs/libaio-dropin.md).
@inline(__always)
func isBadUserPointer(_ pointer: UnsafeRawPointer?) -> Bool {
    guard let pointer else { return true }
    return UInt(bitPattern: pointer) >= 0x0100_0000_0000_0000
}

/// The contexts of this process, by handle (the address of their ring). A forked child starts with a new,
/// empty table: the parent's may have been locked by another of its threads at the instant of the fork, a
/// lock nothing in the child can release (measured: 1-3 of 100 forks under a busy reader), and a context is
/// usable only where it was created, so the kernel's answer for an unknown handle (EINVAL) is the right one.
enum Registry {
    enum Lookup {
        case ours(CompatContext)
        case otherProcess
        /// Not a libbaio handle: forwarded to the kernel, which rejects garbage with EINVAL and serves
        /// contexts a program created with the raw system call.
        case unknown
    }

    private final class Table: Sendable {
        let contexts = Mutex<[UInt: CompatContext]>([:])

        static func retainedAddress() -> UInt { UInt(bitPattern: Unmanaged.passRetained(Table()).toOpaque()) }
    }

    /// The current table, retained for good: the one a child replaces is its copy of the parent's.
    private static let current = Atomic<UInt>(Table.retainedAddress())
    private static let forkHandlerInstalled = Atomic<Bool>(false)
    private static let exitReportRegistered = Atomic<Bool>(false)

    private static var table: Table {
        Unmanaged<Table>.fromOpaque(UnsafeRawPointer(bitPattern: current.load(ordering: .acquiring))!)
            .takeUnretainedValue()
    }

    static func lookup(_ handle: io_context_t?) -> Lookup {
        guard let handle else { return .unknown }
        guard let context = table.contexts.withLock({ $0[UInt(bitPattern: handle)] }) else { return .unknown }
        // Only a fork that bypassed pthread_atfork (a raw clone) can get here with another process's context.
        return context.owner == getpid() ? .ours(context) : .otherProcess
    }

    static func insert(_ context: CompatContext) {
        if !forkHandlerInstalled.exchange(true, ordering: .acquiringAndReleasing) {
            // Runs in the child's only thread, before it can reach the registry.
            pthread_atfork(nil, nil) {
                Registry.current.store(Table.retainedAddress(), ordering: .releasing)
            }
        }
        table.contexts.withLock { $0[context.handle] = context }
        if StatisticsReport.destination != nil, !exitReportRegistered.exchange(true, ordering: .relaxed) {
            atexit {
                let live = Registry.table.contexts.withLock { Array($0.values) }
                for context in live where context.owner == getpid() { context.report(when: "exit") }
            }
        }
    }

    static func remove(_ handle: io_context_t?) -> Bool {
        table.contexts.withLock { $0.removeValue(forKey: UInt(bitPattern: handle)) } != nil
    }
}

/// `BAIO_STATS`: unset (silent, the default), `1` or `stderr` (standard error), or a file path to append to.
enum StatisticsReport {
    static var destination: String? {
        guard let value = getenv("BAIO_STATS") else { return nil }
        let text = String(cString: value)
        return text.isEmpty || text == "0" ? nil : text
    }

    static func write(_ line: String) {
        guard let destination else { return }
        let fd: Int32
        if destination == "1" || destination == "stderr" {
            fd = STDERR_FILENO
        } else {
            fd = open(destination, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { return }
        }
        var bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if fd != STDERR_FILENO { close(fd) }
    }
}
