// The poller's and reaper's recovery paths driven deterministically: the engine's RWF_NOWAIT copies,
// probes and readahead calls on one file are scripted through the syscall hook (Syscalls/Mocking.swift,
// debug builds only), while the bytes still come from the kernel's blocking pread and are checked against
// a plain pread of the file. Without the hook these paths show only when the real page cache happens to
// lose pages at the right moment (ReadBehaviourTests.evictedBeforeReap retries up to 20 times for that).
#if DEBUG
@_spi(Experiments) import BufferedAIO
import TestSupport
import Glibc
import Synchronization
import Testing

@Suite(
    "Recovery paths under a scripted kernel", .serialized, .enabled(if: Scratch.available, Scratch.skipReason),
    .timeLimit(.minutes(1)))
struct MockedKernelTests {
    /// Counts what a script saw, from whichever thread made the call.
    final class Tally: Sendable {
        private let counts = Mutex<[String: Int]>([:])
        func add(_ key: String) { counts.withLock { $0[key, default: 0] += 1 } }
        subscript(_ key: String) -> Int { counts.withLock { $0[key] ?? 0 } }
    }

    /// A configuration whose poller probes with RWF_NOWAIT (the calls the scripts answer), and whose
    /// reaper never claims a pending read (so every re-arm goes back through the poller).
    static func configuration(_ change: (inout EngineConfiguration) -> Void = { _ in }) -> EngineConfiguration {
        var configuration = EngineConfiguration()
        configuration.residencyProbe = .nowait
        configuration.reaperWaitsInRead = false
        configuration.pollerWaitsForLoneRead = false
        change(&configuration)
        return configuration
    }

    /// Reads `length` bytes at 4096 from `file` through a new context while `script` answers the engine's
    /// calls on that file. `script` gets each call and whether it writes the read's own buffer.
    func read(
        _ file: PatternFile, length: Int = 32 << 10, configuration: EngineConfiguration,
        script: @escaping @Sendable (MockedCall, _ intoBuffer: Bool) -> MockedResult
    ) throws -> (event: IOEvent, buffer: ReadBuffer, statistics: EngineStatistics) {
        let buffer = ReadBuffer(length)
        let start = UInt(bitPattern: buffer.bytes.baseAddress)
        let end = start + UInt(length)
        let mock = SyscallMock.install(forFileOf: file.fd) { call in
            script(call, call.address >= start && call.address < end)
        }
        defer { mock.remove() }
        let context = try IOContext(capacity: 4, configuration: configuration)
        defer { context.close() }
        try context.submit(ReadRequest(descriptor: file.fd, offset: 4096, length: length, into: buffer.bytes, tag: 7))
        let event = try #require(try context.getEvents(minimum: 1, maximum: 1).first)
        return (event, buffer, context.statistics)
    }

    @Test("a reaper whose copies keep missing re-arms maximumRearms times, then reads blocking; bytes match pread")
    func rearmThenBlocking() throws {
        let file = try PatternFile(size: 1 << 20, name: "mock-rearm")
        let tally = Tally()
        let (event, buffer, statistics) = try read(file, configuration: Self.configuration()) { call, intoBuffer in
            guard call.name == .preadv2 else { return .passThrough }
            if intoBuffer {
                tally.add("miss")
                return .fail(EAGAIN)  // every RWF_NOWAIT copy into the caller's buffer finds pages evicted
            }
            return .value(call.count)  // the poller's probes into its scratch: every page resident
        }
        #expect(try event.get() == 32 << 10)
        #expect(buffer.prefix(32 << 10) == file.expected(4096, 32 << 10))
        #expect(statistics.rearms == 2, "\(statistics)")
        #expect(statistics.blockingReads == 1, "\(statistics)")
        // submit's fast path, the first reap, then one reap after each of the two re-arms.
        #expect(tally["miss"] == 4)
    }

    @Test("a reaper whose copy misses once re-arms once, and the next copy finishes the read without blocking")
    func rearmOnce() throws {
        let file = try PatternFile(size: 1 << 20, name: "mock-rearm-once")
        let tally = Tally()
        let (event, buffer, statistics) = try read(file, configuration: Self.configuration()) { call, intoBuffer in
            guard call.name == .preadv2 else { return .passThrough }
            guard intoBuffer else { return .value(call.count) }
            tally.add("copy")
            // The fast path and the first reap miss; then the copy is the kernel's own (blocking) read.
            if tally["copy"] <= 2 { return .fail(EAGAIN) }
            return .value(pread(call.fd, call.buffer, call.count, off_t(call.offset)))
        }
        #expect(try event.get() == 32 << 10)
        #expect(buffer.prefix(32 << 10) == file.expected(4096, 32 << 10))
        #expect(statistics.rearms == 1, "\(statistics)")
        #expect(statistics.blockingReads == 0, "\(statistics)")
        #expect(tally["copy"] == 3)
    }

