// Injected read errors (issue 13): pages of an ext4 file that fail to read with EIO, as bad sectors would
// (TestSupport/FaultyDisk.swift). Every front end must report what a plain pread reports on the same file:
// EIO for a read that starts on a bad page, a short count of good bytes for one that meets the bad pages
// later, the whole range for one that misses them; and nothing may hang or leak.
@_spi(Experiments) import BufferedAIO
import Glibc
import TestSupport
import Testing

/// A read and what the kernel's pread must agree with.
struct FaultyRead: CustomStringConvertible, Sendable {
    let name: String
    let offset: Int
    let count: Int
    var description: String { "\(name) at \(offset)+\(count)" }

    /// Reads that start before, on and after the bad pages, short and long.
    static let all: [FaultyRead] = [
        FaultyRead(name: "first.bin", offset: 0, count: 3 * 4096),  // starts on a bad page: EIO
        FaultyRead(name: "first.bin", offset: 31 * 4096 + 100, count: 8192),  // the last bad page: EIO
        FaultyRead(name: "first.bin", offset: 32 * 4096, count: 64 * 4096),  // after them: all of it
        FaultyRead(name: "middle.bin", offset: 0, count: 96 * 4096),  // meets them at page 32: short
        FaultyRead(name: "middle.bin", offset: 4096 + 7, count: 1 << 20),  // short, unaligned start
        FaultyRead(name: "middle.bin", offset: 40 * 4096, count: 4096),  // inside: EIO
        FaultyRead(name: "middle.bin", offset: 64 * 4096, count: 1 << 20),  // after, to EOF
        FaultyRead(name: "late.bin", offset: 0, count: 4 << 20),  // short deep inside a large read
    ]
}

extension FaultyFile {
    /// Why `outcome` is not what a read of `offset`+`count` may give on this file, or nil if it is. A read
    /// that starts on a bad page fails with EIO; one that ends before them or starts after them returns the
    /// file's bytes; one that meets them after its first page returns a short count of the file's bytes,
    /// at least one byte and ending at or before the first bad page. (The kernel's exact count depends on
    /// which readahead failed, so the count is bounded rather than fixed.)
    func problem(with outcome: ReadOutcome, offset: Int, count: Int) -> String? {
        let end = Swift.min(offset + count, size)
        let expected: String
        switch outcome {
        case .failed(let code):
            if (badOffset..<badEnd).contains(offset) { return code == EIO ? nil : "errno \(code), expected EIO" }
            expected = "data"
        case .read(let bytes):
            if (badOffset..<badEnd).contains(offset) { return "\(bytes.count) bytes, expected EIO" }
            if bytes != originalBytes(offset, bytes.count) { return "\(bytes.count) bytes that differ from the file's" }
            if offset >= badEnd || end <= badOffset {
                return bytes.count == Swift.max(end - offset, 0)
                    ? nil : "\(bytes.count) bytes, expected \(end - offset)"
            }
            if bytes.count > 0 && bytes.count <= badOffset - offset { return nil }
            expected = "a short count in 1...\(badOffset - offset)"
        }
        return "\(outcome), expected \(expected)"
    }
}

@Suite(
    "Injected read errors", .serialized, .enabled(if: FaultyDisk.available, FaultyDisk.skipReason),
    .timeLimit(.minutes(3)))
struct InjectedErrorTests {
    /// The oracle's answer must itself follow the rules (so the faulty disk does what it claims), and the
    /// engine's answer likewise; where the answer is exact (an error, or all of the range) they are equal.
    func check(
        _ engine: ReadOutcome, _ read: FaultyRead, _ path: String, sourceLocation: SourceLocation = #_sourceLocation
    )
        throws
    {
        let file = try FaultyDisk.file(read.name)
        let kernel = file.pread(read.offset, read.count)
        #expect(
            file.problem(with: kernel, offset: read.offset, count: read.count) == nil, "pread of \(read)",
            sourceLocation: sourceLocation)
        if let problem = file.problem(with: engine, offset: read.offset, count: read.count) {
            Issue.record("\(path), \(read): \(problem); pread gave \(kernel)", sourceLocation: sourceLocation)
        }
        if case .failed = kernel { #expect(engine == kernel, "\(path), \(read)", sourceLocation: sourceLocation) }
    }

    @Test("IOContext: EIO, short counts and whole ranges as pread gives them; no descriptor left behind")
    func context() throws {
        for read in FaultyRead.all {
            let file = try FaultyDisk.file(read.name)
            file.evict()
            let fd = open(file.path, O_RDONLY | O_CLOEXEC)
            let context = try IOContext(capacity: 4)
            let buffer = ReadBuffer(read.count, alignment: 4096)
            try context.submit(
                ReadRequest(descriptor: fd, offset: Int64(read.offset), length: read.count, into: buffer.bytes, tag: 1))
            let event = try #require(try collect(context, 1)[1], "no event for \(read)")
            context.close()
            close(fd)
            let outcome: ReadOutcome =
                switch event.result {
                case .success(let n): .read(buffer.prefix(n))
                case .failure(let error): .failed(error.errno?.rawValue ?? -1)
                }
            try check(outcome, read, "IOContext")
            #expect(descriptors(pointingAt: file.path) == 0, "a descriptor of \(file.path) is still open")
        }
    }

