// This file owns one libbaio context: a ring in the kernel's format that the handle points to, the
// engine's IOContext for buffered reads, the kernel AIO context for everything else, and the bridge thread
// that moves completions of both into the ring.
//
// Who publishes: an event must be in the ring without the program calling io_getevents, because libaio's
// users (fio's userspace_reap, QEMU) read `head`/`tail` directly. So a per-context bridge thread, started
// in io_setup, waits in the kernel's io_getevents on the kernel context, where it also keeps an
// IOCB_CMD_POLL on the engine's eventfd: one wait covers both kinds of completion. It reaps engine events
// with IOContext.getEvents (the final copy) and publishes them; kernel completions are published as they
// come. Callers of io_submit and io_getevents also reap the engine in their own thread first (cached reads
// are in the ring when io_submit returns, and a waiting caller copies its own data), so the bridge carries
// only the completions nobody was there to collect. io_getevents consumes the ring and sleeps on a futex
// on the ring's `tail`.
import BufferedAIO
import CBufferedAIO
import Glibc
import Synchronization

/// The kernel's `struct aio_ring` header, 32 bytes, followed by `nr` `struct io_event`s.
enum RingLayout {
    static let magic: UInt32 = 0xa10a_10a1
    static let headerLength = 32
    static let idOffset = 0
    static let nrOffset = 4
    static let headOffset = 8
    static let tailOffset = 12
    static let magicOffset = 16
    static let compatFeaturesOffset = 20
    static let incompatFeaturesOffset = 24
    static let headerLengthOffset = 28
    static let eventSize = MemoryLayout<io_event>.stride
    /// IOCB_FLAG_RESFD (libaio.h writes the bit without naming it).
    static let resfdFlag: UInt32 = 1
}

/// What the engine rings when events become ready: the bridge's eventfd, written only when no caller is inside
/// libbaio to reap them itself (a caller in io_submit or io_getevents always reaps before it leaves). Held by
/// the engine's notification closure, so it must not hold the context.
final class Doorbell: Sendable {
    let fd: Int32
    /// Callers inside io_submit or io_getevents that will reap before they leave.
    let reapers = Atomic<Int>(0)

    init(fd: Int32) { self.fd = fd }

    func ring() {
        guard reapers.load(ordering: .sequentiallyConsistent) == 0 else { return }
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    func enter() { reapers.wrappingAdd(1, ordering: .sequentiallyConsistent) }
    func leave() { reapers.wrappingSubtract(1, ordering: .sequentiallyConsistent) }
}

final class CompatContext: @unchecked Sendable {
    /// A read submitted to the engine, one engine request per iovec segment.
    struct PendingRead: @unchecked Sendable {
        let iocb: UnsafeMutablePointer<iocb>
        let data: UnsafeMutableRawPointer?
        let lengths: [Int]
        var results: [Int?]
        var remaining: Int
        /// A duplicate of the iocb's eventfd (IOCB_FLAG_RESFD), signalled when the event is published.
        let resfd: Int32
    }

    struct State: @unchecked Sendable {
        var pending: [UInt64: PendingRead] = [:]
        var idByIocb: [UInt: UInt64] = [:]
        var nextID: UInt64 = 1
        var engineInFlight = 0
        var kernelInFlight = 0
        /// Our copy of the ring's tail: the ring's own word is user-writable.
        var tail: UInt32 = 0
        /// Events that found the ring full (only if the user moved `head` wrongly), published first later.
        var overflow: [io_event] = []
        var dead = false
    }

    let handle: UInt
    let owner: pid_t
    let kernel: io_context_t
    let ring: UnsafeMutableRawPointer
    let ringBytes: Int
    let ringSize: UInt32
    /// Reads and passthrough iocbs in flight plus events waiting in the ring: at most this many.
    let capacity: Int
    let engine: IOContext
    let state = Mutex(State())
    let waiters = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    let engineReads = Atomic<Int>(0)
    /// Held by whoever is in the engine's getEvents. A caller that waits there (no kernel iocb in flight)
    /// must be the only reaper, or another could take the last event it waits for.
    let reaping = Mutex<Bool>(false)
    /// Engine requests accepted and not yet taken back by a reaper. Added after the engine accepts them and
    /// subtracted when their events are taken, so a race can only make it low, never high: when the token
    /// holder sees it above zero, an event is surely coming, and waiting in the engine without a timeout
    /// cannot hang.
    let engineOutstanding = Atomic<Int>(0)
    let passthroughIocbs = Atomic<Int>(0)
    private let pollIocb = UnsafeMutablePointer<iocb>.allocate(capacity: 1)
    let doorbell: Doorbell
    private var bridge: pthread_t? = nil

