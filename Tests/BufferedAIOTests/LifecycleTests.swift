// Closing, cancelling, pinning and leaking: a context closed with reads in flight returns promptly and
// leaves no thread, descriptor, mapping or libaio context behind.
import BufferedAIO
import Glibc
import Synchronization
import TestSupport
import Testing

@Suite("Lifecycle", .serialized, .enabled(if: Scratch.available, Scratch.skipReason), .timeLimit(.minutes(3)))
struct LifecycleTests {
    @Test("closing with 1,000 reads in flight returns, wakes a waiting reaper, and leaks nothing")
    func closeWithReadsInFlight() throws {
        let file = try PatternFile(size: 256 << 20, name: "closeinflight")
        file.evict()
        let opened = try BufferedFile(path: file.path, accessPattern: .random)
        let context = try IOContext(capacity: 1000)
        let poller = context.pollerThreadName
        let buffers = (0..<1000).map { _ in ReadBuffer(8192, alignment: 4096) }
        var requests: [ReadRequest] = []
        for index in 0..<1000 {
            let offset = Int64(index) * 262_144 + Int64(index % 7)
            let mode: ReadMode = index % 10 == 0 ? .direct : .buffered
            requests.append(
                ReadRequest(
                    .file(opened), offset: offset, length: 8192, into: buffers[index].bytes, tag: UInt64(index),
                    mode: mode))
        }
        #expect(try context.submit(requests) == 1000)
        let waiterDone = Mutex(false)
        let waiter = try ThreadForTest {
            _ = try? context.getEvents(minimum: 1000, maximum: 1000)
            waiterDone.withLock { $0 = true }
        }
        context.close()
        waiter.join()
        #expect(waiterDone.withLock { $0 })
        opened.close()
        #expect(threadGone(named: poller), "the poller thread \(poller) is still running")
        #expect(descriptors(pointingAt: file.path) == 1, "only the oracle's own descriptor should remain")
        #expect(mappings(of: file.path) == 0, "a mapping of the file is still there")
    }

    @Test("cancel by tag: a read waiting for pages gets a cancelled event; the others complete")
    func cancelByTag() throws {
        let file = try PatternFile(size: 64 << 20, name: "cancel")
        file.evict()
        var configuration = EngineConfiguration()
        configuration.inlineCopyLimit = 4096
        let context = try IOContext(capacity: 8, configuration: configuration)
        defer { context.close() }
        let buffers = (0..<4).map { _ in ReadBuffer(8 << 20) }
        let requests = (0..<4).map {
            ReadRequest(
                descriptor: file.fd, offset: Int64($0) * (16 << 20), length: 8 << 20, into: buffers[$0].bytes,
                tag: UInt64($0))
        }
        try context.submit(requests)
        let cancelled = context.cancel(tag: 2)
        #expect(!context.cancel(tag: 77), "no read has tag 77")
        let events = try collect(context, 4)
        #expect(events.count == 4)
        for tag in [0, 1, 3] {
            #expect(try events[UInt64(tag)]?.get() == 8 << 20)
            #expect(buffers[tag].prefix(8 << 20) == file.expected(tag * (16 << 20), 8 << 20))
        }
        if cancelled {
            guard case .failure(let error) = events[2]?.result else {
                Issue.record("cancelled read 2 returned \(String(describing: events[2]))")
                return
            }
            #expect(error.code == .cancelled)
            #expect(events[2]?.rawResult == -Int(ECANCELED))
        } else {
            // It finished before the cancel landed; then its data must be right.
            #expect(buffers[2].prefix(8 << 20) == file.expected(2 * (16 << 20), 8 << 20))
        }
        #expect(context.statistics.cancelled == (cancelled ? 1 : 0))
    }

    @Test("the descriptor is pinned at submit: closing it and reusing the number for another file reads the first file")
    func descriptorPinning() throws {
        let first = try PatternFile(size: 8 << 20, name: "pin-first")
        let second = try PatternFile(size: 8 << 20, name: "pin-second")
        first.evict()
        let context = try IOContext(capacity: 2)
        defer { context.close() }
        let fd = open(first.path, O_RDONLY)
        let buffer = ReadBuffer(4 << 20)
        try context.submit(ReadRequest(descriptor: fd, offset: 4096, length: 4 << 20, into: buffer.bytes, tag: 1))
        close(fd)
        let reused = open(second.path, O_RDONLY)
        defer { close(reused) }
        #expect(reused == fd, "the descriptor number was not reused; the check is weaker")
        let event = try #require(try context.getEvents(minimum: 1, maximum: 1, timeout: .seconds(30)).first)
        #expect(try event.get() == 4 << 20)
        #expect(buffer.prefix(4 << 20) == first.expected(4096, 4 << 20))
    }

