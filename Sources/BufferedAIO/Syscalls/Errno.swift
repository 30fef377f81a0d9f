// This file owns `Errno`, the one error value the syscall funnel speaks.
import Glibc

/// A POSIX error number.
public struct Errno: RawRepresentable, Hashable, Sendable, Error, CustomStringConvertible {
    /// The errno value, for example 5 for EIO.
    public let rawValue: Int32

    /// The error number `rawValue`.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The symbolic name, for example `EIO`, when it is one the engine can produce.
    public var name: String {
        switch rawValue {
        case EPERM: "EPERM"
        case ENOENT: "ENOENT"
        case EINTR: "EINTR"
        case EIO: "EIO"
        case EBADF: "EBADF"
        case EAGAIN: "EAGAIN"
        case ENOMEM: "ENOMEM"
        case EACCES: "EACCES"
        case EFAULT: "EFAULT"
        case EISDIR: "EISDIR"
        case EINVAL: "EINVAL"
        case EMFILE: "EMFILE"
        case ESPIPE: "ESPIPE"
        case EROFS: "EROFS"
        case ENOSYS: "ENOSYS"
        case EOPNOTSUPP: "EOPNOTSUPP"
        case ECANCELED: "ECANCELED"
        case EOVERFLOW: "EOVERFLOW"
        case ENODEV: "ENODEV"
        default: "errno \(rawValue)"
        }
    }

    /// strerror's text, for example "Input/output error".
    public var message: String { String(cString: strerror(rawValue)) }

    /// The text and the name, for example "Input/output error (EIO)".
    public var description: String { "\(message) (\(name))" }

    /// EBADF.
    public static let badFileDescriptor = Errno(rawValue: EBADF)
    /// EINVAL.
    public static let invalidArgument = Errno(rawValue: EINVAL)
    /// EAGAIN.
    public static let resourceTemporarilyUnavailable = Errno(rawValue: EAGAIN)
    /// ECANCELED.
    public static let canceled = Errno(rawValue: ECANCELED)
    /// EIO.
    public static let ioError = Errno(rawValue: EIO)
    /// EFAULT.
    public static let badAddress = Errno(rawValue: EFAULT)
    /// EOPNOTSUPP.
    public static let notSupported = Errno(rawValue: EOPNOTSUPP)
    /// ESPIPE.
    public static let illegalSeek = Errno(rawValue: ESPIPE)
}