    private init(
        kernel: io_context_t, ring: UnsafeMutableRawPointer, ringBytes: Int, ringSize: UInt32, engine: IOContext
    ) {
        self.kernel = kernel
        self.ring = ring
        self.ringBytes = ringBytes
        self.ringSize = ringSize
        self.capacity = Int(ringSize) - 2  // one slot keeps full and empty apart, one is the bridge's poll
        self.engine = engine
        self.owner = getpid()
        self.handle = UInt(bitPattern: ring)
        self.doorbell = Doorbell(fd: cbaio_eventfd())
        pollIocb.initialize(to: iocb())
    }

    deinit {
        if doorbell.fd >= 0 { close(doorbell.fd) }
        munmap(ring, ringBytes)
        pollIocb.deallocate()
    }

    // MARK: - Lifecycle

    /// io_setup: the kernel validates `maximumEvents` and `contextPointer` (EINVAL, EFAULT, EAGAIN against
    /// fs.aio-max-nr) by creating the passthrough context with the caller's own pointer; then the ring,
    /// the engine and the bridge are made, and the handle is replaced by the ring's address.
    static func setup(_ maximumEvents: Int32, _ contextPointer: UnsafeMutablePointer<io_context_t?>?) -> Int32 {
        let created = cbaio_sys_io_setup(UInt32(bitPattern: maximumEvents), contextPointer)
        guard created == 0, let contextPointer, let kernel = contextPointer.pointee else { return Int32(created) }
        let kernelRing = UnsafeRawPointer(kernel)
        let size = max(8, kernelRing.load(fromByteOffset: RingLayout.nrOffset, as: UInt32.self))
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let bytes = (RingLayout.headerLength + Int(size) * RingLayout.eventSize + pageSize - 1) / pageSize * pageSize
        let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mapped, mapped != MAP_FAILED else {
            _ = cbaio_sys_io_destroy(kernel)
            contextPointer.pointee = nil
            return -EAGAIN
        }
        mapped.storeBytes(of: 0, toByteOffset: RingLayout.idOffset, as: UInt32.self)
        mapped.storeBytes(of: size, toByteOffset: RingLayout.nrOffset, as: UInt32.self)
        mapped.storeBytes(of: 1, toByteOffset: RingLayout.compatFeaturesOffset, as: UInt32.self)
        mapped.storeBytes(
            of: UInt32(RingLayout.headerLength), toByteOffset: RingLayout.headerLengthOffset, as: UInt32.self)
        mapped.storeBytes(of: RingLayout.magic, toByteOffset: RingLayout.magicOffset, as: UInt32.self)
        let context: CompatContext
        do {
            context = CompatContext(
                kernel: kernel, ring: mapped, ringBytes: bytes, ringSize: size,
                engine: try IOContext(capacity: 1 << 20))
        } catch {
            _ = cbaio_sys_io_destroy(kernel)
            munmap(mapped, bytes)
            contextPointer.pointee = nil
            return -EAGAIN
        }
        do {
            try context.startBridge()
        } catch {
            context.engine.close()
            _ = cbaio_sys_io_destroy(kernel)
            contextPointer.pointee = nil
            return -EAGAIN  // the context's deinit unmaps the ring
        }
        Registry.insert(context)
        contextPointer.pointee = OpaquePointer(mapped)
        return 0
    }

