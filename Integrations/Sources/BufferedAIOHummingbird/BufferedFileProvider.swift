// This file owns `BufferedFileProvider`, Hummingbird's `FileProvider` over BufferedAIO: the drop-in for
// `LocalFileSystem` in `FileMiddleware(fileProvider:)`, reading with the engine's async reads instead of
// NIOFileSystem on a thread pool.
import BufferedAIO
import BufferedAIONIO
import Glibc
public import Hummingbird
import Logging
import NIOCore

#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// A file provider for `FileMiddleware` that serves files under a root folder through BufferedAIO.
///
/// It gives what `LocalFileSystem` gives (same identifiers, and attributes that produce the same ETag,
/// Last-Modified and Content-Length), so the migration is one line:
///
/// ```swift
/// // router.add(middleware: FileMiddleware(fileProvider: LocalFileSystem(rootFolder: "public", threadPool: .singleton, logger: logger)))
/// router.add(middleware: FileMiddleware(fileProvider: BufferedFileProvider(rootFolder: "public", logger: logger)))
/// ```
///
/// A body of up to `singleReadLimit` bytes is read in one read before the response starts, so a read error
/// becomes an error response rather than a cut body; a larger one streams in `chunkLength` chunks with a
/// window of reads in flight, as `LocalFileSystem` streams it. A file that shrinks while it is being
/// served ends the response with an error (the peer sees fewer bytes than Content-Length) instead of
/// passing the short read off as the whole body.
public struct BufferedFileProvider: FileProvider {
    /// The attributes `FileMiddleware` needs, computed as `LocalFileSystem` computes them.
    public struct FileAttributes: Sendable, FileMiddlewareFileAttributes {
        /// Is the file a folder.
        public let isFolder: Bool
        /// The file's size in bytes.
        public let size: Int
        /// The last data modification, in whole seconds as `LocalFileSystem` gives it (the ETag is made
        /// from it, so sub-second precision would change every ETag after a migration).
        public let modificationDate: Date
    }

    /// The fully qualified path of a file.
    public typealias FileIdentifier = String

    let rootFolder: String
    let engine: ReadEngine?
    let chunkLength: Int
    let singleReadLimit: Int
    let window: Int

    /// Creates a provider serving files under `rootFolder`.
    ///
    /// - Parameters:
    ///   - rootFolder: The folder to serve files from.
    ///   - engine: The engine for the reads; the process-wide `ReadEngine.shared` by default.
    ///   - chunkLength: The chunk size for streamed bodies (`LocalFileSystem` uses 128 KiB too).
    ///   - singleReadLimit: Bodies up to this size are read in one read into one buffer.
    ///   - window: How many chunk reads a streamed body keeps in flight ahead of the socket.
    ///   - logger: Where to log the root folder, as `LocalFileSystem` does.
    public init(
        rootFolder: String, engine: ReadEngine? = nil, chunkLength: Int = 128 * 1024, singleReadLimit: Int = 256 * 1024,
        window: Int = 4, logger: Logger = Logger(label: "BufferedFileProvider")
    ) {
        self.rootFolder = rootFolder.last == "/" ? rootFolder : "\(rootFolder)/"
        self.engine = engine
        self.chunkLength = max(chunkLength, 1)
        self.singleReadLimit = max(singleReadLimit, 0)
        self.window = max(window, 1)
        logger.info("Serving files from \(rootFolder) through BufferedAIO")
    }

    /// The root folder joined with the request path, as `LocalFileSystem` joins them.
    public func getFileIdentifier(_ path: String) -> FileIdentifier? {
        if path.first == "/" {
            return "\(rootFolder)\(path.dropFirst())"
        }
        return "\(rootFolder)\(path)"
    }

    /// The file's attributes from `stat`, or nil (404) if it cannot be stat'ed, as `LocalFileSystem` does.
    public func getAttributes(id path: FileIdentifier) async throws -> FileAttributes? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return FileAttributes(
            isFolder: info.st_mode & S_IFMT == S_IFDIR,
            size: Int(info.st_size),
            modificationDate: Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec)))
    }

    /// The whole file as a response body.
    public func loadFile(id path: FileIdentifier, context: some RequestContext) async throws -> ResponseBody {
        try await load(path, range: nil, context: context)
    }

    /// The bytes of `range` (clamped to the file, as `LocalFileSystem` clamps it) as a response body.
    public func loadFile(
        id path: FileIdentifier, range: ClosedRange<Int>, context: some RequestContext
    ) async throws
        -> ResponseBody
    {
        try await load(path, range: range, context: context)
    }

    private func load(
        _ path: String, range requested: ClosedRange<Int>?, context: some RequestContext
    ) async throws
        -> ResponseBody
    {
        let file: BufferedFile
        let size: Int
        do {
            file = try BufferedFile(path: path, engine: engine)
            size = try Self.size(of: file)
        } catch {
            // LocalFileSystem's answer to a file that vanished between its attributes and its load.
            context.coreContext.endpointPath.value = "NotFound"
            throw HTTPError(.notFound)
        }
        guard size > 0 else {
            file.close()
            return ResponseBody()
        }
        let whole = 0...(size - 1)
        let range = requested?.clamped(to: whole) ?? whole
        let bytes = Int64(range.lowerBound)..<Int64(range.upperBound) + 1
        if range.count <= singleReadLimit {
            defer { file.close() }
            return ResponseBody(byteBuffer: try await file.readExactly(bytes, options: ReadOptions()))
        }
        return streamingBody(file, bytes)
    }

    /// A body that reads `bytes` chunk by chunk as the writer takes them. The file is already open, so a
    /// rename over the path during the request does not change what this response sends.
    private func streamingBody(_ file: BufferedFile, _ bytes: Range<Int64>) -> ResponseBody {
        let chunkLength = self.chunkLength
        let window = self.window
        let handle = FileHandleBox(file)
        return ResponseBody(contentLength: bytes.count) { writer in
            defer { handle.close() }
            let file = handle.file
            var sent: Int64 = 0
            for try await chunk in file.readChunks(in: bytes, chunkLength: chunkLength, window: window) {
                sent += Int64(chunk.readableBytes)
                try await writer.write(chunk)
            }
            guard sent == bytes.count else {
                throw FileShrankError(
                    path: file.path, expectedEnd: bytes.upperBound, actualEnd: bytes.lowerBound + sent)
            }
            try await writer.finish(nil)
        }
    }

    /// The size of the open file (so the range and the bytes come from the same inode).
    private static func size(of file: BufferedFile) throws -> Int {
        var info = stat()
        guard let fd = file.descriptor, fstat(fd, &info) == 0 else {
            throw HTTPError(.notFound)
        }
        return Int(info.st_size)
    }
}

/// Closes a file a streamed body opened, when the body finishes or, if it is never written (the client
/// went away first), when the body is freed, so no descriptor outlives the response.
final class FileHandleBox: Sendable {
    let file: BufferedFile
    init(_ file: BufferedFile) { self.file = file }
    func close() { file.close() }
    deinit { file.close() }
}
