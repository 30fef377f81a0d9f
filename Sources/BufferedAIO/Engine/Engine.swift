// This file owns the engine's lifecycle: its poller thread, the inbox the submit side hands pending
// requests through, and shutdown. Submit (stage 1 of the 2011 proposal) is in Engine+Submit.swift, the
// reaper (stage 4) in Engine+Reap.swift, validation in Engine+Validation.swift, and the poller (stages 2
// and 3) in Poller.swift.
import CBufferedAIO
import Glibc
import Synchronization

private let engineNumbers = Atomic<Int>(0)

/// The buffered-AIO engine: one poller thread, the submit path and the reaper.
final class Engine: @unchecked Sendable {
    let configuration: EngineConfiguration
    let counters = StatisticsCounters()
    let mappings = MappingCache()
    /// The poller thread's name, unique per engine so a test can tell this engine's thread from others.
    let threadName: String

    struct Inbox {
        var requests: [Request] = []
        var stopping = false
        /// The poller is asleep with no timeout: a new request must wake it.
        var pollerIdle = false
        /// Set once shutdown has joined the poller and closed ``Engine/wakeFD``.
        var wakeClosed = false
    }

    let inbox = Mutex(Inbox())
    /// Wakes the poller: written on submit to an idle poller, by libaio for direct completions
    /// (IOCB_FLAG_RESFD), and at shutdown.
    let wakeFD: Int32
    let serials = Atomic<UInt64>(0)
    /// An exponentially weighted average of how long pending requests took to become resident, in
    /// nanoseconds; it bounds the poller's back-off.
    let observedLatency = Atomic<Int>(200_000)
    /// Requests the poller held after its last pass (pending buffered reads and direct reads in the
    /// kernel), published for tests and diagnostics.
    let pollerPending = Atomic<Int>(0)
    private var thread: pthread_t? = nil
    private let stopped = Atomic<Bool>(false)

    init(configuration: EngineConfiguration) throws(BufferedAIOError) {
        self.configuration = configuration
        mappings.keepRecent(configuration.recentMappings)
        let number = engineNumbers.wrappingAdd(1, ordering: .relaxed).oldValue
        self.threadName = "baio-poll-\(number % 100_000)"
        let fd = try makeEventFD()
        self.wakeFD = fd
        do throws(BufferedAIOError) {
            self.thread = try PosixThread.start(name: threadName) { [self] in
                var poller = Poller(engine: self)
                poller.run()
            }
        } catch {
            _ = system_close(fd)
            throw error
        }
    }

    /// The poller thread holds the engine until ``shutdown()``, so the owner (an IOContext, the shared
    /// engine) must call it; by the time this runs the thread is gone.
    deinit {
        if !inbox.withLock({ $0.wakeClosed }) { _ = system_close(wakeFD) }
    }

    /// Stops the poller: every pending request is completed as cancelled and delivered, in-flight direct
    /// reads are waited for (the kernel's io_destroy contract: no user buffer is written afterwards), and
    /// the thread is joined. Idempotent.
    func shutdown() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        defer { mappings.keepRecent(0) }  // after the join: no request can take a mapping any more
        inbox.withLock { $0.stopping = true }
        system_eventfd_signal(wakeFD)
        guard let thread else { return }
        // The last reference to an owner can be dropped on the poller thread itself (a delivery releases
        // it); joining there would deadlock, so the thread is detached and exits after this pass.
        if pthread_equal(thread, pthread_self()) != 0 {
            pthread_detach(thread)
            return  // the wake eventfd is closed by deinit, after this thread is done with it
        }
        pthread_join(thread, nil)
        // Nothing can need the wake eventfd now: the poller is gone, and a late enqueue checks the flag
        // under the same lock before writing to it.
        inbox.withLock { inbox in
            inbox.wakeClosed = true
            _ = system_close(wakeFD)
        }
    }

    var isStopped: Bool { stopped.load(ordering: .acquiring) }
}

/// A non-blocking, close-on-exec eventfd (the engine's wake-up, a context's "events ready"), or the error
/// that says why there is none.
func makeEventFD() throws(BufferedAIOError) -> Int32 {
    let fd = system_eventfd()
    guard fd >= 0 else {
        throw BufferedAIOError(.systemResource, "eventfd failed", syscall: "eventfd", errno: Errno(rawValue: errno))
    }
    return fd
}