    /// io_destroy. Never hangs: pending engine reads are cancelled and their buffers never written again;
    /// kernel I/O in flight is waited for by the kernel's io_destroy, as without libbaio.
    func destroy() {
        stopping.store(true, ordering: .releasing)
        report(when: "io_destroy")
        // Waits for any reaper copying into a user buffer (the bridge's or a caller's) to leave.
        engine.close()
        let resfds = state.withLock { s in
            s.dead = true
            defer { s.pending.removeAll() }
            return s.pending.values.map(\.resfd)
        }
        for fd in resfds where fd >= 0 { close(fd) }
        wakeWaiters()
        // Waits for passthrough I/O, cancels the bridge's poll and wakes the bridge out of io_getevents.
        _ = cbaio_sys_io_destroy(kernel)
        if let bridge { pthread_join(bridge, nil) }
    }

    private func startBridge() throws {
        guard doorbell.fd >= 0 else {
            throw BufferedAIOError(.systemResource, "eventfd failed", errno: Errno(rawValue: EMFILE))
        }
        let doorbell = doorbell
        engine.setReadyNotification { doorbell.ring() }
        engine.keepRecentMappings(8)
        cbaio_prep_poll(pollIocb, doorbell.fd, Int16(POLLIN))
        bridge = try PosixThread.start(name: "baio-bridge") { [self] in runBridge() }
    }

    // MARK: - Bridge

    private func armPoll() -> Bool {
        var list: UnsafeMutablePointer<iocb>? = pollIocb
        return cbaio_sys_io_submit(kernel, 1, &list) == 1
    }

    private func runBridge() {
        var events = [io_event](repeating: io_event(), count: 128)
        var armed = armPoll()
        while !stopping.load(ordering: .acquiring) {
            // Without a poll in the kernel context (it was full), look at the engine every millisecond.
            var poll = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            let count = events.withUnsafeMutableBufferPointer { buffer in
                withUnsafeMutablePointer(to: &poll) { timeout in
                    cbaio_sys_io_getevents(kernel, 1, buffer.count, buffer.baseAddress, armed ? nil : timeout)
                }
            }
            if count == -Int(EINTR) { continue }
            if count < 0 { break }
            var completed: [io_event] = []
            var fired = !armed
            for event in events.prefix(count) {
                if event.obj == pollIocb { fired = true } else { completed.append(event) }
            }
            if !completed.isEmpty { publishKernel(completed) }
            if fired {
                if stopping.load(ordering: .acquiring) { break }
                var count: UInt64 = 0
                _ = read(doorbell.fd, &count, 8)
                harvest(waiting: true)
                armed = armPoll()
            }
        }
    }

    // MARK: - Submit

    enum Route {
        /// With what routing learned of the descriptor, so the engine does not ask again.
        case engine(FileFacts)
        case kernel
        case failed(Int32)
    }

    /// io_submit: buffered reads of regular files go to the engine, the rest to the kernel context in
    /// runs, keeping io_submit's order and partial-count rules.
    func submit(_ count: Int, _ iocbs: UnsafeMutablePointer<UnsafeMutablePointer<iocb>?>?) -> Int32 {
        guard count >= 0 else { return -EINVAL }
        guard count > 0 else { return 0 }
        guard let iocbs, !isBadUserPointer(iocbs) else { return -EFAULT }
        doorbell.enter()
        defer {
            doorbell.leave()
            harvest()  // after leaving: what became ready before is reaped here, what comes later rings
        }
        var submitted = 0
        var index = 0
        func result(_ error: Int32) -> Int32 { submitted > 0 ? Int32(submitted) : -error }
        while index < count {
            guard let first = iocbs[index], !isBadUserPointer(first) else { return result(EFAULT) }
            switch route(first) {
            case .failed(let error): return result(error)
            case .engine(let facts):
                let error = submitToEngine(first, facts: facts)
                if error != 0 { return result(error) }
                submitted += 1
                index += 1
            case .kernel:
                var end = index + 1
                while end < count, let next = iocbs[end], !isBadUserPointer(next), case .kernel = route(next) {
                    end += 1
                }
                let granted = reserveKernel(end - index)
                guard granted > 0 else { return result(EAGAIN) }
                let accepted = cbaio_sys_io_submit(kernel, granted, iocbs + index)
                state.withLock { $0.kernelInFlight -= granted - max(0, accepted) }
                if accepted < 0 { return result(Int32(-accepted)) }
                passthroughIocbs.wrappingAdd(accepted, ordering: .relaxed)
                submitted += accepted
                if accepted < end - index { return Int32(submitted) }
                index = end
            }
        }
        return Int32(submitted)
    }

