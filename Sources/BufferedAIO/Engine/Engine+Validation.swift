// This file owns what submit checks before it starts a read: the descriptors behind it, the range and
// buffer, and that the file is a readable regular file.
import CBufferedAIO
import Glibc

/// What fstat and fcntl(F_GETFL) said of a descriptor, for a caller in this package that learned them
/// before submitting (libbaio routes each iocb by them).
package struct FileFacts: Sendable {
    package let info: stat
    package let statusFlags: Int32

    package init(info: stat, statusFlags: Int32) {
        self.info = info
        self.statusFlags = statusFlags
    }
}

extension Engine {
    struct FilePins {
        var buffered: DescriptorPin?
        var direct: DescriptorPin?
    }

    func descriptors(of read: ReadRequest) throws(BufferedAIOError) -> (Int32, Int32, String?, FilePins) {
        switch read.source {
        case .descriptor(let fd):
            return (fd, -1, nil, FilePins())
        case .file(let file):
            let d = file.descriptors.withLock { $0 }
            guard let buffered = d.buffered else {
                throw BufferedAIOError(
                    .fileClosed, "'\(file.path)' is closed", errno: .badFileDescriptor, path: file.path)
            }
            return (buffered.fd, d.direct?.fd ?? -1, file.path, FilePins(buffered: buffered, direct: d.direct))
        }
    }

    func validate(_ read: ReadRequest, fd: Int32, path: String?) throws(BufferedAIOError) {
        // Built only when failing: formatting it on every submit would cost an allocation per cached read.
        var name: String { BufferedAIOError.name(fd, path: path) }
        guard read.offset >= 0 else {
            throw BufferedAIOError(
                .invalidArgument, "negative offset \(read.offset) for \(name)", errno: .invalidArgument, path: path)
        }
        guard read.length >= 0 else {
            throw BufferedAIOError(
                .invalidArgument, "negative length \(read.length) for \(name)", errno: .invalidArgument, path: path)
        }
        guard !read.offset.addingReportingOverflow(Int64(read.length)).overflow else {
            throw BufferedAIOError(
                .invalidArgument, "offset \(read.offset) + length \(read.length) overflows for \(name)",
                errno: .invalidArgument, path: path)
        }
        guard read.buffer.count >= read.length else {
            throw BufferedAIOError(
                .bufferTooSmall,
                "buffer of \(read.buffer.count) bytes is smaller than the \(read.length) bytes asked of \(name)",
                errno: .invalidArgument, path: path)
        }
    }

    func validateFile(fd: Int32, facts: FileFacts, path: String?) throws(BufferedAIOError) {
        // Built only when failing: formatting it on every submit would cost an allocation per cached read.
        var name: String { BufferedAIOError.name(fd, path: path) }
        let flags = facts.statusFlags
        if flags & O_ACCMODE == O_WRONLY || flags & cbaio_O_PATH != 0 {
            throw BufferedAIOError(
                .notOpenForReading, "\(name) is not open for reading", errno: .badFileDescriptor, path: path)
        }
        switch FileKind(facts.info) {
        case .regular: return
        case .directory:
            throw BufferedAIOError(.isDirectory, "\(name) is a directory", errno: .invalidArgument, path: path)
        case .other:
            throw BufferedAIOError(
                .notRegularFile,
                "\(name) is not a regular file: pipes, sockets and devices have no page cache to track; read them with read(2)",
                errno: .illegalSeek, path: path)
        }
    }
}

/// What kind of file an fstat describes, as far as reads care: only regular files have a page cache to
/// track.
package enum FileKind: Sendable {
    case regular
    case directory
    /// A pipe, socket, device or anything else.
    case other

    package init(_ info: stat) {
        switch info.st_mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        default: self = .other
        }
    }
}
