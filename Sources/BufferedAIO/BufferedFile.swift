// This file owns `BufferedFile`'s descriptors: the buffered one every read uses and the O_DIRECT twin
// opened at the same time, so direct reads never re-open the file by path later.
import CBufferedAIO
import Glibc
import Synchronization

/// A file opened for reading through BufferedAIO.
///
/// It holds two descriptors from one `open` of the path: a buffered one, and an O_DIRECT one for
/// ``ReadMode/direct`` (absent where the filesystem refuses O_DIRECT, such as tmpfs). In-flight reads pin
/// their own duplicates, so closing the file never disturbs them.
public final class BufferedFile: Sendable {
    /// The path the file was opened with; every error about it names this path.
    public let path: String

    struct Descriptors {
        var buffered: DescriptorPin?
        var direct: DescriptorPin?
        var isClosed: Bool { buffered == nil }
    }

    let descriptors: Mutex<Descriptors>
    /// Set when a scoped use closes the file, so deinit reports only files nobody closed.
    let reportLeak: Bool
    /// The engine for async reads; nil means ``ReadEngine/shared``, created only when first needed so
    /// users of IOContext alone start no extra thread.
    let engineOverride: ReadEngine?

    /// The engine that serves this file's async reads.
    public var engine: ReadEngine {
        get throws(BufferedAIOError) {
            if let engineOverride { return engineOverride }
            return try ReadEngine.shared
        }
    }

    /// The kernel's readahead heuristics for this open file, set with `posix_fadvise` at open.
    public enum AccessPattern: Sendable, Hashable {
        /// The kernel's default heuristics (`POSIX_FADV_NORMAL`).
        case normal
        /// No kernel readahead beyond what is asked (`POSIX_FADV_RANDOM`), as fio sets for random reads.
        /// The engine's own WILLNEED calls are exact, so random reads then cause exactly the device I/O
        /// they need; without it, the kernel may take a random walk for a sequential one and read more.
        case random
        /// Twice the readahead window (`POSIX_FADV_SEQUENTIAL`).
        case sequential
    }

    /// Opens `path` for reading.
    ///
    /// - Parameters:
    ///   - path: The file to open.
    ///   - accessPattern: The readahead advice for this open file; see ``AccessPattern``.
    ///   - engine: The engine for async reads; the process-wide ``ReadEngine/shared`` by default.
    /// - Throws: ``BufferedAIOError`` with code ``BufferedAIOError/Code/openFailed`` (naming the path and
    ///   errno) if it cannot be opened, ``BufferedAIOError/Code/isDirectory`` or
    ///   ``BufferedAIOError/Code/notRegularFile`` if it is not a regular file.
    ///
    /// The corresponding C function is `open` with `O_RDONLY | O_CLOEXEC`.
    public init(
        path: String, accessPattern: AccessPattern = .normal, engine: ReadEngine? = nil
    ) throws(BufferedAIOError) {
        self.path = path
        self.engineOverride = engine
        self.reportLeak = true
        let fd = system_open(path, O_RDONLY)
        guard fd >= 0 else {
            let errno = Errno(rawValue: Glibc.errno)
            throw BufferedAIOError(.openFailed, "cannot open '\(path)'", syscall: "open", errno: errno, path: path)
        }
        var info = stat()
        _ = system_fstat(fd, &info)
        let kind = FileKind(info)
        guard kind == .regular else {
            _ = system_close(fd)
            if kind == .directory {
                throw BufferedAIOError(
                    .isDirectory, "'\(path)' is a directory", errno: Errno(rawValue: EISDIR), path: path)
            }
            throw BufferedAIOError(
                .notRegularFile,
                "'\(path)' is not a regular file (a pipe, socket or device has no page cache to track)",
                path: path)
        }
        switch accessPattern {
        case .normal: break
        case .random: _ = system_posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM)
        case .sequential: _ = system_posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        }
        let direct = Self.openDirectTwin(path, matching: info)
        self.descriptors = Mutex(
            Descriptors(buffered: DescriptorPin(fd), direct: direct >= 0 ? DescriptorPin(direct) : nil))
    }

    /// Closes the file. Reads in flight hold the descriptors until they finish, so they complete
    /// normally; the descriptors are closed when the last one does. Closing twice is harmless.
    public func close() {
        descriptors.withLock { $0 = Descriptors(buffered: nil, direct: nil) }
    }

    /// Whether ``close()`` has been called.
    public var isClosed: Bool { descriptors.withLock { $0.isClosed } }

    /// The buffered descriptor, or nil once closed. Valid only until ``close()``.
    public var descriptor: Int32? {
        descriptors.withLock { $0.buffered?.fd }
    }

    /// Opens `path` for reading; see ``init(path:accessPattern:engine:)-(String,_,_)``.
    public convenience init(
        path: FilePath, accessPattern: AccessPattern = .normal, engine: ReadEngine? = nil
    ) throws(BufferedAIOError) {
        try self.init(path: path.string, accessPattern: accessPattern, engine: engine)
    }

    /// The buffered descriptor as swift-system's type, or nil once the file is closed; see ``descriptor``.
    public var fileDescriptor: FileDescriptor? { descriptor.map(FileDescriptor.init(rawValue:)) }

    /// Whether direct reads of this file can bypass the cache.
    public var supportsDirect: Bool { descriptors.withLock { $0.direct != nil } }

    deinit {
        if reportLeak && !isClosed {
            let text = "BufferedAIO: BufferedFile('\(path)') was never closed; closing it in deinit\n"
            _ = text.utf8CString.withUnsafeBufferPointer { system_write(2, $0.baseAddress, $0.count - 1) }
        }
    }

    /// Opens the O_DIRECT twin now, while the path is known to name the file just opened; a later open by
    /// path could land on a renamed or replaced file. Returns -1 where O_DIRECT is refused.
    private static func openDirectTwin(_ path: String, matching info: stat) -> Int32 {
        let fd = system_open(path, O_RDONLY | cbaio_O_DIRECT)
        guard fd >= 0 else { return -1 }
        var twin = stat()
        if system_fstat(fd, &twin) != 0 || twin.st_dev != info.st_dev || twin.st_ino != info.st_ino {
            _ = system_close(fd)
            return -1
        }
        return fd
    }
}

/// A descriptor shared by a file and its in-flight reads, closed when the last of them lets go: the same
/// pinning a dup gives, without a dup and a close per read.
final class DescriptorPin: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { _ = system_close(fd) }
}
