// This file owns the engine's submit side (stage 1 of the 2011 proposal: find the missing pages, start
// them, never wait for data) and its reaper (stage 4: the final copy in the caller's context).
// The poller (stages 2 and 3) is in Poller.swift.
import CBufferedAIO
import Glibc
import Synchronization

private let engineNumbers = Atomic<Int>(0)

/// What fstat and fcntl(F_GETFL) said of a descriptor, for a caller in this package that learned them
/// before submitting (libbaio routes each iocb by them).
package struct FileFacts: Sendable {
    package let info: stat
    package let statusFlags: Int32

    package init(info: stat, statusFlags: Int32) {
        self.info = info
        self.statusFlags = statusFlags
    }
}

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
    private let serials = Atomic<UInt64>(0)
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
        let number = engineNumbers.wrappingAdd(1, ordering: .relaxed).oldValue
        self.threadName = "baio-poll-\(number % 100_000)"
        let fd = system_eventfd()
        guard fd >= 0 else {
            throw BufferedAIOError(.systemResource, "eventfd failed", syscall: "eventfd", errno: Errno(rawValue: errno))
        }
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

    // MARK: - Submit

    enum Outcome {
        /// Finished inside submit (cached, zero length, at end of file, or failed in the event).
        case finished(Request)
        /// Every page is already resident: the reaper can copy now.
        case ready(Request)
        /// Handed to the poller, which will deliver it to the sink.
        case pending(Request)
    }

    /// The kernel's MAX_RW_COUNT: longer reads are silently clamped, as `read(2)` does.
    static let maximumReadCount = 0x7fff_f000

    /// A read past its fast path: validated, its descriptors pinned, and the fast path's result kept so the
    /// slow path does not repeat the syscall.
    struct Prepared {
        let read: ReadRequest
        let fd: Int32
        let directFD: Int32
        let path: String?
        let pins: FilePins
        let length: Int
        /// The fast path's RWF_NOWAIT result (bytes, or a negative errno), if it ran.
        let firstCopy: Int?

        /// The same read into another buffer, for a caller whose fast path used a temporary one. A miss
        /// that copied nothing is kept (its syscall already started the read); a copied prefix is not, since
        /// those bytes are not in the new buffer.
        func retargeted(to buffer: UnsafeMutableRawBufferPointer) -> Prepared {
            var read = read
            read.buffer = buffer
            let kept = firstCopy.flatMap { $0 <= 0 ? $0 : nil }
            return Prepared(
                read: read, fd: fd, directFD: directFD, path: path, pins: pins, length: length, firstCopy: kept)
        }
    }

    enum FastOutcome {
        /// Every byte was cached and is now in the caller's buffer: no request object is needed.
        case copied(Int)
        case slow(Prepared)
    }

    /// Validates one read and tries the cached case: one preadv2(RWF_NOWAIT) of the whole range.
    func submitFast(_ read: ReadRequest) throws(BufferedAIOError) -> FastOutcome {
        guard !isStopped else {
            throw BufferedAIOError(.closed, "the context is closed", errno: .badFileDescriptor)
        }
        let (fd, directFD, path, pins) = try descriptors(of: read)
        try validate(read, fd: fd, path: path)
        let length = min(read.length, Self.maximumReadCount)
        // Before any other syscall: a bad descriptor makes it fail, and the slow path's validation then
        // says exactly why.
        var firstCopy: Int? = nil
        if read.mode == .buffered && length > 0 {
            let want = min(length, configuration.inlineCopyLimit)
            let copied = system_preadv2(fd, read.buffer.baseAddress, want, read.offset, cbaio_RWF_NOWAIT)
            if copied == length {
                counters.completedInline.add(1)
                counters.pagesFoundResident.add((copied + systemPageSize - 1) / systemPageSize)
                counters.submitted.add(1)
                return .copied(copied)
            }
            firstCopy = copied >= 0 ? copied : -Int(errno)
        }
        return .slow(
            Prepared(read: read, fd: fd, directFD: directFD, path: path, pins: pins, length: length, firstCopy: firstCopy))
    }

    /// Validates, pins and starts one read. Never waits for data I/O.
    func submit(_ read: ReadRequest, sink: CompletionSink) throws(BufferedAIOError) -> Outcome {
        switch try submitFast(read) {
        case .copied(let count):
            let request = Request(
                serial: serials.wrappingAdd(1, ordering: .relaxed).oldValue, tag: read.tag, offset: read.offset,
                length: count, buffer: read.buffer.baseAddress, path: nil, sink: sink)
            request.done = count
            request.finish(count)
            sink.accept(request)
            return .finished(request)
        case .slow(let prepared):
            return try submitSlow(prepared, sink: sink)
        }
    }

    /// The rest of ``submit(_:sink:)`` for a read the fast path could not finish. `checked` is what a
    /// caller already learned of the descriptor (libbaio routes each iocb by it), so it is not asked twice.
    func submitSlow(_ prepared: Prepared, sink: CompletionSink, checked: FileFacts? = nil) throws(BufferedAIOError)
        -> Outcome
    {
        let (read, fd, path) = (prepared.read, prepared.fd, prepared.path)
        let request = Request(
            serial: serials.wrappingAdd(1, ordering: .relaxed).oldValue, tag: read.tag, offset: read.offset,
            length: prepared.length, buffer: read.buffer.baseAddress, path: path, sink: sink)
        let facts: FileFacts
        if let checked {
            facts = checked
        } else {
            var info = stat()
            guard system_fstat(fd, &info) == 0 else {
                throw .syscall("fstat", Errno(rawValue: errno), fd: fd, path: path, code: .badDescriptor)
            }
            facts = FileFacts(info: info, statusFlags: system_fcntl_getfl(fd))
        }
        let info = facts.info
        try validateFile(fd: fd, facts: facts, path: path)
        let outcome = try start(
            request, read: read, fd: fd, directFD: prepared.directFD, pins: prepared.pins, info: info,
            firstCopy: prepared.firstCopy)
        counters.submitted.add(1)
        // Every page resident: the request goes to the sink's ready queue now, so it is no longer pending;
        // left pending, cancel(tag:) or a reaper's claimPending could take it too, and one read gave two
        // events (issue 13's soak: the second copy wrote a buffer the caller had already freed).
        if case .ready = outcome { _ = request.transition(from: .pending, to: .ready) }
        // The sink learns of the request before the poller can deliver it.
        sink.accept(request)
        if case .pending = outcome { enqueue(request) }
        return outcome
    }

    private func start(
        _ request: Request, read: ReadRequest, fd: Int32, directFD: Int32, pins: FilePins, info: stat,
        firstCopy: Int?
    ) throws(BufferedAIOError) -> Outcome {
        let length = request.length

        // A zero-length read, or one at or past end of file, completes with 0 as the kernel's does.
        if length == 0 || read.offset >= Int64(info.st_size) {
            request.finish(0)
            counters.completedInline.add(1)
            return .finished(request)
        }

        if read.mode != .buffered,
            let outcome = try submitDirect(request, read: read, fd: fd, directFD: directFD, pins: pins, info: info)
        {
            return outcome
        }
        return try submitBuffered(request, fd: fd, pin: pins.buffered, info: info, firstCopy: firstCopy)
    }

    /// `firstCopy` is the fast path's RWF_NOWAIT result (bytes, or a negative errno) if it ran.
    private func submitBuffered(
        _ request: Request, fd: Int32, pin: DescriptorPin?, info: stat, firstCopy: Int?
    ) throws(BufferedAIOError) -> Outcome {
        // Copy whatever cached prefix there is, bounded so one submit never copies without end.
        let want = min(request.length, configuration.inlineCopyLimit)
        var copied: Int
        if let firstCopy {
            copied = firstCopy
        } else {
            copied = system_preadv2(fd, request.buffer, want, request.offset, cbaio_RWF_NOWAIT)
            if copied < 0 { copied = -Int(errno) }
        }
        let fileEnd = Int64(info.st_size)
        var nowaitMissed = false
        if copied >= 0 {
            request.done = copied
            // Judged by the file size, not by a 0 return: Linux 5.9 and 5.10 return 0 before end of file.
            let atEOF = request.offset + Int64(copied) >= fileEnd
            if copied == request.length || (copied < want && atEOF) {
                request.finish(copied)
                counters.completedInline.add(1)
                counters.pagesFoundResident.add((copied + systemPageSize - 1) / systemPageSize)
                return .finished(request)
            }
            nowaitMissed = copied < want
        } else {
            switch Int32(-copied) {
            case EAGAIN: nowaitMissed = true
            case EOPNOTSUPP, EINVAL: request.nowaitSupported = false
            default:
                // EFAULT for a bad buffer, EIO: the kernel reports these in the event, and so do we.
                request.failedCall = "preadv2"
                request.finish(copied)
                return .finished(request)
            }
        }

        guard request.pinDescriptor(fd, pin) else {
            // Out of descriptors: the contract's answer is EAGAIN, never an errno the kernel cannot return.
            throw BufferedAIOError(
                .wouldBlock, "cannot pin \(BufferedAIOError.name(fd, path: request.path)) for the read",
                syscall: "fcntl(F_DUPFD_CLOEXEC)", errno: .resourceTemporarilyUnavailable, path: request.path)
        }
        chooseProbe(for: request, info: info)
        startMissingPages(request, info: info, nowaitStartedFirstPage: nowaitMissed && Residency.nowaitMissStartsRead)
        return request.references == 0 ? .ready(request) : .pending(request)
    }

    func chooseProbe(for request: Request, info: stat) {
        let end = request.offset + Int64(request.length)
        if configuration.residencyProbe == .automatic, Residency.mincoreIsTrustworthy(info),
            let mapping = mappings.mapping(fd: request.fd, info: info, covering: end)
        {
            request.probe = .mincore(mapping)
        } else {
            request.probe = request.nowaitSupported ? .nowait : .none
        }
    }

    /// Finds the missing pages of what is left of the request, takes one reference per page, and starts
    /// reading them. Holes are skipped: WILLNEED would fill them with zero pages for nothing, and the
    /// reaper's pread reads them as zeros without I/O.
    func startMissingPages(_ request: Request, info: stat, nowaitStartedFirstPage: Bool) {
        let pageSize = Int64(systemPageSize)
        let start = request.offset + Int64(request.done)
        let end = min(request.offset + Int64(request.length), Int64(info.st_size))
        request.runs = []
        request.runIndex = 0
        request.references = 0
        request.lastProgress = .now
        request.stalls = 0
        guard start < end else { return }
        let whole = PageRun(first: start / pageSize, count: (end - 1) / pageSize - start / pageSize + 1)

        if whole.count == 1 && nowaitStartedFirstPage && request.canProbe {
            // The common random 4 KiB read: the RWF_NOWAIT miss just started this page, so there is nothing
            // to scan and nothing to ask (a hole page becomes a zero page without I/O the same way).
            request.runs = [whole]
            request.references = 1
            counters.pagesFoundMissing.add(1)
            counters.nowaitStartedBytes.add(systemPageSize)
            return
        }
        var candidates: [PageRun]
        switch request.probe {
        case .mincore(let mapping): candidates = mapping.missingRuns(in: whole, maximumRuns: 64)
        case .nowait: candidates = [whole]
        case .none: return  // nothing can tell residency: the reaper reads, blocking
        }
        // Holes matter only when they could be large; a few pages of zeros cost less than the lseek.
        if whole.count > 16 {
            let data = Residency.dataSegments(fd: request.fd, start: start, end: end).map { segment in
                PageRun(first: segment.0 / pageSize, count: (segment.1 - 1) / pageSize - segment.0 / pageSize + 1)
            }
            if data.count != 1 || data[0] != whole { candidates = intersect(candidates, data) }
        }
        request.runs = candidates
        request.references = candidates.reduce(0) { $0 + $1.count }
        counters.pagesFoundMissing.add(Int(request.references))
        counters.pagesFoundResident.add(Int(whole.count - request.references))

        // The RWF_NOWAIT miss already started the first missing page (Linux 6.12+); a lone page needs
        // nothing more, which saves the ~19 us WILLNEED costs per call here.
        var runs = candidates[...]
        if nowaitStartedFirstPage, var first = runs.first, first.first == whole.first {
            counters.nowaitStartedBytes.add(systemPageSize)
            first.first += 1
            first.count -= 1
            runs = (first.count > 0 ? [first] : []) + runs.dropFirst()
        }
        for run in runs { issueReadahead(fd: request.fd, run: run, device: UInt64(info.st_dev)) }
    }

    /// Asks the kernel to read `run`, in calls no larger than one readahead window, because a larger call
    /// silently reads only the first window's worth.
    func issueReadahead(fd: Int32, run: PageRun, device: UInt64) {
        let pageSize = Int64(systemPageSize)
        let chunk = Int64(max(systemPageSize, min(configuration.readaheadChunkLimit, Residency.readaheadWindow(device: device))))
        var position = run.first * pageSize
        let end = run.end * pageSize
        while position < end {
            let length = min(chunk, end - position)
            switch configuration.readaheadCall {
            case .fadvise: _ = system_posix_fadvise(fd, position, length, POSIX_FADV_WILLNEED)
            case .readahead: _ = system_readahead(fd, position, Int(length))
            }
            counters.readaheadBytes.add(Int(length))
            position += length
        }
    }

    /// Hands a pending request to the poller, waking it only if it sleeps without a timeout: a poller
    /// that is backing off will see the request on its next pass, soon enough for I/O that takes longer.
    func enqueue(_ request: Request) {
        inbox.withLock { inbox in
            inbox.requests.append(request)
            if (inbox.pollerIdle || request.direct != nil) && !inbox.wakeClosed { system_eventfd_signal(wakeFD) }
            inbox.pollerIdle = false
        }
    }

    // MARK: - Reap

    /// The reaper: finishes a delivered request with the final copy, in the caller's context. Returns
    /// false if the request went back to the poller because its pages were evicted since they were seen.
    func reap(_ request: Request) -> Bool {
        let finished = reapOnce(request)
        if finished { counters.completed.add(1) }
        return finished
    }

    private func reapOnce(_ request: Request) -> Bool {
        switch request.state {
        case .finished, .cancelled: return true
        case .pending, .ready: break
        }
        if let direct = request.direct {
            request.failedCall = "io_getevents"
            request.finish(direct.result)
            return true
        }
        while request.done < request.length {
            let remaining = request.length - request.done
            let position = request.offset + Int64(request.done)
            if request.forceBlocking || !request.nowaitSupported {
                return finishBlocking(request)
            }
            let count = system_preadv2(request.fd, request.buffer! + request.done, remaining, position, cbaio_RWF_NOWAIT)
            if count > 0 {
                request.done += count
                continue
            }
            if count == 0 { break }
            switch errno {
            case EAGAIN:
                if request.rearms < configuration.maximumRearms {
                    rearm(request)
                    return false
                }
                return finishBlocking(request)
            case EOPNOTSUPP:
                request.nowaitSupported = false
            default:
                request.failedCall = "preadv2"
                request.finish(request.done > 0 ? request.done : -Int(errno))
                return true
            }
        }
        request.finish(request.done)
        return true
    }

    /// Finishes a request its reaper claimed from the poller with a blocking pread: the caller had nothing
    /// else to do but wait, and a pread sleeps on the page lock and wakes the moment the I/O ends.
    /// Touches only the reaper's fields; the poller drops the request when it sees it is no longer pending.
    func reapBlocking(_ request: Request) {
        counters.reaperWaits.add(1)
        counters.completed.add(1)
        readRemainder(request)
    }

    /// The safety net: a blocking pread of what is left, so the data is always right even if the cache
    /// keeps losing it.
    private func finishBlocking(_ request: Request) -> Bool {
        counters.blockingReads.add(1)
        readRemainder(request)
        return true
    }

    /// Reads the rest of the request with blocking preads and finishes it. The kernel's own short-count
    /// rule applies: bytes read before an error are returned, the error only when nothing was.
    private func readRemainder(_ request: Request) {
        while request.done < request.length {
            let count = system_pread(
                request.fd, request.buffer! + request.done, request.length - request.done,
                request.offset + Int64(request.done))
            if count > 0 {
                request.done += count
            } else if count == 0 {
                break
            } else {
                request.failedCall = "pread"
                request.finish(request.done > 0 ? request.done : -Int(errno))
                return
            }
        }
        request.finish(request.done)
    }

    /// Sends a request whose pages were evicted between completion and reap back to the poller, with its
    /// readahead issued again.
    private func rearm(_ request: Request) {
        request.rearms += 1
        counters.rearms.add(1)
        var info = stat()
        guard system_fstat(request.fd, &info) == 0 else {
            request.forceBlocking = true
            enqueue(request)
            return
        }
        startMissingPages(request, info: info, nowaitStartedFirstPage: Residency.nowaitMissStartsRead)
        if request.references == 0, case .mincore = request.probe {
            // mincore says resident but RWF_NOWAIT just missed: mincore is not telling this caller the
            // truth (an ACL or namespace the inode check cannot see). Trust RWF_NOWAIT from now on.
            request.probe = .nowait
            startMissingPages(request, info: info, nowaitStartedFirstPage: true)
        }
        request.sharedState.store(Request.State.pending.rawValue, ordering: .releasing)
        enqueue(request)
    }

    // MARK: - Validation

    struct FilePins {
        var buffered: DescriptorPin?
        var direct: DescriptorPin?
    }

    private func descriptors(of read: ReadRequest) throws(BufferedAIOError) -> (Int32, Int32, String?, FilePins) {
        switch read.source {
        case .descriptor(let fd):
            return (fd, -1, nil, FilePins())
        case .file(let file):
            let d = file.descriptors.withLock { $0 }
            guard let buffered = d.buffered else {
                throw BufferedAIOError(.closed, "'\(file.path)' is closed", errno: .badFileDescriptor, path: file.path)
            }
            return (buffered.fd, d.direct?.fd ?? -1, file.path, FilePins(buffered: buffered, direct: d.direct))
        }
    }

    private func validate(_ read: ReadRequest, fd: Int32, path: String?) throws(BufferedAIOError) {
        // Built only when failing: formatting it on every submit would cost an allocation per cached read.
        var name: String { BufferedAIOError.name(fd, path: path) }
        guard read.offset >= 0 else {
            throw BufferedAIOError(
                .invalidArgument, "negative offset \(read.offset) for \(name)", errno: .invalidArgument, path: path)
        }
        guard read.length >= 0 else {
            throw BufferedAIOError(
                .invalidArgument, "negative length \(read.length) for \(name)", errno: .invalidArgument, path: path)
        }
        guard !read.offset.addingReportingOverflow(Int64(read.length)).overflow else {
            throw BufferedAIOError(
                .invalidArgument, "offset \(read.offset) + length \(read.length) overflows for \(name)",
                errno: .invalidArgument, path: path)
        }
        guard read.buffer.count >= read.length else {
            throw BufferedAIOError(
                .bufferTooSmall,
                "buffer of \(read.buffer.count) bytes is smaller than the \(read.length) bytes asked of \(name)",
                errno: .invalidArgument, path: path)
        }
    }

    private func validateFile(fd: Int32, facts: FileFacts, path: String?) throws(BufferedAIOError) {
        // Built only when failing: formatting it on every submit would cost an allocation per cached read.
        var name: String { BufferedAIOError.name(fd, path: path) }
        let flags = facts.statusFlags
        if flags & O_ACCMODE == O_WRONLY || flags & cbaio_O_PATH != 0 {
            throw BufferedAIOError(
                .notOpenForReading, "\(name) is not open for reading", errno: .badFileDescriptor, path: path)
        }
        switch facts.info.st_mode & S_IFMT {
        case S_IFREG: return
        case S_IFDIR:
            throw BufferedAIOError(.isDirectory, "\(name) is a directory", errno: .invalidArgument, path: path)
        default:
            throw BufferedAIOError(
                .notRegularFile,
                "\(name) is not a regular file: pipes, sockets and devices have no page cache to track; read them with read(2)",
                errno: .illegalSeek, path: path)
        }
    }
}

/// The pages in both lists of sorted, disjoint runs.
func intersect(_ a: [PageRun], _ b: [PageRun]) -> [PageRun] {
    var result: [PageRun] = []
    var i = 0
    var j = 0
    while i < a.count && j < b.count {
        let first = max(a[i].first, b[j].first)
        let end = min(a[i].end, b[j].end)
        if first < end { result.append(PageRun(first: first, count: end - first)) }
        if a[i].end < b[j].end { i += 1 } else { j += 1 }
    }
    return result
}
