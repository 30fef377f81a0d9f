// Test support: a scratch directory on ext4, files of random bytes, the plain-read oracle, and eviction.
import Foundation
import Glibc
import Testing

/// A directory of test files on ext4 (the temp dir), removed on deinit; nil with the reason elsewhere.
final class ScratchDirectory: Sendable {
    /// Why the tests cannot run here, or nil when the temp dir is ext4: the filesystem of the longest mount
    /// point in /proc/self/mounts that contains it.
    static let unavailableReason: String? = {
        let temp = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        guard let resolved = realpath(temp, nil) else { return "cannot resolve \(temp)" }
        let path = String(cString: resolved)
        free(resolved)
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else {
            return "cannot read /proc/self/mounts"
        }
        var best: (point: String, type: String) = ("", "unknown")
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 2 else { continue }
            let point = String(fields[1])
            let inside = point == "/" || path == point || path.hasPrefix(point + "/")
            if inside && point.count >= best.point.count { best = (point, String(fields[2])) }
        }
        return best.type == "ext4"
            ? nil : "\(temp) is on \(best.type), not ext4: the engine's residency checks are meant for ext4"
    }()
    static var available: Bool { unavailableReason == nil }

    let path: String

    init() throws {
        let temp = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        var template = Array("\(temp)/baio-hb-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = try #require(made.map { String(cString: $0) }, "mkdtemp in \(temp) failed")
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `size` random bytes to `name` and returns them.
    @discardableResult
    func makeFile(_ name: String, size: Int) throws -> [UInt8] {
        let random = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
        defer { try? random.close() }
        let bytes = [UInt8](try random.read(upToCount: size) ?? Data())
        try #require(bytes.count == size)
        try write(name, bytes)
        return bytes
    }

    func write(_ name: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: "\(path)/\(name)"))
    }

    /// The oracle: the file's bytes as FileManager reads them, independent of the engine.
    func contents(_ name: String) throws -> [UInt8] {
        [UInt8](try #require(FileManager.default.contents(atPath: "\(path)/\(name)"), "cannot read \(name)"))
    }

    /// Drops the file's pages from the page cache (written back first), so reads take the engine's slow path.
    /// Best effort: the test checks bytes, not residency.
    func evict(_ name: String) {
        let fd = open("\(path)/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fdatasync(fd)
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        close(fd)
    }
}
