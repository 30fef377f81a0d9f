// This file owns the values a caller exchanges with an IOContext: a read request and its event.

/// One read for ``IOContext/submit(_:)->()``: the `struct iocb` of this API.
///
/// The destination buffer must stay valid until the request's event is returned (or the context is
/// closed), exactly as with `io_submit`.
public struct ReadRequest: @unchecked Sendable {
    /// Where the data comes from.
    public enum Source: @unchecked Sendable {
        /// A descriptor the caller opened for reading. It is pinned (duplicated) at submit, so the caller
        /// may close it while the read is in flight. Direct mode needs it opened with O_DIRECT; otherwise
        /// a direct read falls back to the buffered path, because the engine never re-opens a file.
        case descriptor(Int32)
        /// A file opened by ``BufferedFile``, which also holds an O_DIRECT descriptor for direct mode.
        case file(BufferedFile)
    }

    /// The file to read.
    public var source: Source
    /// The file offset of the first byte.
    public var offset: Int64
    /// How many bytes to read.
    public var length: Int
    /// Where the bytes go; at least `length` bytes.
    public var buffer: UnsafeMutableRawBufferPointer
    /// A caller's value returned in the event, like `iocb.data`.
    public var tag: UInt64
    /// Buffered (default), direct or automatic.
    public var mode: ReadMode

    /// A read of `length` bytes (the whole buffer by default) at `offset`.
    public init(
        _ source: Source, offset: Int64, length: Int? = nil, into buffer: UnsafeMutableRawBufferPointer,
        tag: UInt64 = 0, mode: ReadMode = .buffered
    ) {
        self.source = source
        self.offset = offset
        self.length = length ?? buffer.count
        self.buffer = buffer
        self.tag = tag
        self.mode = mode
    }

    /// A read from a descriptor; see ``Source/descriptor(_:)``.
    public init(
        descriptor: Int32, offset: Int64, length: Int? = nil, into buffer: UnsafeMutableRawBufferPointer,
        tag: UInt64 = 0, mode: ReadMode = .buffered
    ) {
        self.init(.descriptor(descriptor), offset: offset, length: length, into: buffer, tag: tag, mode: mode)
    }

    /// A read from a swift-system descriptor; see ``Source/descriptor(_:)``.
    public init(
        descriptor: FileDescriptor, offset: Int64, length: Int? = nil, into buffer: UnsafeMutableRawBufferPointer,
        tag: UInt64 = 0, mode: ReadMode = .buffered
    ) {
        self.init(.descriptor(descriptor.rawValue), offset: offset, length: length, into: buffer, tag: tag, mode: mode)
    }
}

/// A completed read: the `struct io_event` of this API.
public struct IOEvent: Sendable, Hashable {
    /// The request's ``ReadRequest/tag``.
    public var tag: UInt64
    /// The bytes read (short only at end of file), or why the read failed.
    public var result: Result<Int, BufferedAIOError>

    /// The result as `io_event.res` carries it: bytes read, or a negative errno.
    public var rawResult: Int {
        switch result {
        case .success(let count): count
        case .failure(let error): error.negatedErrno
        }
    }

    /// The bytes read, throwing the read's error.
    public func get() throws(BufferedAIOError) -> Int { try result.get() }
}