    private func reserveKernel(_ wanted: Int) -> Int {
        state.withLock { s in
            let granted = max(0, min(wanted, capacity - outstanding(s)))
            s.kernelInFlight += granted
            return granted
        }
    }

    private func outstanding(_ s: State) -> Int {
        s.engineInFlight + s.kernelInFlight + ringUsed(s) + s.overflow.count
    }

    /// Which way an iocb goes. Everything the engine does not do (writes, fsync, poll, O_DIRECT, RWF_*
    /// flags, priorities, pipes, directories, bad descriptors) goes to the kernel, which also returns its
    /// own errors for it.
    func route(_ iocb: UnsafeMutablePointer<iocb>) -> Route {
        let opcode = Int32(iocb.pointee.aio_lio_opcode)
        guard opcode == Int32(IO_CMD_PREAD.rawValue) || opcode == Int32(IO_CMD_PREADV.rawValue) else { return .kernel }
        guard iocb.pointee.aio_rw_flags == 0, iocb.pointee.u.c.flags & ~RingLayout.resfdFlag == 0 else {
            return .kernel
        }
        let fd = iocb.pointee.aio_fildes
        let flags = cbaio_get_status_flags(fd)
        guard flags >= 0, flags & O_ACCMODE != O_WRONLY, flags & cbaio_O_DIRECT == 0, flags & cbaio_O_PATH == 0 else {
            return .kernel
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return .kernel }
        return .engine(FileFacts(info: info, statusFlags: flags))
    }

    /// Validates a read as the kernel's io_submit does and hands it to the engine. Returns 0 or an errno.
    private func submitToEngine(_ iocb: UnsafeMutablePointer<iocb>, facts: FileFacts) -> Int32 {
        let common = iocb.pointee.u.c
        guard common.__pad3 == 0 else { return EINVAL }
        let offset = Int64(common.offset)
        guard offset >= 0 else { return EINVAL }
        var segments: [(base: UnsafeMutableRawPointer?, length: Int)] = []
        if Int32(iocb.pointee.aio_lio_opcode) == Int32(IO_CMD_PREAD.rawValue) {
            guard common.nbytes <= UInt(Int.max) else { return EINVAL }
            let length = Int(common.nbytes)
            if length > 0 && common.buf != nil && isBadUserPointer(common.buf) { return EFAULT }
            segments.append((common.buf, length))
        } else {
            let vector = iocb.pointee.u.v
            guard vector.nr <= 1024 else { return EINVAL }
            if vector.nr > 0 {
                guard let list = vector.vec, !isBadUserPointer(list) else { return EFAULT }
                for i in 0..<Int(vector.nr) {
                    // size_t comes into Swift as Int: SIZE_MAX is -1 here.
                    let length = list[i].iov_len
                    guard length >= 0 else { return EINVAL }
                    if length > 0 && list[i].iov_base != nil && isBadUserPointer(list[i].iov_base) { return EFAULT }
                    segments.append((list[i].iov_base, length))
                }
            }
        }
        var total = 0
        for segment in segments {
            let (sum, overflow) = total.addingReportingOverflow(segment.length)
            guard !overflow else { return EINVAL }
            total = sum
        }
        guard !offset.addingReportingOverflow(Int64(total)).overflow else { return EINVAL }

        var resfd: Int32 = -1
        if common.flags & RingLayout.resfdFlag != 0 {
            resfd = cbaio_dup_cloexec(Int32(bitPattern: common.resfd))
            guard resfd >= 0 else { return errno == EMFILE ? EAGAIN : EBADF }
            guard isEventFD(resfd) else {
                close(resfd)
                return EINVAL
            }
        }
        // Reserve a slot, as the kernel takes one from the ring before it starts the read.
        let id: UInt64? = state.withLock { s in
            guard outstanding(s) < capacity else { return nil }
            let id = s.nextID
            s.nextID += 1
            s.engineInFlight += 1
            s.pending[id] = PendingRead(
                iocb: iocb, data: iocb.pointee.data, lengths: segments.map(\.length),
                results: [Int?](repeating: nil, count: segments.count), remaining: segments.count, resfd: resfd)
            s.idByIocb[UInt(bitPattern: iocb)] = id
            return id
        }
        guard let id else {
            if resfd >= 0 { close(resfd) }
            return EAGAIN
        }
        // The kernel writes aio_key = 0 into the user's iocb. (Only when it is not already 0: an iocb in
        // read-only memory would fault here, where the kernel returns EFAULT.)
        if iocb.pointee.key != 0 { iocb.pointee.key = 0 }

        var requests: [ReadRequest] = []
        var resolved: [(Int, Int)] = []
        var position = offset
        let fd = iocb.pointee.aio_fildes
        for (index, segment) in segments.enumerated() {
            let tag = id << 16 | UInt64(index)
            if let base = segment.base {
                let buffer = UnsafeMutableRawBufferPointer(start: base, count: segment.length)
                requests.append(ReadRequest(descriptor: fd, offset: position, into: buffer, tag: tag))
            } else if segment.length == 0 {
                resolved.append((index, 0))
            } else {
                resolved.append((index, -Int(EFAULT)))  // the kernel reports a NULL buffer in the event
            }
            position += Int64(segment.length)
        }
        var accepted = 0
        do throws(BufferedAIOError) {
            if !requests.isEmpty { accepted = try engine.submit(requests, checked: facts) }
        } catch {
            // Nothing was accepted: the iocb fails synchronously, as in the kernel.
            let resfd = state.withLock { s -> Int32 in
                s.engineInFlight -= 1
                s.idByIocb.removeValue(forKey: UInt(bitPattern: iocb))
                return s.pending.removeValue(forKey: id)?.resfd ?? -1
            }
            if resfd >= 0 { close(resfd) }
            return Int32(-error.negatedErrno)
        }
        engineReads.wrappingAdd(1, ordering: .relaxed)
        engineOutstanding.wrappingAdd(accepted, ordering: .sequentiallyConsistent)
        // Segments the engine did not take (it refused one after accepting others) fail in the event.
        for request in requests.dropFirst(accepted) {
            resolved.append((Int(request.tag & 0xffff), -Int(EAGAIN)))
        }
        if !resolved.isEmpty { complete(resolved.map { (id, $0.0, $0.1) }) }
        return 0
    }

