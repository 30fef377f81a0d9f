// This file owns `ByteBufferChunks`, the streaming read into ByteBuffers: NIOFileSystem's `readChunks` and
// NonBlockingFileIO's `readChunked` shape, with a bounded window of reads in flight ahead of the consumer.
import BufferedAIO
import NIOCore

/// The chunks of a byte range of a file as `ByteBuffer`s, in file order, read ahead through the engine.
///
/// At most `window` reads are in flight, and a new one starts only when the consumer takes a chunk, so
/// memory stays at about `window × chunkLength` however slow the consumer is. Each chunk is read straight
/// into its own buffer (see ``BufferedAIO/BufferedFile/read(fromAbsoluteOffset:length:appendingTo:options:)``),
/// not through `[UInt8]`. Leaving the loop early, or cancelling the consuming task, cancels the reads still
/// in flight.
public struct ByteBufferChunks: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer

    let file: BufferedFile
    let range: Range<Int64>?
    let chunkLength: Int
    let window: Int
    let allocator: ByteBufferAllocator
    let options: ReadOptions

    public func makeAsyncIterator() -> Iterator {
        Iterator(self)
    }

    /// Iterates the chunks; see ``ByteBufferChunks``.
    public final class Iterator: AsyncIteratorProtocol {
        private let chunks: ByteBufferChunks
        private var nextOffset: Int64
        private var end: Int64?
        /// Reads started ahead of the consumer, oldest first, with the length each asked for.
        private var inFlight: [(task: Task<ByteBuffer, any Error>, length: Int)] = []
        private var failure: (any Error)?

        init(_ chunks: ByteBufferChunks) {
            self.chunks = chunks
            self.nextOffset = chunks.range?.lowerBound ?? 0
            self.end = chunks.range?.upperBound
        }

        deinit { cancelAll() }

        private func cancelAll() {
            inFlight.forEach { $0.task.cancel() }
            inFlight.removeAll()
        }

        /// The next chunk, or nil at the end of the range or of the file.
        ///
        /// - Throws: the read's error (after which every call rethrows it), or `CancellationError`.
        public func next() async throws -> ByteBuffer? {
            if let failure { throw failure }
            do {
                try Task.checkCancellation()
                let (chunk, wanted) = try await nextChunk()
                guard let chunk else { return nil }
                if chunk.readableBytes < wanted {
                    // End of file inside this chunk: the reads after it can only come back empty.
                    cancelAll()
                    end = nextOffset
                }
                return chunk.readableBytes == 0 ? nil : chunk
            } catch {
                cancelAll()
                failure = error
                throw error
            }
        }

        private func nextChunk() async throws -> (ByteBuffer?, Int) {
            if chunks.window <= 1 {
                // No read-ahead asked for: read in this task, without a task hop.
                guard let length = takeNextRange() else { return (nil, 0) }
                let buffer = try await chunks.file.readChunk(
                    fromAbsoluteOffset: nextOffset - Int64(length), length: length, allocator: chunks.allocator,
                    options: chunks.options)
                return (buffer, length)
            }
            fill()
            guard !inFlight.isEmpty else { return (nil, 0) }
            let head = inFlight.removeFirst()
            let buffer = try await withTaskCancellationHandler {
                try await head.task.value
            } onCancel: {
                head.task.cancel()
            }
            return (buffer, head.length)
        }

        /// Claims the next chunk's length and advances past it; nil once the range is done.
        private func takeNextRange() -> Int? {
            let limit = end ?? Int64.max
            guard nextOffset < limit else { return nil }
            let length = Int(Swift.min(Int64(chunks.chunkLength), limit - nextOffset))
            nextOffset += Int64(length)
            return length
        }

        private func fill() {
            while inFlight.count < chunks.window, let length = takeNextRange() {
                let offset = nextOffset - Int64(length)
                let chunks = self.chunks
                let task = Task {
                    try await chunks.file.readChunk(
                        fromAbsoluteOffset: offset, length: length, allocator: chunks.allocator, options: chunks.options
                    )
                }
                inFlight.append((task, length))
            }
        }
    }
}

extension BufferedFile {
    /// The file's bytes in `range` (the whole file by default) as `ByteBuffer` chunks of `chunkLength` bytes
    /// (the last may be shorter), with up to `window` reads in flight ahead of the consumer.
    ///
    /// ```swift
    /// for try await chunk in file.readChunks(chunkLength: 128 * 1024) { try await writer.write(chunk) }
    /// ```
    public func readChunks(
        in range: Range<Int64>? = nil, chunkLength: Int = 128 * 1024, window: Int = 4,
        allocator: ByteBufferAllocator = ByteBufferAllocator(), options: ReadOptions = ReadOptions()
    ) -> ByteBufferChunks {
        precondition(chunkLength > 0, "chunkLength must be positive")
        return ByteBufferChunks(
            file: self, range: range, chunkLength: chunkLength, window: window, allocator: allocator, options: options)
    }
}
