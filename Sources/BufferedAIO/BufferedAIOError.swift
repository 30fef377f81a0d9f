// This file owns `BufferedAIOError`: every error the library reports, carrying the syscall, the errno and
// the path where there is one, so a message always names the file and the cause.
import Glibc

/// An error from BufferedAIO.
///
/// The ``code`` is what a program switches on; ``description`` is what a person reads, for example
/// `pread of '/data/log' at offset 4096 failed: Input/output error (EIO)`.
public struct BufferedAIOError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, in terms a caller can act on.
    ///
    /// A struct with static members rather than an enum, as NIOFileSystem's `FileSystemError.Code` is, so a
    /// later release can add a code without breaking a client's exhaustive `switch`. Compare with `==` or
    /// match with `case .closed:` in a switch that has a `default`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        enum Kind: Sendable, Hashable {
            case invalidArgument, badDescriptor, notOpenForReading, isDirectory, notRegularFile, bufferTooSmall
            case contextClosed, fileClosed, shutDown, wouldBlock, cancelled, openFailed, readFailed, systemResource
        }

        let kind: Kind

        /// An argument is out of range: a negative offset, an overflowing range, a bad capacity (EINVAL).
        public static let invalidArgument = Code(kind: .invalidArgument)
        /// The descriptor is closed or invalid (EBADF).
        public static let badDescriptor = Code(kind: .badDescriptor)
        /// The descriptor is not open for reading (EBADF).
        public static let notOpenForReading = Code(kind: .notOpenForReading)
        /// The descriptor names a directory (EINVAL, as `io_submit` answers).
        public static let isDirectory = Code(kind: .isDirectory)
        /// The descriptor is not a regular file (a pipe, socket or device): it has no page cache to track.
        public static let notRegularFile = Code(kind: .notRegularFile)
        /// The destination buffer is smaller than the requested length (EINVAL).
        public static let bufferTooSmall = Code(kind: .bufferTooSmall)
        /// The ``IOContext`` was closed: EINVAL, as `io_submit` and `io_getevents` answer for a destroyed
        /// context.
        public static let contextClosed = Code(kind: .contextClosed)
        /// The ``BufferedFile`` was closed before the read was submitted (EBADF, as for a closed descriptor).
        public static let fileClosed = Code(kind: .fileClosed)
        /// The ``ReadEngine`` was shut down: reads in flight end, and new ones are refused, with ECANCELED.
        public static let shutDown = Code(kind: .shutDown)
        /// The context is full: reap events before submitting more (`io_submit`'s EAGAIN).
        public static let wouldBlock = Code(kind: .wouldBlock)
        /// The request was cancelled before it completed (ECANCELED).
        public static let cancelled = Code(kind: .cancelled)
        /// The file could not be opened; ``BufferedAIOError/errno`` says why.
        public static let openFailed = Code(kind: .openFailed)
        /// The read itself failed; ``BufferedAIOError/errno`` says how (EIO, EFAULT, ...).
        public static let readFailed = Code(kind: .readFailed)
        /// A kernel facility the engine needs failed (eventfd, a thread, io_setup).
        public static let systemResource = Code(kind: .systemResource)

        /// The code's name, for example `contextClosed`.
        public var description: String { "\(kind)" }

        /// The errno a code stands for when the error carries none.
        var impliedErrno: Int32 {
            switch kind {
            case .invalidArgument, .isDirectory, .bufferTooSmall, .contextClosed: EINVAL
            case .badDescriptor, .notOpenForReading, .fileClosed: EBADF
            case .notRegularFile: ESPIPE
            case .wouldBlock: EAGAIN
            case .cancelled, .shutDown: ECANCELED
            case .openFailed, .readFailed, .systemResource: EIO
            }
        }
    }

    /// What went wrong; see ``Code``.
    public var code: Code
    /// The system call that failed, if one did.
    public var syscall: String?
    /// The errno the kernel returned, if any.
    public var errno: Errno?
    /// The file concerned, where there is one.
    public var path: String?
    /// ``path`` as swift-system's type.
    public var filePath: FilePath? { path.map(FilePath.init(_:)) }
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
        return "\(message): \(errno.textAndName)"
    }

    /// The libaio-style negative errno for this error, as `io_event.res` would carry it.
    public var negatedErrno: Int { -Int(errno?.rawValue ?? code.impliedErrno) }
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
