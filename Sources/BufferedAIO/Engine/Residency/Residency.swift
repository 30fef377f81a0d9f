// This file owns what the engine knows about the page cache beyond residency bits: whether mincore tells
// this caller the truth, where a file has holes, how much one readahead call may ask for, and whether a
// RWF_NOWAIT miss starts a read on this kernel. The mincore windows are in FileMapping.swift.
import CBufferedAIO
import Glibc
import Synchronization

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
