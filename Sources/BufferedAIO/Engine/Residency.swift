// This file owns what the engine knows about the page cache: which pages of a range are resident
// (mincore over a shared mapping, or RWF_NOWAIT probes), where a file has holes, how much one readahead
// call may ask for, and whether a RWF_NOWAIT miss starts a read on this kernel.
import CBufferedAIO
import Glibc
import Synchronization

/// A run of page indices `[first, first + count)`. Page rounding is written here once: bytes to pages
/// (``init(bytes:_:)``, ``page(containing:)``, ``pageCount(bytes:)``) and back (``byteStart``, ``byteEnd``).
struct PageRun: Hashable {
    var first: Int64
    var count: Int64
    var end: Int64 { first + count }

    init(first: Int64, count: Int64) {
        self.first = first
        self.count = count
    }

    /// The pages that hold the bytes `[start, end)`; `end` must be greater than `start`.
    init(bytes start: Int64, _ end: Int64) {
        first = Self.page(containing: start)
        count = Self.page(containing: end - 1) - first + 1
    }

    /// The file offset of the run's first byte.
    var byteStart: Int64 { first * Int64(systemPageSize) }
    /// The file offset just past the run's last page.
    var byteEnd: Int64 { end * Int64(systemPageSize) }

    /// The index of the page that holds the byte at `offset`.
    static func page(containing offset: Int64) -> Int64 { offset / Int64(systemPageSize) }
}

/// The pages `bytes` bytes fill, the last one partly.
func pageCount(bytes: Int) -> Int { (bytes + systemPageSize - 1) / systemPageSize }

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

    /// Counts the leading resident pages of `run`, at most `limit` of them. Pages beyond the mapping count
    /// as not resident.
    func residentPrefix(of run: PageRun, limit: Int64) -> Int64 {
        let pageSize = Int64(systemPageSize)
        let mappedPages = Int64(length) / pageSize
        let end = min(run.first + min(run.count, limit), mappedPages)
        var page = run.first
        var prefix: Int64 = 0
        let window = 4096
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
        let window = 4096
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

enum Residency {
    /// Whether mincore tells this caller the truth about the file: the kernel reports every page resident
    /// unless the caller owns the file (or has CAP_FOWNER) or may write it. Decided from the inode; when
    /// unsure (ACLs, user namespaces) it answers false and the engine uses RWF_NOWAIT, which is always
    /// accurate.
    static func mincoreIsTrustworthy(_ info: stat) -> Bool {
        let euid = system_geteuid()
        if euid == 0 || info.st_uid == euid { return true }
        if info.st_mode & S_IWOTH != 0 { return true }
        if info.st_mode & S_IWGRP != 0 {
            if info.st_gid == system_getegid() { return true }
            if system_getgroups().contains(info.st_gid) { return true }
        }
        return false
    }

    /// The data segments of `[start, end)` (byte offsets), skipping holes, at most `maximum` of them; the
    /// rest of the range after the last counted segment is treated as data.
    static func dataSegments(fd: Int32, start: Int64, end: Int64, maximum: Int = 64) -> [(Int64, Int64)] {
        // One SEEK_HOLE answers the common case, a file with no hole in the range.
        let firstHole = system_lseek(fd, start, cbaio_SEEK_HOLE)
        if firstHole < 0 || firstHole >= end { return [(start, end)] }
        var segments: [(Int64, Int64)] = []
        var position = start
        while position < end {
            let data = system_lseek(fd, position, cbaio_SEEK_DATA)
            if data < 0 || data >= end { break }  // ENXIO: only a hole remains
            if segments.count == maximum - 1 {
                segments.append((data, end))
                break
            }
            let hole = system_lseek(fd, data, cbaio_SEEK_HOLE)
            let segmentEnd = hole < 0 ? end : min(hole, end)
            segments.append((data, segmentEnd))
            position = segmentEnd
        }
        return segments
    }

    /// Whether a `preadv2(RWF_NOWAIT)` miss starts reading the missing pages. Linux 5.9 made RWF_NOWAIT
    /// imply IOCB_NOIO; the 2024 change "mm: allow read-ahead with IOCB_NOWAIT set" (Linux 6.12) brought
    /// readahead back. Before 6.12 the engine must issue WILLNEED for every missing page itself.
    static let nowaitMissStartsRead: Bool = {
        let numbers = system_uname_release().split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard numbers.count == 2 else { return false }
        return (numbers[0], numbers[1]) >= (6, 12)
    }()

    private static let windows = Mutex<[UInt64: Int]>([:])

    /// The most one readahead call on `device` should ask for: its readahead window, at most `limit`.
    static func readaheadChunk(device: UInt64, limit: Int) -> Int64 {
        Int64(max(systemPageSize, min(limit, readaheadWindow(device: device))))
    }

    /// Asks the kernel to read `[start, end)` into the page cache, in calls of at most `chunk` bytes: one
    /// larger call silently reads only about the first window's worth (the cap in force_page_cache_ra).
    static func readAhead(fd: Int32, from start: Int64, to end: Int64, chunk: Int64, call: ReadaheadCall = .fadvise) {
        var position = start
        while position < end {
            let length = min(chunk, end - position)
            switch call {
            case .fadvise: _ = system_posix_fadvise(fd, position, length, POSIX_FADV_WILLNEED)
            case .readahead: _ = system_readahead(fd, position, Int(length))
            }
            position += length
        }
    }

    /// The most one WILLNEED call on this device reads: max(read_ahead_kb, max_sectors_kb), the cap in
    /// the kernel's force_page_cache_ra. Read once per device from sysfs; 128 KiB (the kernel default
    /// window) when sysfs does not say.
    static func readaheadWindow(device: UInt64) -> Int {
        if let known = windows.withLock({ $0[device] }) { return known }
        let major = (device >> 8) & 0xfff | (device >> 32) & ~0xfff
        let minor = device & 0xff | (device >> 12) & ~0xff
        var window = 128 << 10
        for base in ["/sys/dev/block/\(major):\(minor)/queue", "/sys/dev/block/\(major):\(minor)/../queue"] {
            let ra = readSysfsInteger("\(base)/read_ahead_kb")
            let sectors = readSysfsInteger("\(base)/max_sectors_kb")
            if ra != nil || sectors != nil {
                window = max(ra ?? 0, sectors ?? 0) << 10
                break
            }
        }
        windows.withLock { $0[device] = window }
        return window
    }

    private static func readSysfsInteger(_ path: String) -> Int? {
        let fd = system_open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { _ = system_close(fd) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = bytes.withUnsafeMutableBytes { system_pread(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        return Int(String(decoding: bytes.prefix(count).filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }
}
