// This file owns the engine's submit side (stage 1 of the 2011 proposal): find the missing pages, start
// them, never wait for data.
import CBufferedAIO
import Glibc

extension Engine {
    // Submitting is two steps. ``prepare(_:)`` validates the read and tries the cached case, one
    // preadv2(RWF_NOWAIT) of the whole range, which for most reads is all there is to do: no request object
    // is made. ``start(_:sink:checked:)`` takes on a read the first step could not finish. Front ends call
    // both: an IOContext with the caller's buffer, the async API with a temporary one first
    // (``Prepared/retargeted(to:)``), libbaio only the second, with its own probe's result.

    /// What ``start(_:sink:checked:)`` did with a read.
    enum Outcome {
        /// Finished inside submit (zero length, at end of file, cached after all, or failed in the event).
        case finished(Request)
        /// Every page is already resident: the reaper can copy now.
        case ready(Request)
        /// Handed to the poller, which will deliver it to the sink.
        case pending(Request)
    }

    /// The kernel's MAX_RW_COUNT: longer reads are silently clamped, as `read(2)` does.
    static let maximumReadCount = 0x7fff_f000

    /// A validated read with its descriptors pinned, and the fast path's result, so that the slow path does
    /// not repeat the syscall.
    struct Prepared {
        let read: ReadRequest
        let fd: Int32
        let directFD: Int32
        let path: String?
        let pins: FilePins
        let length: Int
        /// The fast path's RWF_NOWAIT result (bytes, or a negative errno), if it ran.
        let firstCopy: Int?
        /// Set when every byte was cached and is now in the read's buffer: the read is done, and no request
        /// object is needed.
        var copiedAll: Int? = nil

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

    /// Validates one read and tries the cached case: one preadv2(RWF_NOWAIT) of the whole range. When it
    /// copied every byte, ``Prepared/copiedAll`` says how many and the read is done.
    func prepare(_ read: ReadRequest) throws(BufferedAIOError) -> Prepared {
        guard !isStopped else {
            let (fd, path): (Int32, String?) =
                switch read.source {
                case .descriptor(let fd): (fd, nil)
                case .file(let file): (-1, file.path)
                }
            let name = BufferedAIOError.name(fd, path: path)
            throw BufferedAIOError(
                .shutDown, "cannot read \(name): the engine is shut down", errno: .canceled, path: path)
        }
        let (fd, directFD, path, pins) = try descriptors(of: read)
        try validate(read, fd: fd, path: path)
        let length = min(read.length, Self.maximumReadCount)
        // Before any other syscall: a bad descriptor makes it fail, and the slow path's validation then
        // says exactly why.
        var firstCopy: Int? = nil
        var copiedAll: Int? = nil
        if read.mode == .buffered && length > 0 {
            let want = min(length, configuration.inlineCopyLimit)
            let copied = system_preadv2(fd, read.buffer.baseAddress, want, read.offset, cbaio_RWF_NOWAIT)
            if copied == length {
                counters.completedInline.add(1)
                counters.pagesFoundResident.add(pageCount(bytes: copied))
                counters.submitted.add(1)
                copiedAll = copied
            }
            firstCopy = copied >= 0 ? copied : -Int(errno)
        }
        return Prepared(
            read: read, fd: fd, directFD: directFD, path: path, pins: pins, length: length, firstCopy: firstCopy,
            copiedAll: copiedAll)
    }

    /// A finished request for a read ``prepare(_:)`` copied whole, for a front end that needs one.
    func finishedRequest(copying count: Int, of read: ReadRequest, sink: CompletionSink) -> Request {
        let request = Request(
            serial: serials.wrappingAdd(1, ordering: .relaxed).oldValue, tag: read.tag, offset: read.offset,
            length: count, buffer: read.buffer.baseAddress, path: nil, sink: sink)
        request.done = count
        request.finish(count)
        sink.accept(request)
        return request
    }

    /// Starts a read ``prepare(_:)`` could not finish: pins it in a request, finds and starts its missing
    /// pages, and hands it to the poller. Never waits for data I/O. `checked` is what a caller already
    /// learned of the descriptor (libbaio routes each iocb by it), so it is not asked twice.
    func start(
        _ prepared: Prepared, sink: CompletionSink, checked: FileFacts? = nil
    ) throws(BufferedAIOError)
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
        let outcome = try route(
            request, read: read, fd: fd, directFD: prepared.directFD, pins: prepared.pins, info: info,
            firstCopy: prepared.firstCopy)
        counters.submitted.add(1)
        // The sink learns of the request before the poller can deliver it.
        sink.accept(request)
        if case .pending = outcome { enqueue(request) }
        return outcome
    }

    /// Finishes a read at end of file, or sends it down the direct or the buffered path.
    private func route(
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
                counters.pagesFoundResident.add(pageCount(bytes: copied))
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
        guard request.references == 0 else { return .pending(request) }
        // Nobody else can see the request yet, so no cancel can race this.
        request.handle(.didBecomeResident)
        return .ready(request)
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
        let start = request.offset + Int64(request.done)
        let end = min(request.offset + Int64(request.length), Int64(info.st_size))
        request.runs = []
        request.runIndex = 0
        request.references = 0
        request.lastProgress = .now
        request.stalls = 0
        guard start < end else { return }
        let whole = PageRun(bytes: start, end)

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
            let data = Residency.dataSegments(fd: request.fd, start: start, end: end).map { PageRun(bytes: $0.0, $0.1) }
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

    /// Asks the kernel to read `run`, in calls no larger than one readahead window (see
    /// ``Residency/readAhead(fd:from:to:chunk:call:)``).
    func issueReadahead(fd: Int32, run: PageRun, device: UInt64) {
        let chunk = Residency.readaheadChunk(device: device, limit: configuration.readaheadChunkLimit)
        Residency.readAhead(
            fd: fd, from: run.byteStart, to: run.byteEnd, chunk: chunk, call: configuration.readaheadCall)
        counters.readaheadBytes.add(Int(run.byteEnd - run.byteStart))
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
