// This file owns libbaio's io_getevents: the kernel's own wait on the kernel's own ring. libbaio adds only
// two things: libaio's user-space shortcut for a zero timeout, and, while reads wait for ring slots
// (a program that keeps more than nr_events unreaped), the retry that lets them in as events are taken.
import CBufferedAIO
import Glibc

extension KernelContext {
    /// Offsets in the kernel's `struct aio_ring` header.
    private enum Ring {
        static let nr = 4
        static let head = 8
        static let tail = 12
    }

    /// The ring's `nr`, read once: io_submit takes at most this many iocbs per call.
    static func ringSize(_ handle: io_context_t) -> Int {
        Int(UnsafeRawPointer(handle).load(fromByteOffset: Ring.nr, as: UInt32.self))
    }

    /// Events in the ring the program has not taken yet.
    var unreapedEvents: Int {
        let ring = UnsafeMutableRawPointer(kernelHandle)
        let head = Int(cbaio_load_acquire_u32((ring + Ring.head).assumingMemoryBound(to: UInt32.self)))
        let tail = Int(cbaio_load_acquire_u32((ring + Ring.tail).assumingMemoryBound(to: UInt32.self)))
        return ((tail - head) % ringSize + ringSize) % ringSize
    }

    private var ringIsEmpty: Bool {
        let ring = UnsafeMutableRawPointer(kernelHandle)
        let head = cbaio_load_acquire_u32((ring + Ring.head).assumingMemoryBound(to: UInt32.self))
        let tail = cbaio_load_acquire_u32((ring + Ring.tail).assumingMemoryBound(to: UInt32.self))
        return head == tail
    }

    /// io_getevents and io_pgetevents.
    func getEvents(
        _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>?,
        _ timeout: UnsafeMutablePointer<timespec>?, _ signalMask: UnsafeMutablePointer<sigset_t>?
    ) -> Int32 {
        retryBacklog()
        if let timeout, !isBadUserPointer(timeout), timeout.pointee.tv_sec == 0, timeout.pointee.tv_nsec == 0,
            ringIsEmpty
        {
            return 0
        }
        guard hasBacklog, minimum > 0, let events, !isBadUserPointer(events) else {
            return Int32(cbaio_sys_io_pgetevents(kernelHandle, minimum, maximum, events, timeout, signalMask))
        }
        return waitWithBacklog(minimum, maximum, events, timeout, signalMask)
    }

    /// Waits in slices of a millisecond, letting backlogged reads in as the caller takes events: the kernel
    /// would otherwise sleep for completions of reads that cannot be submitted until it returns.
    private func waitWithBacklog(
        _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>,
        _ timeout: UnsafeMutablePointer<timespec>?, _ signalMask: UnsafeMutablePointer<sigset_t>?
    ) -> Int32 {
        var deadline: timespec? = nil
        if let timeout {
            guard !isBadUserPointer(timeout) else { return -EFAULT }
            guard timeout.pointee.tv_sec >= 0, timeout.pointee.tv_nsec >= 0,
                timeout.pointee.tv_nsec < 1_000_000_000
            else { return -EINVAL }
            deadline = Self.now() + timeout.pointee
        }
        var collected = 0
        while true {
            // Take what is there, which frees ring slots, and let the backlog into them.
            var slice = timespec(tv_sec: 0, tv_nsec: 0)
            var got = cbaio_sys_io_pgetevents(
                kernelHandle, 0, maximum - collected, events + collected, &slice, signalMask)
            if got < 0 { return collected > 0 ? Int32(collected) : Int32(got) }
            collected += got
            retryBacklog()
            if collected >= minimum { return Int32(collected) }
            var remaining: timespec? = nil
            if let deadline {
                let now = Self.now()
                if now >= deadline { return Int32(collected) }
                remaining = deadline - now
            }
            if !hasBacklog {
                // Everything is in the kernel now: the rest of the wait is the kernel's.
                got = withOptionalPointer(&remaining) {
                    cbaio_sys_io_pgetevents(
                        kernelHandle, minimum - collected, maximum - collected, events + collected, $0, signalMask)
                }
                if got < 0 { return collected > 0 ? Int32(collected) : Int32(got) }
                return Int32(collected + got)
            }
            // Still no room: the kernel's own I/O holds the slots. Wait for one event, a millisecond at most.
            slice = min(remaining ?? timespec(tv_sec: 0, tv_nsec: 1_000_000), timespec(tv_sec: 0, tv_nsec: 1_000_000))
            got = cbaio_sys_io_pgetevents(kernelHandle, 1, maximum - collected, events + collected, &slice, signalMask)
            if got < 0 { return collected > 0 ? Int32(collected) : Int32(got) }
            collected += got
        }
    }

    private func withOptionalPointer<R>(_ value: inout timespec?, _ body: (UnsafeMutablePointer<timespec>?) -> R) -> R {
        guard var unwrapped = value else { return body(nil) }
        return withUnsafeMutablePointer(to: &unwrapped) { body($0) }
    }

    private static func now() -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now
    }
}

extension timespec: @retroactive Comparable {
    public static func < (a: timespec, b: timespec) -> Bool {
        a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec)
    }

    public static func == (a: timespec, b: timespec) -> Bool { a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec }

    static func + (a: timespec, b: timespec) -> timespec {
        let nanoseconds = a.tv_nsec + b.tv_nsec
        return timespec(tv_sec: a.tv_sec + b.tv_sec + nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
    }

    static func - (a: timespec, b: timespec) -> timespec {
        var seconds = a.tv_sec - b.tv_sec
        var nanoseconds = a.tv_nsec - b.tv_nsec
        if nanoseconds < 0 {
            nanoseconds += 1_000_000_000
            seconds -= 1
        }
        return timespec(tv_sec: seconds, tv_nsec: nanoseconds)
    }
}
