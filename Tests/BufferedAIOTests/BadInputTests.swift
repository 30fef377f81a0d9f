// Every bad input gets a typed error naming the file and the cause, matching the kernel's errno contract
// (shared/brief/errno-contract.md), and nothing is left in flight.
import BufferedAIO
import Glibc
import TestSupport
import Testing

@Suite("Bad input", .serialized, .enabled(if: Scratch.available, Scratch.skipReason), .timeLimit(.minutes(1)))
struct BadInputTests {
    func expectError(
        _ code: BufferedAIOError.Code, errno: Int32? = nil, naming path: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
    ) {
        do {
            try body()
            Issue.record("expected \(code), got no error", sourceLocation: sourceLocation)
        } catch let error as BufferedAIOError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
            if let errno { #expect(error.errno?.rawValue == errno, "\(error)", sourceLocation: sourceLocation) }
            if let path { #expect(error.description.contains(path), "\(error)", sourceLocation: sourceLocation) }
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test("negative offset, negative length and an overflowing range are EINVAL; LLONG_MAX-100 + 100 reads 0")
    func ranges() throws {
        let file = try PatternFile(size: 8192, name: "ranges")
        let opened = try BufferedFile(path: file.path)
        defer { opened.close() }
        let context = try IOContext(capacity: 8)
        defer { context.close() }
        let buffer = ReadBuffer(4096)
        expectError(.invalidArgument, errno: EINVAL, naming: file.path) {
            try context.submit(ReadRequest(.file(opened), offset: -1, length: 10, into: buffer.bytes))
        }
        expectError(.invalidArgument, errno: EINVAL) {
            try context.submit(ReadRequest(descriptor: file.fd, offset: Int64.min, length: 10, into: buffer.bytes))
        }
        expectError(.invalidArgument, errno: EINVAL) {
            try context.submit(ReadRequest(descriptor: file.fd, offset: 0, length: -5, into: buffer.bytes))
        }
        expectError(.invalidArgument, errno: EINVAL) {
            try context.submit(
                ReadRequest(descriptor: file.fd, offset: Int64.max - 10, length: 100, into: buffer.bytes))
        }
        try context.submit(
            ReadRequest(descriptor: file.fd, offset: Int64.max - 100, length: 100, into: buffer.bytes, tag: 1))
        let event = try #require(try context.getEvents(minimum: 1, maximum: 1, timeout: .seconds(10)).first)
        #expect(try event.get() == 0)
        #expect(context.inFlight == 0)
    }

    @Test(
        "a closed or invalid descriptor is EBADF; a write-only one is EBADF; a directory is EINVAL; a pipe is refused")
    func descriptorKinds() throws {
        let file = try PatternFile(size: 8192, name: "kinds")
        let context = try IOContext(capacity: 8)
        defer { context.close() }
        let buffer = ReadBuffer(4096)
        expectError(.badDescriptor, errno: EBADF) {
            try context.submit(ReadRequest(descriptor: -1, offset: 0, into: buffer.bytes))
        }
        let closed = open(file.path, O_RDONLY)
        close(closed)
        expectError(.badDescriptor, errno: EBADF) {
            try context.submit(ReadRequest(descriptor: closed, offset: 0, into: buffer.bytes))
        }
        let writeOnly = open(file.path, O_WRONLY)
        defer { close(writeOnly) }
        expectError(.notOpenForReading, errno: EBADF) {
            try context.submit(ReadRequest(descriptor: writeOnly, offset: 0, into: buffer.bytes))
        }
        let directory = open(try Scratch.location.get(), O_RDONLY | O_DIRECTORY)
        defer { close(directory) }
        expectError(.isDirectory, errno: EINVAL) {
            try context.submit(ReadRequest(descriptor: directory, offset: 0, into: buffer.bytes))
        }
        var ends: [Int32] = [0, 0]
        pipe(&ends)
        defer { ends.forEach { close($0) } }
        expectError(.notRegularFile) {
            try context.submit(ReadRequest(descriptor: ends[0], offset: 0, into: buffer.bytes))
        }
        #expect(context.inFlight == 0)
    }

    @Test("a buffer smaller than the length is refused before anything is read")
    func smallBuffer() throws {
        let file = try PatternFile(size: 8192, name: "small")
        let context = try IOContext(capacity: 8)
        defer { context.close() }
        let buffer = ReadBuffer(100)
        expectError(.bufferTooSmall) {
            try context.submit(ReadRequest(descriptor: file.fd, offset: 0, length: 4096, into: buffer.bytes))
        }
        #expect(buffer.prefix(100).allSatisfy { $0 == 0xAA }, "the buffer was written")
    }

    @Test("a zero-length read completes with 0")
    func zeroLength() throws {
        let file = try PatternFile(size: 8192, name: "zero")
        let context = try IOContext(capacity: 2)
        defer { context.close() }
        let buffer = ReadBuffer(1)
        try context.submit(ReadRequest(descriptor: file.fd, offset: 100, length: 0, into: buffer.bytes, tag: 3))
        let event = try #require(try context.getEvents(minimum: 1, maximum: 1, timeout: .seconds(10)).first)
        #expect(event.tag == 3)
        #expect(try event.get() == 0)
    }

    @Test("past capacity, submit accepts fewer (like io_submit) and then refuses with EAGAIN until events are reaped")
    func capacity() throws {
        let file = try PatternFile(size: 1 << 20, name: "capacity")
        file.warm()
        let context = try IOContext(capacity: 4)
        defer { context.close() }
        let buffers = (0..<6).map { _ in ReadBuffer(4096) }
        let requests = (0..<6).map {
            ReadRequest(
                descriptor: file.fd, offset: Int64($0 * 4096), length: 4096, into: buffers[$0].bytes, tag: UInt64($0))
        }
        #expect(try context.submit(requests) == 4)
        expectError(.wouldBlock, errno: EAGAIN) { try context.submit(requests[4]) }
        let events = try collect(context, 4)
        #expect(Set(events.keys) == [0, 1, 2, 3])
        #expect(try context.submit(Array(requests[4...])) == 2)
        let rest = try collect(context, 2)
        for tag in 4...5 {
            #expect(try rest[UInt64(tag)]?.get() == 4096)
            #expect(buffers[tag].prefix(4096) == file.expected(tag * 4096, 4096))
        }
    }

    @Test("a submit whose second request is bad returns 1, and the bad one alone throws")
    func partialSubmit() throws {
        let file = try PatternFile(size: 8192, name: "partial")
        let context = try IOContext(capacity: 4)
        defer { context.close() }
        let a = ReadBuffer(4096)
        let b = ReadBuffer(4096)
        let good = ReadRequest(descriptor: file.fd, offset: 0, length: 4096, into: a.bytes, tag: 1)
        let bad = ReadRequest(descriptor: file.fd, offset: -4096, length: 4096, into: b.bytes, tag: 2)
        #expect(try context.submit([good, bad]) == 1)
        expectError(.invalidArgument) { try context.submit(bad) }
        #expect(try collect(context, 1)[1]?.get() == 4096)
    }

    @Test("getEvents with minimum > maximum or negative counts is EINVAL")
    func badEventCounts() throws {
        let context = try IOContext(capacity: 2)
        defer { context.close() }
        expectError(.invalidArgument) { _ = try context.getEvents(minimum: 2, maximum: 1) }
        expectError(.invalidArgument) { _ = try context.getEvents(minimum: -1, maximum: 1) }
        #expect(try context.getEvents(minimum: 0, maximum: 0).isEmpty)
        #expect(try context.getEvents(minimum: 0, maximum: 5).isEmpty)
    }

    @Test("submit after close, and getEvents after close, fail with contextClosed (EINVAL)")
    func afterClose() throws {
        let file = try PatternFile(size: 8192, name: "afterclose")
        let context = try IOContext(capacity: 2)
        context.close()
        let buffer = ReadBuffer(4096)
        // EINVAL, as io_submit and io_getevents answer for a destroyed context.
        expectError(.contextClosed, errno: EINVAL) {
            try context.submit(ReadRequest(descriptor: file.fd, offset: 0, into: buffer.bytes))
        }
        expectError(.contextClosed, errno: EINVAL) { _ = try context.getEvents(minimum: 0, maximum: 1) }
        #expect(context.eventDescriptor == -1)
    }

    @Test("capacity out of range is EINVAL")
    func badCapacity() {
        expectError(.invalidArgument) { _ = try IOContext(capacity: 0) }
        expectError(.invalidArgument) { _ = try IOContext(capacity: -1000) }
    }

    @Test("a closed BufferedFile is refused with its path; a missing path names the path and ENOENT")
    func fileErrors() throws {
        let file = try PatternFile(size: 8192, name: "closedfile")
        let opened = try BufferedFile(path: file.path)
        opened.close()
        let context = try IOContext(capacity: 2)
        defer { context.close() }
        let buffer = ReadBuffer(4096)
        expectError(.fileClosed, errno: EBADF, naming: file.path) {
            try context.submit(ReadRequest(.file(opened), offset: 0, into: buffer.bytes))
        }
        let missing = file.path + ".missing"
        expectError(.openFailed, errno: ENOENT, naming: missing) { _ = try BufferedFile(path: missing) }
        expectError(.isDirectory, naming: try Scratch.location.get()) {
            _ = try BufferedFile(path: try Scratch.location.get())
        }
    }

    @Test("an unmapped destination gives EFAULT in the event, as the kernel does, not a crash")
    func badBuffer() throws {
        let file = try PatternFile(size: 8192, name: "efault")
        file.warm()
        let context = try IOContext(capacity: 2)
        defer { context.close() }
        let page = mmap(nil, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        defer { munmap(page, 4096) }
        let bad = UnsafeMutableRawBufferPointer(start: page, count: 4096)
        try context.submit(ReadRequest(descriptor: file.fd, offset: 0, into: bad, tag: 5))
        let event = try #require(try context.getEvents(minimum: 1, maximum: 1, timeout: .seconds(10)).first)
        #expect(event.rawResult == -Int(EFAULT))
    }

    @Test("a read through a shut-down engine is refused with shutDown and ECANCELED, naming the file")
    func afterShutdown() async throws {
        let file = try PatternFile(size: 8192, name: "shutdown")
        let engine = try ReadEngine()
        let opened = try BufferedFile(path: file.path, engine: engine)
        defer { opened.close() }
        engine.shutdown()
        await #expect {
            _ = try await opened.read(fromAbsoluteOffset: 0, count: 100)
        } throws: { error in
            guard let error = error as? BufferedAIOError else { return false }
            return error.code == .shutDown && error.negatedErrno == -Int(ECANCELED)
                && error.description.contains(file.path)
        }
    }

    @Test("errors speak swift-system's Errno and FilePath; each code's errno is the kernel's for that case")
    func systemTypes() throws {
        let missing = FilePath(try Scratch.location.get()).appending("no-such-file")
        do {
            _ = try BufferedFile(path: missing)
            Issue.record("opening a missing file succeeded")
        } catch {
            // The same Errno value swift-system's own open reports for this path.
            var systemErrno: Errno? = nil
            do { _ = try FileDescriptor.open(missing, .readOnly) } catch { systemErrno = error as? Errno }
            #expect(error.errno == systemErrno)
            #expect(error.errno == .noSuchFileOrDirectory)
            #expect(error.filePath == missing)
            #expect(error.description.hasSuffix("No such file or directory (ENOENT)"), "\(error)")
        }
        let codes: [(BufferedAIOError.Code, Int32)] = [
            (.invalidArgument, EINVAL), (.badDescriptor, EBADF), (.notOpenForReading, EBADF),
            (.isDirectory, EINVAL), (.notRegularFile, ESPIPE), (.contextClosed, EINVAL), (.fileClosed, EBADF),
            (.shutDown, ECANCELED), (.wouldBlock, EAGAIN), (.cancelled, ECANCELED),
        ]
        for (code, errno) in codes {
            #expect(BufferedAIOError(code, "x").negatedErrno == -Int(errno), "\(code)")
        }
    }
}
