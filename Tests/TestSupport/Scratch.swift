// Test support (both test targets): scratch files on ext4 with known content, a plain-pread oracle, and page-cache control
// checked with mincore.
import BufferedAIO
import CBufferedAIO
import Glibc
import Testing

/// Where test files live: the temp dir if it is ext4; else, as root, a loop-mounted ext4 image; else
/// nowhere, with the reason.
public enum Scratch {
    public static let ext4Magic: Int = 0xEF53

    public static let location: Result<String, SkipReason> = {
        let temp = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        if isExt4(temp) { return .success(temp) }
        guard geteuid() == 0 else {
            return .failure(
                SkipReason("\(temp) is not ext4 and the tests are not running as root to loop-mount an ext4 image"))
        }
        let image = "\(temp)/baio-tests-\(getpid()).img"
        let mount = "\(temp)/baio-tests-\(getpid())"
        let script = """
            truncate -s 6G '\(image)' && mkfs.ext4 -q -F '\(image)' && mkdir -p '\(mount)' \
            && mount -o loop '\(image)' '\(mount)' && chmod 1777 '\(mount)'
            """
        guard shell(script) == 0, isExt4(mount) else {
            return .failure(SkipReason("\(temp) is not ext4 and loop-mounting an ext4 image failed"))
        }
        return .success(mount)
    }()

    public static var directory: String? { try? location.get() }
    public static var available: Bool { directory != nil }
    public static var skipReason: Comment {
        switch location {
        case .success: "ext4 available"
        case .failure(let reason): Comment(rawValue: reason.text)
        }
    }

    public static func isExt4(_ path: String) -> Bool {
        cbaio_filesystem_type(path) == ext4Magic
    }

    @discardableResult
    public static func shell(_ script: String) -> Int32 {
        var pid: pid_t = 0
        let arguments = ["/bin/sh", "-c", script]
        var argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return (status >> 8) & 0xff
    }
}

public struct SkipReason: Error {
    public let text: String
    public init(_ text: String) { self.text = text }
}

/// A file on ext4 with pattern content (and optional holes), an independent read-only descriptor for the
/// oracle, and removal on deinit.
public final class PatternFile: Sendable {
    public let path: String
    public let size: Int
    public let fd: Int32
    public let seed: Int

    /// - Parameter holes: byte ranges left unwritten (they read as zeros).
    public init(size: Int, name: String, holes: [Range<Int>] = [], mode: mode_t = 0o644) throws {
        let directory = try Scratch.location.get()
        path = "\(directory)/baio-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).bin"
        self.size = size
        self.seed = name.utf8.reduce(0) { $0 &* 31 &+ Int($1) }
        let writer = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        try #require(writer >= 0, "cannot create \(path)")
        try #require(ftruncate(writer, off_t(size)) == 0)
        // A random 1 MiB block, with each page's first 8 bytes stamped with its offset, so no two pages of
        // the file are equal and a misplaced page shows; built per chunk with word copies, fast even in debug.
        let chunk = 1 << 20
        var generator = SeededGenerator(seed: UInt64(truncatingIfNeeded: seed))
        let base = (0..<chunk / 8).map { _ in generator.next() }
        var words = base
        var offset = 0
        while offset < size {
            let length = Swift.min(chunk, size - offset)
            let range = offset..<offset + length
            if !holes.contains(where: { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound }) {
                for page in stride(from: 0, to: chunk / 8, by: 512) {
                    words[page] = UInt64(offset + page * 8) ^ UInt64(truncatingIfNeeded: seed)
                }
                try words.withUnsafeMutableBytes { raw in
                    for hole in holes where hole.overlaps(range) {
                        let from = Swift.max(hole.lowerBound, offset) - offset
                        let to = Swift.min(hole.upperBound, offset + length) - offset
                        raw.baseAddress!.advanced(by: from).initializeMemory(
                            as: UInt8.self, repeating: 0, count: to - from)
                    }
                    var written = 0
                    while written < length {
                        let n = pwrite(writer, raw.baseAddress! + written, length - written, off_t(offset + written))
                        try #require(n > 0)
                        written += n
                    }
                }
                if holes.contains(where: { $0.overlaps(range) }) { words = base }
            }
            offset += length
        }
        fsync(writer)
        close(writer)
        fd = open(path, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// The oracle: what a plain pread of the file returns.
    public func expected(_ offset: Int, _ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes {
                pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done))
            }
            if n <= 0 { break }
            done += n
        }
        return Array(bytes.prefix(done))
    }

    /// Drops the file from the page cache and checks with mincore that nothing is left.
    public func evict(sourceLocation: SourceLocation = #_sourceLocation) {
        for _ in 0..<5 {
            PageCache.evict(descriptor: fd)
            if residentPages() == 0 { return }
        }
        Issue.record("eviction left \(residentPages()) pages of \(path) cached", sourceLocation: sourceLocation)
    }

    /// Caches exactly one page: a read through a descriptor advised POSIX_FADV_RANDOM gets no readahead.
    public func warmPage(_ page: Int) {
        let exact = open(path, O_RDONLY | O_CLOEXEC)
        defer { close(exact) }
        posix_fadvise(exact, 0, 0, POSIX_FADV_RANDOM)
        var byte: UInt8 = 0
        _ = pread(exact, &byte, 1, off_t(page * 4096))
    }

    /// Reads the range in right before use: idle page cache is evicted after about 30 s on these machines.
    public func warm(_ offset: Int = 0, _ count: Int? = nil) {
        _ = expected(offset, count ?? size - offset)
    }

    /// Resident pages per mincore (the oracle for residency).
    public func residentPages(_ offset: Int = 0, _ count: Int? = nil) -> Int {
        let length = count ?? size - offset
        guard length > 0 else { return 0 }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / pageSize * pageSize
        let end = offset + length
        let mapped = end - start
        guard let base = mmap(nil, mapped, PROT_READ, MAP_SHARED, fd, off_t(start)), base != MAP_FAILED else {
            return -1
        }
        defer { munmap(base, mapped) }
        let pages = (mapped + pageSize - 1) / pageSize
        var vector = [UInt8](repeating: 0, count: pages)
        guard mincore(base, mapped, &vector) == 0 else { return -1 }
        return vector.reduce(0) { $0 + Int($1 & 1) }
    }
}

