// This file owns the public page-cache utilities the CLI and tests share: residency of a range as the
// kernel reports it to this caller, eviction, and warming.
import CBufferedAIO
import Glibc

/// Page-cache facts about a file, as this caller may see them.
public enum PageCache {
    /// Residency of a byte range.
    public struct Residency: Sendable, Hashable {
        /// Pages in the range.
        public var totalPages: Int
        /// Resident (uptodate) pages, per mincore.
        public var residentPages: Int
        /// One flag per page, for maps; empty if not asked for.
        public var map: [Bool]
    }

    /// The resident pages of `[offset, offset + length)` per mincore, or nil when the kernel would lie to
    /// this caller (it reports every page resident for a file the caller neither owns nor may write).
    ///
    /// - Parameters:
    ///   - descriptor: A descriptor open for reading.
    ///   - offset: The first byte; rounded down to a page.
    ///   - length: Bytes; nil means to end of file.
    ///   - withMap: Also return one flag per page.
    /// - Throws: ``BufferedAIOError`` if fstat or mmap fails.
    ///
    /// The corresponding C function is `mincore`.
    public static func residency(
        descriptor: Int32, offset: Int64 = 0, length: Int64? = nil, withMap: Bool = false
    ) throws(BufferedAIOError) -> Residency? {
        var info = stat()
        guard system_fstat(descriptor, &info) == 0 else {
            throw .syscall("fstat", Errno(rawValue: errno), fd: descriptor, path: nil, code: .badDescriptor)
        }
        guard BufferedAIO.Residency.mincoreIsTrustworthy(info) else { return nil }
        let size = Int64(info.st_size)
        let end = min(
            size, length.map { offset.addingReportingOverflow($0).overflow ? Int64.max : offset + $0 } ?? size)
        guard offset >= 0, end > offset else { return Residency(totalPages: 0, residentPages: 0, map: []) }
        let range = PageRun(bytes: offset, end)
        let (first, pages) = (range.first, range.count)
        guard let mapping = FileMapping(fd: descriptor, length: Int(range.byteEnd)) else {
            throw .syscall("mmap", Errno(rawValue: errno), fd: descriptor, path: nil, code: .systemResource)
        }
        let missing = mapping.missingRuns(in: PageRun(first: first, count: pages), maximumRuns: withMap ? Int.max : 1)
        var result = Residency(totalPages: Int(pages), residentPages: 0, map: [])
        if withMap {
            var map = [Bool](repeating: true, count: Int(pages))
            for run in missing { for page in run.first..<run.end { map[Int(page - first)] = false } }
            result.map = map
            result.residentPages = map.reduce(0) { $0 + ($1 ? 1 : 0) }
        } else {
            // With one run allowed, everything from the first missing page on is folded into it; count
            // exactly instead.
            result.residentPages = Int(pages - exactMissing(mapping, PageRun(first: first, count: pages)))
        }
        return result
    }

    private static func exactMissing(_ mapping: FileMapping, _ run: PageRun) -> Int64 {
        var missing: Int64 = 0
        var start = run.first
        while start < run.end {
            let chunk = PageRun(first: start, count: min(65_536, run.end - start))
            missing += mapping.missingRuns(in: chunk, maximumRuns: Int.max).reduce(0) { $0 + $1.count }
            start = chunk.end
        }
        return missing
    }

    /// Whether mincore tells this caller the truth about the file behind `descriptor` (the caller owns it,
    /// may write it, or is root). Where it does not, the engine probes with `preadv2(RWF_NOWAIT)` instead.
    public static func mincoreIsTrustworthy(descriptor: Int32) -> Bool {
        var info = stat()
        guard system_fstat(descriptor, &info) == 0 else { return false }
        return BufferedAIO.Residency.mincoreIsTrustworthy(info)
    }

    /// Reads `[offset, offset + length)` into the page cache with readahead (chunked to one readahead
    /// window per call) and waits until every page is resident, checking with RWF_NOWAIT probes (accurate
    /// for every caller) into a small scratch buffer. Pages that stay missing after `timeout` are read
    /// with a blocking pread so the call always ends with the range cached. Returns the bytes warmed.
    ///
    /// The corresponding C functions are `posix_fadvise(POSIX_FADV_WILLNEED)` and `preadv2(RWF_NOWAIT)`.
    @discardableResult
    public static func warm(
        descriptor: Int32, offset: Int64 = 0, length: Int64? = nil, timeout: Duration = .seconds(30)
    ) throws(BufferedAIOError) -> Int64 {
        var info = stat()
        guard system_fstat(descriptor, &info) == 0 else {
            throw .syscall("fstat", Errno(rawValue: errno), fd: descriptor, path: nil, code: .badDescriptor)
        }
        let size = Int64(info.st_size)
        let end = min(
            size, length.map { offset.addingReportingOverflow($0).overflow ? Int64.max : offset + $0 } ?? size)
        guard offset >= 0, end > offset else { return 0 }
        let chunk = BufferedAIO.Residency.readaheadChunk(device: UInt64(info.st_dev), limit: 2 << 20)
        BufferedAIO.Residency.readAhead(fd: descriptor, from: offset, to: end, chunk: chunk)
        let scratchLength = 1 << 20
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchLength, alignment: systemPageSize)
        defer { scratch.deallocate() }
        let deadline = ContinuousClock.now + timeout
        var confirmed = offset
        var delay = Duration.microseconds(50)
        while confirmed < end {
            let want = Int(min(Int64(scratchLength), end - confirmed))
            let count = system_preadv2(descriptor, scratch, want, confirmed, cbaio_RWF_NOWAIT)
            if count > 0 {
                confirmed += Int64(count)
                delay = .microseconds(50)
                continue
            }
            if count == 0 { break }
            if errno != EAGAIN || ContinuousClock.now > deadline {
                // RWF_NOWAIT unsupported (tmpfs), or pages that never arrive: a blocking read caches them.
                let read = system_pread(descriptor, scratch, want, confirmed)
                if read <= 0 { break }
                confirmed += Int64(read)
                continue
            }
            // Not there yet: ask again for what is left (a chunk may have been dropped), then wait.
            _ = system_posix_fadvise(descriptor, confirmed, min(chunk, end - confirmed), POSIX_FADV_WILLNEED)
            _ = system_ppoll_readable(-1, timeout: delay)
            delay = min(delay * 2, .milliseconds(5))
        }
        return confirmed - offset
    }

    /// Drops the file's clean pages from the cache: writes back dirty ones, then
    /// `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file.
    public static func evict(descriptor: Int32) {
        _ = system_fdatasync(descriptor)
        _ = system_posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
    }
}