    @Test("the poller's stall path: pages that never arrive are re-read ahead, then read blocking, and fail with EIO")
    func stallPath() throws {
        // No reaper or poller waits in a read here, so only the stall path can finish the read.
        var configuration = EngineConfiguration()
        configuration.reaperWaitsInRead = false
        configuration.pollerWaitsForLoneRead = false
        configuration.stallTimeout = .milliseconds(20)
        for read in [FaultyRead.all[0], FaultyRead.all[3]] {
            let file = try FaultyDisk.file(read.name)
            file.evict()
            let fd = open(file.path, O_RDONLY | O_CLOEXEC)
            defer { close(fd) }
            let context = try IOContext(capacity: 1, configuration: configuration)
            defer { context.close() }
            let buffer = ReadBuffer(read.count, alignment: 4096)
            try context.submit(
                ReadRequest(descriptor: fd, offset: Int64(read.offset), length: read.count, into: buffer.bytes, tag: 1))
            let event = try #require(try collect(context, 1)[1], "no event for \(read)")
            let outcome: ReadOutcome =
                switch event.result {
                case .success(let n): .read(buffer.prefix(n))
                case .failure(let error): .failed(error.errno?.rawValue ?? -1)
                }
            try check(outcome, read, "IOContext, stall path")
            let stats = context.statistics
            #expect(stats.stalls >= configuration.maximumStalls, "\(read): \(stats)")
            #expect(stats.blockingReads >= 1, "\(read): \(stats)")
        }
    }

    @Test("async API: read throws BufferedAIOError with EIO naming the file, or returns pread's short count")
    func asyncAPI() async throws {
        let engine = try ReadEngine()
        defer { engine.shutdown() }
        for read in FaultyRead.all {
            let file = try FaultyDisk.file(read.name)
            file.evict()
            let outcome: ReadOutcome
            do {
                let handle = try BufferedFile(path: file.path, engine: engine)
                defer { handle.close() }
                outcome = .read(try await handle.read(fromAbsoluteOffset: Int64(read.offset), count: read.count))
            } catch let error as BufferedAIOError {
                #expect(error.path == file.path && error.code == .readFailed, "\(error)")
                outcome = .failed(error.errno?.rawValue ?? -1)
            }
            try check(outcome, read, "async API")
            #expect(descriptors(pointingAt: file.path) == 0, "a descriptor of \(file.path) is still open")
        }
    }

    @Test("libbaio: the io_event carries -EIO or pread's short count, as the real libaio's does")
    func libbaio() throws {
        let library = try #require(Libbaio.library, "libBAIOCompat.so was not built next to the tests")
        let directory = try FaultyDisk.workDirectory()
        let program = "\(directory)-eio-libaio"
        let compiled = try Libbaio.run(
            "cc -O1 -Wall -o '\(program)' '\(FaultyDisk.compat)/eio_libaio.c' -laio", in: "/")
        try #require(compiled.status == 0, "cc failed: \(compiled.stderr)")
        defer { unlink(program) }
        let output = "\(directory)-eio-libaio.out"
        let stats = "\(directory)-eio-libaio.stats"
        defer {
            unlink(output)
            unlink(stats)
        }
        for read in FaultyRead.all {
            let file = try FaultyDisk.file(read.name)
            var outcomes: [ReadOutcome] = []
            for preload in ["", "LD_PRELOAD='\(library)' BAIO_STATS='\(stats)' "] {
                unlink(output)
                unlink(stats)
                let run = try Libbaio.run(
                    "\(preload)timeout 120 '\(program)' '\(file.path)' \(read.offset) \(read.count) '\(output)'",
                    in: "/")
                #expect(run.status == 0 && run.stderr.isEmpty, "\(preload)\(read): \(run)")
                let res = try #require(Int(run.stdout.trimmingNewline.dropFirst(4)), "\(preload)\(read): \(run.stdout)")
                outcomes.append(res < 0 ? .failed(Int32(-res)) : .read(file.bytes(of: output)))
            }
            // A failing read went through the engine: libbaio held it for pages that never arrived. (A clean
            // one may complete inside its RWF_NOWAIT probe, docs/architecture.md, and never reach the engine.)
            if case .failed = outcomes[0] {
                let report = FaultyDisk.readText(stats)
                #expect(
                    Libbaio.total("engineReads", in: report) == 1 && Libbaio.total("stalls", in: report) > 0,
                    "\(read): \(report)")
            }
            // The real libaio's buffered read runs inside io_submit: it is the kernel's own answer.
            #expect(file.problem(with: outcomes[0], offset: read.offset, count: read.count) == nil, "libaio, \(read)")
            try check(outcomes[1], read, "libbaio")
            if case .failed = outcomes[0] { #expect(outcomes[1] == outcomes[0], "libbaio, \(read)") }
        }
    }
}