    private func isEventFD(_ fd: Int32) -> Bool {
        var target = [CChar](repeating: 0, count: 64)
        let count = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
        guard count > 0 else { return false }
        let link = String(decoding: target.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return link == "anon_inode:[eventfd]"
    }

    // MARK: - Completion

    /// Reaps the engine's ready reads in this thread (the final copy) and publishes their events.
    func harvest(waiting: Bool = false) {
        guard !stopping.load(ordering: .relaxed) else { return }
        // A caller waiting in the engine (see getEvents) holds the token and reaps for everyone; other callers
        // skip, and the bridge waits its turn.
        if waiting {
            reaping.withLock { _ in _ = reapLocked(minimum: 0, timeout: .zero) }
        } else {
            _ = reaping.withLockIfAvailable { _ in reapLocked(minimum: 0, timeout: .zero) }
        }
    }

    /// Takes events from the engine and publishes them, with the token held: taking and publishing happen
    /// under it, so whoever holds it sees `engineOutstanding` exactly (never counting an event that another
    /// thread took but has not published yet).
    private func reapLocked(minimum: Int, timeout: Duration?) -> Int {
        guard let events = try? engine.getEvents(minimum: minimum, maximum: capacity, timeout: timeout),
            !events.isEmpty
        else { return 0 }
        engineOutstanding.wrappingSubtract(events.count, ordering: .sequentiallyConsistent)
        complete(events.map { (UInt64($0.tag >> 16), Int($0.tag & 0xffff), $0.rawResult) })
        return events.count
    }

    /// Records segment results; an iocb whose segments are all done is published with the kernel's
    /// readv rule: the bytes before the first short segment, or the first error if none were read.
    private func complete(_ results: [(id: UInt64, segment: Int, result: Int)]) {
        var signals: [Int32] = []
        state.withLock { s in
            var finished: [io_event] = []
            for (id, segment, result) in results {
                guard var read = s.pending[id], read.results[segment] == nil else { continue }
                read.results[segment] = result
                read.remaining -= 1
                guard read.remaining == 0 else {
                    s.pending[id] = read
                    continue
                }
                s.pending.removeValue(forKey: id)
                s.idByIocb.removeValue(forKey: UInt(bitPattern: read.iocb))
                s.engineInFlight -= 1
                var total = 0
                var failure: Int? = nil
                for (length, segmentResult) in zip(read.lengths, read.results) {
                    let value = segmentResult ?? 0
                    if value < 0 {
                        if total == 0 { failure = value }
                        break
                    }
                    total += value
                    if value < length { break }
                }
                var event = io_event()
                event.data = read.data
                event.obj = read.iocb
                event.res = UInt(bitPattern: failure ?? total)
                event.res2 = 0
                finished.append(event)
                if read.resfd >= 0 { signals.append(read.resfd) }
            }
            push(finished, &s)
        }
        for fd in signals {
            var one: UInt64 = 1
            _ = write(fd, &one, 8)
            close(fd)
        }
        wakeWaiters()
    }

    private func publishKernel(_ events: [io_event]) {
        state.withLock { s in
            s.kernelInFlight -= events.count
            push(events, &s)
        }
        wakeWaiters()
    }

    // MARK: - Ring

    private var headPointer: UnsafeMutablePointer<UInt32> {
        (ring + RingLayout.headOffset).assumingMemoryBound(to: UInt32.self)
    }
    private var tailPointer: UnsafeMutablePointer<UInt32> {
        (ring + RingLayout.tailOffset).assumingMemoryBound(to: UInt32.self)
    }

    /// The user's `head`, bounded: it is user-writable and never trusted.
    private func head() -> UInt32 { cbaio_load_acquire_u32(headPointer) % ringSize }

    private func ringUsed(_ s: State) -> Int {
        Int((s.tail &+ ringSize &- head()) % ringSize)
    }

    /// Appends events at the tail (overflow first, in order), then publishes the tail with release order.
    private func push(_ events: [io_event], _ s: inout State) {
        guard !events.isEmpty || !s.overflow.isEmpty else { return }
        let queue = s.overflow + events
        s.overflow.removeAll()
        let head = head()
        var tail = s.tail
        for (i, event) in queue.enumerated() {
            if (tail + 1) % ringSize == head {
                s.overflow.append(contentsOf: queue[i...])
                break
            }
            ring.storeBytes(
                of: event, toByteOffset: RingLayout.headerLength + Int(tail) * RingLayout.eventSize, as: io_event.self)
            tail = (tail + 1) % ringSize
        }
        s.tail = tail
        cbaio_store_release_u32(tailPointer, tail)
    }

    private func wakeWaiters() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if waiters.load(ordering: .sequentiallyConsistent) > 0 { cbaio_futex_wake_all(tailPointer) }
    }

