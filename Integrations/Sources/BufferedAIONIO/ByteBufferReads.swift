// This file owns the ByteBuffer reads of `BufferedFile`: whole ranges into a ByteBuffer's writable bytes,
// in the shapes of NIOFileSystem's `readChunk`/`readToEnd` and NonBlockingFileIO's `read(fileHandle:...)`.
import BufferedAIO
import NIOCore

extension BufferedFile {
    /// Reads up to `length` bytes at `offset` and appends them to `buffer`; returns how many were read (fewer
    /// only at end of file).
    ///
    /// The bytes go straight into the buffer's writable bytes: a cached read is one `preadv2` into them, a
    /// read that waited for pages is one copy from the engine's buffer (the core copies so that a cancelled
    /// read can never write the caller's memory late). No intermediate `[UInt8]`.
    ///
    /// - Throws: `BufferedAIOError` naming the file; `CancellationError` if the task was cancelled while the
    ///   read waited, in which case `buffer` is unchanged.
    public func read(
        fromAbsoluteOffset offset: Int64, length: Int, appendingTo buffer: inout ByteBuffer,
        options: ReadOptions = ReadOptions()
    ) async throws -> Int {
        precondition(length >= 0, "length must not be negative")
        guard length > 0 else { return 0 }
        buffer.reserveCapacity(minimumWritableBytes: length)
        // The pointer outlives the closure on purpose: `buffer` is held inout (exclusively) for this whole
        // call and is not mutated until the read returns, so its storage (made unique by the mutating
        // accessor) can be neither freed nor moved; the core writes it only while `read` is running.
        let target = buffer.withUnsafeMutableWritableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[..<length]) }
        let count = try await read(fromAbsoluteOffset: offset, into: target, options: options)
        buffer.moveWriterIndex(forwardBy: count)
        return count
    }

    /// Reads up to `length` bytes at `offset` into a new buffer (fewer only at end of file): NIOFileSystem's
    /// `readChunk(fromAbsoluteOffset:length:)`, NonBlockingFileIO's `read(fileHandle:fromOffset:byteCount:allocator:)`.
    public func readChunk(
        fromAbsoluteOffset offset: Int64, length: Int, allocator: ByteBufferAllocator = ByteBufferAllocator(),
        options: ReadOptions = ReadOptions()
    ) async throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: length)
        _ = try await read(fromAbsoluteOffset: offset, length: length, appendingTo: &buffer, options: options)
        return buffer
    }

    /// Reads `range` exactly, or throws: for callers that promised the peer a length (an HTTP
    /// content-length), where a short read means the file shrank and must not pass for a short body.
    ///
    /// - Throws: `FileShrankError` if end of file comes before `range.upperBound`.
    public func readExactly(
        _ range: Range<Int64>, allocator: ByteBufferAllocator = ByteBufferAllocator(),
        options: ReadOptions = ReadOptions()
    ) async throws -> ByteBuffer {
        let buffer = try await readChunk(
            fromAbsoluteOffset: range.lowerBound, length: Int(range.upperBound - range.lowerBound),
            allocator: allocator,
            options: options)
        guard buffer.readableBytes == range.count else {
            throw FileShrankError(
                path: path, expectedEnd: range.upperBound, actualEnd: range.lowerBound + Int64(buffer.readableBytes))
        }
        return buffer
    }

    /// Reads the whole file into one buffer, refusing a file larger than `maximumSizeAllowed` (NIOFileSystem's
    /// `readToEnd(maximumSizeAllowed:)`).
    ///
    /// - Throws: `BufferedAIOError` with code `invalidArgument` if the file is or grows larger than the limit.
    public func readToEnd(
        maximumSizeAllowed: Int, allocator: ByteBufferAllocator = ByteBufferAllocator(),
        options: ReadOptions = ReadOptions()
    ) async throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 0)
        // Ask for one byte more than allowed: getting it proves the file is too large without a stat race.
        let chunk = 1 << 20
        var offset: Int64 = 0
        while true {
            let want = min(chunk, maximumSizeAllowed + 1 - buffer.readableBytes)
            let count = try await read(fromAbsoluteOffset: offset, length: want, appendingTo: &buffer, options: options)
            if buffer.readableBytes > maximumSizeAllowed {
                throw BufferedAIOError(
                    .invalidArgument, "'\(path)' is larger than the limit of \(maximumSizeAllowed) bytes",
                    errno: .invalidArgument, path: path)
            }
            if count < want { return buffer }
            offset += Int64(count)
        }
    }
}

/// A file ended before a range that was promised in full: it was truncated while being read.
public struct FileShrankError: Error, CustomStringConvertible, Sendable {
    /// The file that shrank.
    public let path: String
    /// Where the promised range ended.
    public let expectedEnd: Int64
    /// Where the file ended instead.
    public let actualEnd: Int64

    public init(path: String, expectedEnd: Int64, actualEnd: Int64) {
        self.path = path
        self.expectedEnd = expectedEnd
        self.actualEnd = actualEnd
    }

    public var description: String {
        "'\(path)' ended at byte \(actualEnd) while being read, before the promised end at \(expectedEnd) (it was truncated)"
    }
}
