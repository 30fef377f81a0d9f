// This file owns the mincore windows onto the page cache: `FileMapping`, a read-only shared mapping of a
// file, and `MappingCache`, which shares one per open file among the requests that probe it.
import Glibc
import Synchronization

/// A read-only shared mapping of a whole file, used only as mincore's window onto the page cache.
///
/// Data is never copied from it: a truncation makes a touch beyond the new end of file raise SIGBUS, so
/// every byte a caller gets is copied by pread. Requests on the same file share one mapping; the last
/// one to finish unmaps it.
final class FileMapping: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let length: Int

    init?(fd: Int32, length: Int) {
        guard length > 0, let base = system_mmap(length, fd) else { return nil }
        self.base = base
        self.length = length
    }

    deinit { _ = system_munmap(base, length) }

    /// mincore's vector for a probe of `pages` pages: at most 4096 bytes (one per page), at least 1.
    static func vectorLength(pages: Int64) -> Int { Int(min(max(pages, 1), 4096)) }

    /// Counts the leading resident pages of `run`, at most `limit` of them. Pages beyond the mapping count
    /// as not resident.
    func residentPrefix(of run: PageRun, limit: Int64) -> Int64 {
        let pageSize = Int64(systemPageSize)
        let mappedPages = Int64(length) / pageSize
        let end = min(run.first + min(run.count, limit), mappedPages)
        var page = run.first
        var prefix: Int64 = 0
        // Sized to the probe, not to the 4096-page window: Swift keeps a temporary allocation on the stack
        // only when it is small, and the poller's typical probe is a few pages (the cost model found one
        // heap allocation per probe with a fixed 4096).
        let window = Self.vectorLength(pages: end - page)
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: window) { vector in
            while page < end {
                let pages = Int(min(Int64(window), end - page))
                let address = base + Int(page * pageSize)
                if system_mincore(address, pages * Int(pageSize), vector.baseAddress!) != 0 { return prefix }
                for i in 0..<pages {
                    if vector[i] & 1 == 0 { return prefix }
                    prefix += 1
                }
                page += Int64(pages)
            }
            return prefix
        }
    }

    /// The runs of non-resident pages within `run`, at most `maximumRuns` of them; what lies beyond the
    /// last counted run is folded into it, so memory stays bounded whatever the caller's length.
    func missingRuns(in run: PageRun, maximumRuns: Int) -> [PageRun] {
        let pageSize = Int64(systemPageSize)
        let mappedPages = Int64(length) / pageSize
        var runs: [PageRun] = []
        let window = Self.vectorLength(pages: run.count)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: window) { vector in
            var page = run.first
            let end = run.end
            while page < end {
                let pages = Int(min(Int64(window), end - page))
                let inMapping = max(0, min(Int64(pages), mappedPages - page))
                if inMapping > 0 {
                    let address = base + Int(page * pageSize)
                    if system_mincore(address, Int(inMapping * pageSize), vector.baseAddress!) != 0 {
                        for i in 0..<Int(inMapping) { vector[i] = 0 }
                    }
                }
                for i in 0..<pages {
                    let resident = Int64(i) < inMapping && vector[i] & 1 != 0
                    if resident { continue }
                    let index = page + Int64(i)
                    if let last = runs.last, last.end == index {
                        runs[runs.count - 1].count += 1
                    } else if runs.count == maximumRuns {
                        runs[runs.count - 1].count = index + 1 - runs[runs.count - 1].first
                    } else {
                        runs.append(PageRun(first: index, count: 1))
                    }
                }
                page += Int64(pages)
            }
        }
        return runs
    }
}

/// Shares one mapping per open file among the requests that probe it.
final class MappingCache: Sendable {
    private struct Key: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    private final class WeakMapping: @unchecked Sendable {
        weak var mapping: FileMapping?
        init(_ mapping: FileMapping) { self.mapping = mapping }
    }

    private let entries = Mutex<[Key: WeakMapping]>([:])
    /// Strong references to the most recently used mappings, when the owner asked for them
    /// (``keepRecent(_:)``): at queue depth 1 the only request holding a mapping finishes before the next
    /// submit, and unmapping and remapping the file for every read costs a TLB shootdown each time.
    private let recent = Mutex<(limit: Int, mappings: [FileMapping])>((0, []))
    /// Whether ``recent`` is in use, so that the common case (nobody asked) takes no lock per request.
    private let keepsRecent = Atomic<Bool>(false)

    /// Keeps up to `count` recently used mappings alive between requests (0, the default, keeps none).
    func keepRecent(_ count: Int) {
        keepsRecent.store(count > 0, ordering: .releasing)
        // The mappings dropped here are returned out of the lock, so their munmap happens after it.
        let released = recent.withLock { state in
            state.limit = count
            defer { state.mappings = Array(state.mappings.suffix(count)) }
            return state.mappings.dropLast(count)
        }
        _ = released
    }

    private func remember(_ mapping: FileMapping) {
        guard keepsRecent.load(ordering: .acquiring) else { return }
        recent.withLock { state in
            guard state.limit > 0, state.mappings.last !== mapping else { return }
            state.mappings.removeAll { $0 === mapping }
            state.mappings.append(mapping)
            if state.mappings.count > state.limit { state.mappings.removeFirst() }
        }
    }

    /// A mapping of the file behind `fd` covering at least `[0, end)`, made from `fd` if none is live.
    /// Its length is the file's (rounded up to 64 MiB), never the caller's request.
    func mapping(fd: Int32, info: stat, covering end: Int64) -> FileMapping? {
        let key = Key(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        let mapping = lookUp(key, fd: fd, info: info, covering: end)
        if let mapping { remember(mapping) }
        return mapping
    }

    private func lookUp(_ key: Key, fd: Int32, info: stat, covering end: Int64) -> FileMapping? {
        entries.withLock { entries in
            if let live = entries[key]?.mapping, Int64(live.length) >= end { return live }
            let granule: Int64 = 64 << 20
            let wanted = max(end, Int64(info.st_size))
            let (rounded, overflow) = wanted.addingReportingOverflow(granule - 1)
            guard !overflow, let mapping = FileMapping(fd: fd, length: Int(rounded / granule * granule)) else {
                return nil
            }
            if entries.count > 64 { entries = entries.filter { $0.value.mapping != nil } }
            entries[key] = WeakMapping(mapping)
            return mapping
        }
    }
}
