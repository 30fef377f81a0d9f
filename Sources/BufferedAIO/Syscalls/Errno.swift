// This file owns `Errno`, the one error value the syscall funnel speaks.
import Glibc

/// A POSIX error number.
public struct Errno: RawRepresentable, Hashable, Sendable, Error, CustomStringConvertible {
    public let rawValue: Int32

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

    public var description: String { "\(message) (\(name))" }

    public static let badFileDescriptor = Errno(rawValue: EBADF)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let resourceTemporarilyUnavailable = Errno(rawValue: EAGAIN)
    public static let canceled = Errno(rawValue: ECANCELED)
    public static let ioError = Errno(rawValue: EIO)
    public static let badAddress = Errno(rawValue: EFAULT)
    public static let notSupported = Errno(rawValue: EOPNOTSUPP)
    public static let illegalSeek = Errno(rawValue: ESPIPE)
}
