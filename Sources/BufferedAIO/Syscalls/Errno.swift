// This file owns how the library names errno values. The type is swift-system's `Errno`, re-exported
// with `FileDescriptor` and `FilePath`, so a program that imports BufferedAIO and swift-system (or NIO,
// which imports it) sees one `Errno`, one `FilePath` and one `FileDescriptor`.
import Glibc

@_exported import struct SystemPackage.Errno
@_exported import struct SystemPackage.FileDescriptor
@_exported import struct SystemPackage.FilePath

extension Errno {
    /// The symbolic name, for example `EIO`, when it is one the engine can produce; messages print it
    /// after strerror's text, as `Input/output error (EIO)`, so a log can be searched by either.
    var symbolicName: String {
        switch rawValue {
        case Glibc.EPERM: "EPERM"
        case Glibc.ENOENT: "ENOENT"
        case Glibc.EINTR: "EINTR"
        case Glibc.EIO: "EIO"
        case Glibc.EBADF: "EBADF"
        case Glibc.EAGAIN: "EAGAIN"
        case Glibc.ENOMEM: "ENOMEM"
        case Glibc.EACCES: "EACCES"
        case Glibc.EFAULT: "EFAULT"
        case Glibc.EISDIR: "EISDIR"
        case Glibc.EINVAL: "EINVAL"
        case Glibc.EMFILE: "EMFILE"
        case Glibc.ESPIPE: "ESPIPE"
        case Glibc.EROFS: "EROFS"
        case Glibc.ENOSYS: "ENOSYS"
        case Glibc.EOPNOTSUPP: "EOPNOTSUPP"
        case Glibc.ECANCELED: "ECANCELED"
        case Glibc.EOVERFLOW: "EOVERFLOW"
        case Glibc.ENODEV: "ENODEV"
        default: "errno \(rawValue)"
        }
    }

    /// strerror's text and the name, for example "Input/output error (EIO)".
    var textAndName: String { "\(description) (\(symbolicName))" }
}