    /// Moves up to `maximum` events from the ring to `events`.
    private func consume(_ events: UnsafeMutablePointer<io_event>, _ maximum: Int) -> Int {
        state.withLock { s in
            var head = head()
            var count = 0
            while count < maximum && head != s.tail {
                events[count] = ring.load(
                    fromByteOffset: RingLayout.headerLength + Int(head) * RingLayout.eventSize, as: io_event.self)
                head = (head + 1) % ringSize
                count += 1
            }
            if count > 0 {
                cbaio_store_release_u32(headPointer, head)
                if !s.overflow.isEmpty { push([], &s) }
            }
            return count
        }
    }

    private func ringIsEmpty() -> Bool { state.withLock { head() == $0.tail } }

    // MARK: - Get events and cancel

    /// io_getevents: the kernel's argument rules and libaio's shortcut (a zero timeout on an empty ring
    /// returns 0 before any check).
    func getEvents(
        _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>?,
        _ timeout: UnsafeMutablePointer<timespec>?
    ) -> Int32 {
        doorbell.enter()
        defer {
            doorbell.leave()
            harvest()  // after leaving: what became ready before is reaped here, what comes later rings
        }
        return waitForEvents(minimum, maximum, events, timeout)
    }

    private func waitForEvents(
        _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>?,
        _ timeout: UnsafeMutablePointer<timespec>?
    ) -> Int32 {
        harvest()
        if let timeout, !isBadUserPointer(timeout), timeout.pointee.tv_sec == 0, timeout.pointee.tv_nsec == 0,
            ringIsEmpty()
        {
            return 0
        }
        guard minimum >= 0, maximum >= 0, minimum <= maximum else { return -EINVAL }
        guard maximum > 0 else { return 0 }
        var deadline: timespec? = nil
        if let timeout {
            guard !isBadUserPointer(timeout) else { return -EFAULT }
            guard timeout.pointee.tv_sec >= 0, timeout.pointee.tv_nsec >= 0 else { return -EINVAL }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let nanoseconds = now.tv_nsec + timeout.pointee.tv_nsec
            deadline = timespec(
                tv_sec: now.tv_sec + timeout.pointee.tv_sec + nanoseconds / 1_000_000_000,
                tv_nsec: nanoseconds % 1_000_000_000)
        }
        var collected = 0
        while true {
            if !ringIsEmpty() {
                guard let events, !isBadUserPointer(events) else { return collected > 0 ? Int32(collected) : -EFAULT }
                collected += consume(events + collected, maximum - collected)
            }
            if collected >= minimum || collected == maximum { return Int32(collected) }
            if stopping.load(ordering: .acquiring) || state.withLock({ $0.dead }) {
                return collected > 0 ? Int32(collected) : -EINVAL
            }
            var remaining: Int64 = -1
            if let deadline {
                var now = timespec()
                clock_gettime(CLOCK_MONOTONIC, &now)
                remaining = Int64(deadline.tv_sec - now.tv_sec) * 1_000_000_000 + Int64(deadline.tv_nsec - now.tv_nsec)
                if remaining <= 0 { return Int32(collected) }
            }
            if !state.withLock({ $0.kernelInFlight > 0 }) {
                // Only engine reads are outstanding: wait in the engine itself, which sleeps in a pending read's
                // pread and wakes the moment its I/O ends, and do the final copy here, with no bridge hop.
                // One event is enough to come back and look at the ring again. Under the token nobody else
                // reaps, so an outstanding engine request is sure to come back to this thread.
                let timeout: Duration? = remaining < 0 ? nil : .nanoseconds(remaining)
                let waited = reaping.withLock { _ in
                    guard engineOutstanding.load(ordering: .sequentiallyConsistent) > 0, ringIsEmpty() else {
                        return false
                    }
                    _ = reapLocked(minimum: 1, timeout: timeout)
                    return true
                }
                if waited { continue }
            }
            waiters.wrappingAdd(1, ordering: .sequentiallyConsistent)
            // Asleep here this thread reaps nothing: engine events must ring the bridge, which publishes them.
            doorbell.leave()
            harvest()
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            let seen = cbaio_load_acquire_u32(tailPointer)
            var interrupted = false
            if ringIsEmpty() && !state.withLock({ $0.dead }) {
                interrupted = cbaio_futex_wait(tailPointer, seen, remaining) == -EINTR
            }
            doorbell.enter()
            waiters.wrappingSubtract(1, ordering: .sequentiallyConsistent)
            if interrupted { return collected > 0 ? Int32(collected) : -EINTR }
            harvest()
        }
    }

    /// io_cancel: the engine's reads are file reads, which the kernel does not cancel either (EINVAL; the
    /// event still arrives). Anything else is the kernel context's.
    func cancel(_ iocb: UnsafeMutablePointer<iocb>, _ result: UnsafeMutablePointer<io_event>?) -> Int32 {
        if state.withLock({ $0.idByIocb[UInt(bitPattern: iocb)] != nil }) { return -EINVAL }
        return Int32(cbaio_sys_io_cancel(kernel, iocb, result))
    }

    // MARK: - Statistics

    func report(when moment: String) {
        guard StatisticsReport.destination != nil else { return }
        StatisticsReport.write(
            "libbaio: pid \(owner) context 0x\(String(handle, radix: 16)) at \(moment): "
                + "engineReads=\(engineReads.load(ordering: .relaxed)) "
                + "kernelIocbs=\(passthroughIocbs.load(ordering: .relaxed)) \(engine.statistics)")
    }
}
