// This file owns `BufferedFileChunks`, the streaming read: an AsyncSequence that keeps a bounded window of reads in
// flight ahead of the consumer and delivers chunks in order.

/// The chunks of a byte range of a file, in order, read ahead through the engine.
///
/// At most ``ReadOptions/window`` reads are in flight at once, and a new one starts only when the
/// consumer takes a chunk, so a slow consumer holds the memory at `window × chunkLength` bytes. When the
/// consumer stops iterating or its task is cancelled, the reads still waiting for pages are cancelled.
public struct BufferedFileChunks: AsyncSequence, Sendable {
    /// One chunk of the file's bytes.
    public typealias Element = [UInt8]

    let file: BufferedFile
    let range: Range<Int64>?
    let chunkLength: Int
    let options: ReadOptions

    /// Starts reading: the first call to `next()` submits the first window of reads.
    public func makeAsyncIterator() -> Iterator {
        Iterator(file: file, range: range, chunkLength: chunkLength, options: options)
    }

    /// Iterates the chunks; see ``BufferedFileChunks``.
    public final class Iterator: AsyncIteratorProtocol {
        let file: BufferedFile
        let chunkLength: Int
        let options: ReadOptions
        var nextOffset: Int64
        var end: Int64?
        var inFlight: [AsyncRead] = []
        var failure: Error?

        init(file: BufferedFile, range: Range<Int64>?, chunkLength: Int, options: ReadOptions) {
            self.file = file
            self.chunkLength = Swift.max(chunkLength, 1)
            self.options = options
            self.nextOffset = range?.lowerBound ?? 0
            self.end = range?.upperBound
        }

        deinit { cancelAll() }

        private func cancelAll() {
            if let engine = try? file.engine.engine { inFlight.forEach { $0.cancel(engine: engine) } }
            inFlight.removeAll()
        }

        /// Reads submitted and not yet handed to the consumer; never more than the window.
        public var readsInFlight: Int { inFlight.count }

        /// The next chunk in file order, or nil at the end of the range or file.
        ///
        /// - Throws: ``BufferedAIOError`` for a failed read (after which every call rethrows it), or
        ///   `CancellationError` if the task is cancelled; either way the reads in flight are cancelled.
        public func next() async throws -> [UInt8]? {
            if let failure { throw failure }
            do {
                try Task.checkCancellation()
                let engine = try file.engine.engine
                try fill(engine)
                guard !inFlight.isEmpty else { return nil }
                var head = inFlight.removeFirst()
                let wanted = head.length
                let count = try await head.complete(engine: engine)
                if count < wanted {
                    // End of file: nothing after this chunk.
                    end = head.request.offset + Int64(count)
                    cancelAll()
                    nextOffset = end!
                }
                if count == 0 { return nil }
                return Array(UnsafeRawBufferPointer(rebasing: head.sink.buffer[..<count]))
            } catch {
                cancelAll()
                failure = error
                throw error
            }
        }

        private func fill(_ engine: Engine) throws(BufferedAIOError) {
            let window = Swift.max(options.window, 1)
            while inFlight.count < window {
                let limit = end ?? Int64.max
                guard nextOffset < limit else { return }
                let length = Int(Swift.min(Int64(chunkLength), limit - nextOffset))
                let read = try AsyncRead.start(
                    file, engine: engine, offset: nextOffset, length: length, mode: options.mode)
                inFlight.append(read)
                // By what was asked of the engine: a chunk longer than the file or than MAX_RW_COUNT is
                // bounded at submit, and the next chunk starts where this one's bytes end.
                nextOffset += Int64(read.length)
                let endAtSubmit = read.length < Swift.min(length, Engine.maximumReadCount)
                let shortInline = read.finished && (try? read.request.event.get()) ?? 0 < read.length
                if endAtSubmit || shortInline {
                    // The file ends here (as of now); stop submitting past it.
                    end = Swift.min(end ?? Int64.max, nextOffset)
                }
            }
        }
    }
}

extension BufferedFile {
    /// The file's bytes in `range` (the whole file by default), as chunks of `chunkLength` bytes (the last
    /// may be shorter), read ahead with a bounded window of reads in flight.
    ///
    /// ```swift
    /// for try await chunk in file.chunks(chunkLength: 1 << 20) { consume(chunk) }
    /// ```
    public func chunks(
        in range: Range<Int64>? = nil, chunkLength: Int = 1 << 20, options: ReadOptions = ReadOptions()
    )
        -> BufferedFileChunks
    {
        BufferedFileChunks(file: self, range: range, chunkLength: chunkLength, options: options)
    }
}
