// This file owns `BufferedAIOError`: every error the library reports, carrying the syscall, the errno and
// the path where there is one, so a message always names the file and the cause.
import Glibc

/// An error from BufferedAIO.
///
/// The ``code`` is what a program switches on; ``description`` is what a person reads, for example
/// `pread of '/data/log' at offset 4096 failed: Input/output error (EIO)`.
public struct BufferedAIOError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, in terms a caller can act on.
    public enum Code: Sendable, Hashable {
        /// An argument is out of range: a negative offset, an overflowing range, a bad capacity.
        case invalidArgument
        /// The descriptor is closed or invalid.
        case badDescriptor
        /// The descriptor is not open for reading.
        case notOpenForReading
        /// The descriptor names a directory.
        case isDirectory
        /// The descriptor is not a regular file (a pipe, socket or device): it has no page cache to track.
        case notRegularFile
        /// The destination buffer is smaller than the requested length.
        case bufferTooSmall
        /// The context or file was closed.
        case closed
        /// The context is full: reap events before submitting more (`io_submit`'s EAGAIN).
        case wouldBlock
        /// The request was cancelled before it completed.
        case cancelled
        /// The file could not be opened.
        case openFailed
        /// The read itself failed; ``errno`` says how (EIO, EFAULT, ...).
        case readFailed
        /// A kernel facility the engine needs failed (eventfd, a thread, io_setup).
        case systemResource
    }

    /// What went wrong; see ``Code``.
    public var code: Code
    /// The system call that failed, if one did.
    public var syscall: String?
    /// The errno the kernel returned, if any.
    public var errno: Errno?
    /// The file concerned, where there is one.
    public var path: String?
    /// A sentence about the cause.
    public var message: String

    /// An error with a code, a sentence about the cause, and where known the syscall, errno and path.
    public init(_ code: Code, _ message: String, syscall: String? = nil, errno: Errno? = nil, path: String? = nil) {
        self.code = code
        self.message = message
        self.syscall = syscall
        self.errno = errno
        self.path = path
    }

    /// The message, followed by the errno's text and name when there is one.
    public var description: String {
        guard let errno else { return message }
        return "\(message): \(errno)"
    }

    /// The libaio-style negative errno for this error, as `io_event.res` would carry it.
    public var negatedErrno: Int {
        if let errno { return -Int(errno.rawValue) }
        switch code {
        case .invalidArgument, .isDirectory, .bufferTooSmall: return -Int(EINVAL)
        case .badDescriptor, .notOpenForReading: return -Int(EBADF)
        case .notRegularFile: return -Int(ESPIPE)
        case .closed: return -Int(EBADF)
        case .wouldBlock: return -Int(EAGAIN)
        case .cancelled: return -Int(ECANCELED)
        case .openFailed, .readFailed, .systemResource: return -Int(EIO)
        }
    }
}

extension BufferedAIOError {
    /// How a message names a file: its path in quotes, or the descriptor number when there is no path.
    static func name(_ fd: Int32, path: String?) -> String {
        path.map { "'\($0)'" } ?? "descriptor \(fd)"
    }

    /// The error for a failed syscall on a file, e.g. `pread of '/x' failed: Input/output error (EIO)`.
    static func syscall(
        _ name: String, _ errno: Errno, fd: Int32, path: String?, code: Code = .readFailed
    ) -> BufferedAIOError {
        BufferedAIOError(
            code, "\(name) of \(Self.name(fd, path: path)) failed", syscall: name, errno: errno, path: path)
    }
}
