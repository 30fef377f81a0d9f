// Test support for the injected-error tests: an ext4 file system whose chosen pages fail with EIO as bad
// sectors would (Tests/Compat/faulty_ext4.sh over eio_fuse.c, a loop device and ext4), set up once per test
// process, torn down at exit, and the oracle: a plain pread of the same file in the same cache state.
import BufferedAIO
import Glibc
import Testing

/// A file on the faulty file system: `badPages` pages from `badPage` on fail to read with EIO.
public struct FaultyFile: Sendable {
    public let path: String
    /// A copy of the file's bytes on a healthy file system: what every byte that is read must equal.
    public let original: String
    public let size: Int
    public let badPage: Int
    public let badPages: Int

    public var badOffset: Int { badPage * 4096 }
    public var badEnd: Int { (badPage + badPages) * 4096 }

    /// The file's true bytes in a range (from the healthy copy).
    public func originalBytes(_ offset: Int, _ count: Int) -> [UInt8] {
        let fd = open(original, O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress!, count, off_t(offset)) }
        return Array(bytes.prefix(Swift.max(n, 0)))
    }

    /// Drops the file's pages, read and failed alike, so the next read meets the device again.
    public func evict() {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        PageCache.evict(descriptor: fd)
    }

    /// The bytes of another file (what a child process wrote).
    public func bytes(of path: String) -> [UInt8] { FaultyDisk.readBytes(path) }

    /// The oracle: one plain pread of the range through a fresh descriptor, right after evicting.
    public func pread(_ offset: Int, _ count: Int) -> ReadOutcome {
        evict()
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress!, count, off_t(offset)) }
        return n < 0 ? .failed(errno) : .read(Array(bytes.prefix(n)))
    }
}

/// What a read ended with: bytes (possibly fewer than asked) or an errno.
public enum ReadOutcome: Equatable, Sendable, CustomStringConvertible {
    case read([UInt8])
    case failed(Int32)

    public var description: String {
        switch self {
        case .read(let bytes): "\(bytes.count) bytes"
        case .failed(let code): "errno \(code) (\(String(cString: strerror(code))))"
        }
    }
}

public enum FaultyDisk {
    /// Tests/Compat, next to this file's directory.
    public static let compat: String = {
        var path = #filePath
        for _ in 0..<2 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path + "/Compat"
    }()

    nonisolated(unsafe) private static var directory = ""

    /// The faulty files by name, or why there are none.
    public static let files: Result<[String: FaultyFile], SkipReason> = {
        guard geteuid() == 0 else {
            return .failure(SkipReason("injecting read errors needs root (mount, loop devices, FUSE)"))
        }
        guard access("/dev/fuse", R_OK | W_OK) == 0 else {
            return .failure(SkipReason("no /dev/fuse: the kernel has no FUSE"))
        }
        for tool in ["cc", "mkfs.ext4", "filefrag", "losetup", "mount"]
        where Scratch.shell("command -v \(tool) >/dev/null") != 0 {
            return .failure(SkipReason("\(tool) is missing (scripts/setup installs it)"))
        }
        let temp = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        directory = "\(temp)/baio-faulty-\(getpid())"
        let server = "\(temp)/baio-eio-fuse-\(getpid())"
        let report = "\(temp)/baio-faulty-\(getpid()).txt"
        defer { unlink(report) }
        guard Scratch.shell("cc -O1 -Wall -o '\(server)' '\(compat)/eio_fuse.c'") == 0 else {
            return .failure(SkipReason("cc could not build Tests/Compat/eio_fuse.c"))
        }
        atexit {
            Scratch.shell("'\(FaultyDisk.compat)/faulty_ext4.sh' down '\(FaultyDisk.directory)'")
            unlink("\(FaultyDisk.directory)-server")
        }
        // The server binary goes next to the directory so `down` (which removes the directory) leaves it.
        rename(server, "\(directory)-server")
        guard
            Scratch.shell("'\(compat)/faulty_ext4.sh' up '\(directory)' '\(directory)-server' > '\(report)' 2>&1") == 0
        else {
            return .failure(SkipReason("faulty_ext4.sh up failed: \(readText(report))"))
        }
        return parse(readText(report))
    }()

    public static var available: Bool { (try? files.get()) != nil }
    public static var skipReason: Comment {
        switch files {
        case .success: "faulty ext4 available"
        case .failure(let reason): Comment(rawValue: reason.text)
        }
    }

    public static func file(_ name: String) throws -> FaultyFile {
        try #require(try files.get()[name], "faulty_ext4.sh made no \(name)")
    }

    /// "mount=DIR loop=DEV" then "file=NAME bad=PAGE badpages=N pages=N" lines.
    static func parse(_ report: String) -> Result<[String: FaultyFile], SkipReason> {
        var mount = ""
        var files: [String: FaultyFile] = [:]
        for line in report.split(separator: "\n") {
            var fields: [String: String] = [:]
            for field in line.split(separator: " ") {
                let parts = field.split(separator: "=", maxSplits: 1)
                if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
            }
            if let value = fields["mount"] { mount = value }
            if let name = fields["file"], let bad = Int(fields["bad"] ?? ""), let count = Int(fields["badpages"] ?? ""),
                let pages = Int(fields["pages"] ?? "")
            {
                files[name] = FaultyFile(
                    path: "\(mount)/\(name)", original: "\(directory)/orig-\(name)", size: pages * 4096, badPage: bad,
                    badPages: count)
            }
        }
        return files.isEmpty ? .failure(SkipReason("faulty_ext4.sh printed no files: \(report)")) : .success(files)
    }

    /// A directory-like prefix for the tests' own temporary files, next to the faulty file system's.
    public static func workDirectory() throws -> String {
        _ = try files.get()
        return directory
    }

    public static func readText(_ path: String) -> String { String(decoding: readBytes(path), as: UTF8.self) }

    public static func readBytes(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while case let n = read(fd, &buffer, buffer.count), n > 0 { data += buffer.prefix(n) }
        return data
    }
}