    @Test("truncating the file while reads are in flight gives short counts or 0, never a crash")
    func truncationInFlight() throws {
        let file = try PatternFile(size: 32 << 20, name: "truncate")
        file.evict()
        let context = try IOContext(capacity: 8)
        defer { context.close() }
        let buffers = (0..<8).map { _ in ReadBuffer(2 << 20) }
        let requests = (0..<8).map {
            ReadRequest(
                descriptor: file.fd, offset: Int64($0) * (4 << 20), length: 2 << 20, into: buffers[$0].bytes,
                tag: UInt64($0))
        }
        try context.submit(requests)
        let writer = open(file.path, O_WRONLY)
        #expect(ftruncate(writer, off_t(9 << 20)) == 0)
        close(writer)
        let events = try collect(context, 8)
        #expect(events.count == 8)
        for (tag, event) in events {
            let count = try event.get()
            let offset = Int(tag) * (4 << 20)
            let expected = file.expected(offset, 2 << 20)  // the oracle after truncation
            #expect(count <= 2 << 20)
            #expect(count >= expected.count || count <= 2 << 20, "read \(tag)")
            // Whatever was read before the truncation landed is the file's old bytes; what pread sees now
            // is a prefix of it.
            #expect(buffers[Int(tag)].prefix(Swift.min(count, expected.count)) == Array(expected.prefix(count)))
        }
    }

    @Test("10,000 reads through one context, then close: no descriptor, thread or mapping left")
    func noLeakAfterTenThousand() throws {
        let file = try PatternFile(size: 64 << 20, name: "leak")
        let descriptorsBefore = openDescriptors()
        let context = try IOContext(capacity: 64)
        let poller = context.pollerThreadName
        let buffers = (0..<64).map { _ in ReadBuffer(16_384) }
        var generator = SeededGenerator(seed: 7)
        var done = 0
        var mismatches = 0
        while done < 10_000 {
            if done % 2_000 == 0 { file.evict() }
            let offsets = (0..<64).map { _ in Int(generator.next() % UInt64((64 << 20) - 16_384)) }
            let requests = (0..<64).map {
                ReadRequest(
                    descriptor: file.fd, offset: Int64(offsets[$0]), length: 16_384, into: buffers[$0].bytes,
                    tag: UInt64($0))
            }
            #expect(try context.submit(requests) == 64)
            let events = try collect(context, 64)
            for (tag, event) in events
            where try buffers[Int(tag)].prefix(event.get()) != file.expected(offsets[Int(tag)], 16_384) {
                mismatches += 1
            }
            done += 64
        }
        #expect(mismatches == 0)
        #expect(context.statistics.completed >= 10_000)
        context.close()
        #expect(threadGone(named: poller), "the poller thread \(poller) is still running")
        #expect(mappings(of: file.path) == 0)
        #expect(descriptors(pointingAt: file.path) == 1, "only the oracle's own descriptor should remain")
        #expect(openDescriptors().subtracting(descriptorsBefore).isEmpty, "descriptors opened and never closed")
    }

    @Test("the eventfd is readable exactly while events are ready")
    func eventDescriptor() throws {
        let file = try PatternFile(size: 1 << 20, name: "eventfd")
        file.warm()
        let context = try IOContext(capacity: 2)
        defer { context.close() }
        var pfd = pollfd(fd: context.eventDescriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&pfd, 1, 0) == 0)
        let buffer = ReadBuffer(4096)
        try context.submit(ReadRequest(descriptor: file.fd, offset: 0, length: 4096, into: buffer.bytes, tag: 1))
        #expect(poll(&pfd, 1, 10_000) == 1)
        _ = try context.getEvents(minimum: 1, maximum: 1)
        pfd.revents = 0
        #expect(poll(&pfd, 1, 0) == 0)
    }
}

/// A pthread for tests that need a second blocked caller.
final class ThreadForTest: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) throws {
        self.body = body
        let retained = Unmanaged.passRetained(self)
        let result = pthread_create(
            &thread, nil,
            { argument in
                let me = Unmanaged<ThreadForTest>.fromOpaque(argument!).takeRetainedValue()
                me.body()
                return nil
            }, retained.toOpaque())
        if result != 0 {
            retained.release()
            throw SkipReason("pthread_create failed")
        }
    }

    func join() { pthread_join(thread, nil) }
}