    @Test("a read whose pages never arrive stalls, has its readahead issued again each time, then reads blocking")
    func stallThenBlocking() throws {
        let file = try PatternFile(size: 1 << 20, name: "mock-stall")
        let tally = Tally()
        let configuration = Self.configuration {
            $0.stallTimeout = .milliseconds(1)
            $0.maximumStalls = 3
        }
        let (event, buffer, statistics) = try read(file, configuration: configuration) { call, _ in
            switch call.name {
            case .preadv2: return .fail(EAGAIN)  // nothing ever becomes resident
            case .posixFadvise:
                if call.flags == POSIX_FADV_WILLNEED { tally.add("willneed") }
                return .value(0)
            case .pread, .readahead: return .passThrough
            }
        }
        #expect(try event.get() == 32 << 10)
        #expect(buffer.prefix(32 << 10) == file.expected(4096, 32 << 10))
        // Stalls 1-3 issue the readahead again; the fourth gives up on waiting.
        #expect(statistics.stalls == 4, "\(statistics)")
        #expect(statistics.blockingReads == 1, "\(statistics)")
        #expect(statistics.rearms == 0, "\(statistics)")
        // 32 KiB is one readahead call: the one at submit and one per re-issue.
        #expect(tally["willneed"] == 1 + 3)
    }

    @Test("the poller waits in a lone read's pread at most once per page, even when that pread returns at once")
    func loneReadWaitOncePerPage() throws {
        let file = try PatternFile(size: 1 << 20, name: "mock-lone")
        let tally = Tally()
        let configuration = Self.configuration {
            $0.pollerWaitsForLoneRead = true
            $0.stallTimeout = .milliseconds(1)
            $0.maximumStalls = 3
        }
        let (event, buffer, statistics) = try read(file, configuration: configuration) { call, intoBuffer in
            switch call.name {
            case .preadv2: return .fail(EAGAIN)
            case .pread where !intoBuffer:
                // The poller's one-byte wait returns at once, as when the file shrank (issue 12): waiting
                // there again would spin a CPU until the stall path gave up.
                tally.add("wait")
                return .value(0)
            default: return .passThrough
            }
        }
        #expect(try event.get() == 32 << 10)
        #expect(buffer.prefix(32 << 10) == file.expected(4096, 32 << 10))
        #expect(statistics.loneReadWaits == 1, "\(statistics)")
        #expect(tally["wait"] == 1)
        #expect(statistics.blockingReads == 1, "\(statistics)")
    }

    @Test("a read that submit finds ready for the reaper can no longer be cancelled, and gives one event")
    func readyAtSubmitIsNotCancelled() throws {
        let file = try PatternFile(size: 1 << 20, name: "mock-ready")
        let length = 32 << 10
        let buffer = ReadBuffer(length)
        let start = UInt(bitPattern: buffer.bytes.baseAddress)
        // RWF_NOWAIT unsupported (as on tmpfs before 5.x) and RWF_NOWAIT-only probing: nothing can tell
        // residency, so submit hands the read straight to the reaper, which reads it blocking.
        let mock = SyscallMock.install(forFileOf: file.fd) { call in
            call.name == .preadv2 && call.address == start ? .fail(EOPNOTSUPP) : .passThrough
        }
        defer { mock.remove() }
        let context = try IOContext(capacity: 4, configuration: Self.configuration())
        defer { context.close() }
        try context.submit(ReadRequest(descriptor: file.fd, offset: 4096, length: length, into: buffer.bytes, tag: 3))
        // It is queued for the reaper, not waiting for pages: too late to cancel (it used to be cancelled
        // here, and then queued a second time).
        #expect(!context.cancel(tag: 3))
        let events = try context.getEvents(minimum: 1, maximum: 2)
        #expect(events.count == 1)
        #expect(try events.first?.get() == length)
        #expect(buffer.prefix(length) == file.expected(4096, length))
        #expect(try context.getEvents(minimum: 0, maximum: 2).isEmpty)
        #expect(context.inFlight == 0)
        #expect(context.statistics.blockingReads == 1)
    }

    @Test("a probe's EIO sends the read to the blocking pread at once, and the pread's EIO is the event's error")
    func probeErrorSurfacesInEvent() throws {
        let file = try PatternFile(size: 1 << 20, name: "mock-eio")
        let (event, _, statistics) = try read(file, configuration: Self.configuration()) { call, intoBuffer in
            switch call.name {
            case .preadv2: return intoBuffer ? .fail(EAGAIN) : .fail(EIO)
            case .pread: return .fail(EIO)
            default: return .passThrough
            }
        }
        guard case .failure(let error) = event.result else {
            Issue.record("expected EIO, got \(event.result)")
            return
        }
        #expect(error.code == .readFailed, "\(error)")
        #expect(error.errno?.rawValue == EIO, "\(error)")
        #expect(error.description.contains("pread"), "\(error)")
        #expect(statistics.stalls == 0, "\(statistics)")
        #expect(statistics.blockingReads == 1, "\(statistics)")
    }
}
#endif