/// A buffer for one read, freed on deinit.
public final class ReadBuffer: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer
    public init(_ count: Int, alignment: Int = 16) {
        bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(count, 1), alignment: alignment)
        bytes.initializeMemory(as: UInt8.self, repeating: 0xAA)
    }
    deinit { bytes.deallocate() }
    public func prefix(_ count: Int) -> [UInt8] { Array(bytes.prefix(count)) }
}

/// Collects events until `count` have arrived (or the context stops delivering).
public func collect(_ context: IOContext, _ count: Int) throws -> [UInt64: IOEvent] {
    var events: [UInt64: IOEvent] = [:]
    while events.count < count {
        let batch = try context.getEvents(minimum: 1, maximum: count - events.count, timeout: .seconds(60))
        if batch.isEmpty { break }
        for event in batch { events[event.tag] = event }
    }
    return events
}

/// The process's open descriptors that point at `path`.
public func descriptors(pointingAt path: String) -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    var target = [CChar](repeating: 0, count: 4096)
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let n = readlink("/proc/self/fd/\(name)", &target, target.count - 1)
        if n > 0 && String(decoding: target.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) == path {
            count += 1
        }
    }
    return count
}

/// The process's open descriptor numbers. Compare sets, not counts: other threads of the test process
/// (the runtime's, a previous test's last reads) may close descriptors meanwhile.
public func openDescriptors() -> Set<Int32> {
    guard let directory = opendir("/proc/self/fd") else { return [] }
    defer { closedir(directory) }
    let own = dirfd(directory)
    var numbers = Set<Int32>()
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let number = Int32(name), number != own { numbers.insert(number) }
    }
    return numbers
}

/// Whether the thread with this name has left the process, waiting up to `seconds` for it. pthread_join
/// returns when the kernel clears the thread's tid, which happens before the task is released, so a
/// joined thread can still be listed in /proc/self/task for a moment (seen under load in CI).
public func threadGone(named name: String, within seconds: Double = 5) -> Bool {
    var waited = 0.0
    while threadExists(named: name) {
        if waited >= seconds { return false }
        usleep(2_000)
        waited += 0.002
    }
    return true
}

/// Whether a thread with this name exists in the process.
public func threadExists(named name: String) -> Bool {
    guard let directory = opendir("/proc/self/task") else { return false }
    defer { closedir(directory) }
    while let entry = readdir(directory) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard tid.first?.isNumber == true else { continue }
        let fd = open("/proc/self/task/\(tid)/comm", O_RDONLY)
        guard fd >= 0 else { continue }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buffer, 63)
        close(fd)
        if n > 0 && String(decoding: buffer.prefix(n), as: UTF8.self).trimmingNewline == name { return true }
    }
    return false
}

/// Lines of /proc/self/maps that name `path`.
public func mappings(of path: String) -> Int {
    let fd = open("/proc/self/maps", O_RDONLY)
    guard fd >= 0 else { return -1 }
    defer { close(fd) }
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        data += buffer.prefix(n)
    }
    return String(decoding: data, as: UTF8.self).split(separator: "\n").filter { $0.hasSuffix(path) }.count
}

extension String {
    public var trimmingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}

/// SplitMix64, so pattern files are reproducible from their name.
public struct SeededGenerator: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// A product built into the same build directory as this test bundle (the `baio` tool, libBAIOCompat.so),
/// or nil if it was not built.
public func builtProduct(_ name: String) -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    var directory = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    while let slash = directory.lastIndex(of: "/") {
        directory = String(directory[..<slash])
        let candidate = directory + "/" + name
        var info = stat()
        if stat(candidate, &info) == 0 && info.st_mode & S_IFMT == S_IFREG { return candidate }
        if directory.hasSuffix(".build") { break }
    }
    return nil
}
