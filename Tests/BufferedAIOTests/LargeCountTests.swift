// Counts larger than the file in the async API (issue 13): `read(fromAbsoluteOffset:count: Int.max)` aborted
// the process trying to allocate 8 EiB. It must return what pread returns for the same count (the bytes to
// end of file, or EINVAL where offset + count overflows), allocating only what the file holds.
import BufferedAIO
import Glibc
import TestSupport
import Testing

@Suite(
    "Async API: counts beyond the file", .serialized, .enabled(if: Scratch.available, Scratch.skipReason),
    .timeLimit(.minutes(2)))
struct LargeCountTests {
    /// pread with the same count: the bytes, or the errno. The buffer is an anonymous mapping as long as
    /// the count (only the pages the file's bytes land in are touched), since the kernel checks the whole
    /// range is user memory before it reads. A count beyond 64 GiB (Int.max, 1 TiB) is given as 64 GiB,
    /// which the kernel clamps to MAX_RW_COUNT all the same (64 GiB, not more: ThreadSanitizer leaves no
    /// room for a 64 TiB mapping), unless offset + count overflows: the kernel refuses that with EINVAL
    /// before anything else (rw_verify_area; `kernelRefusesOverflow` shows it).
    static func pread(_ file: PatternFile, offset: Int64, count: Int) -> Result<[UInt8], Errno> {
        if offset.addingReportingOverflow(Int64(count)).overflow { return .failure(Errno(rawValue: EINVAL)) }
        let length = max(1, min(count, 1 << 36))
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        guard let base = mmap(nil, length, PROT_READ | PROT_WRITE, flags, -1, 0), base != MAP_FAILED else {
            return .failure(Errno(rawValue: errno))
        }
        defer { munmap(base, length) }
        let n = Glibc.pread(file.fd, base, min(count, length), off_t(offset))
        return n < 0 ? .failure(Errno(rawValue: errno)) : .success(Array(UnsafeRawBufferPointer(start: base, count: n)))
    }

    @Test("the oracle's rule: the kernel refuses an offset + count that overflows with EINVAL")
    func kernelRefusesOverflow() throws {
        let file = try PatternFile(size: 40, name: "overflow-rule")
        var byte: UInt8 = 0
        #expect(Glibc.pread(file.fd, &byte, 100, off_t(Int64.max - 10)) == -1 && errno == EINVAL)
    }

    static func describe(_ result: Result<[UInt8], Errno>) -> String {
        switch result {
        case .success(let bytes): "\(bytes.count) bytes"
        case .failure(let errno): "\(errno)"
        }
    }

    static let counts = [Int.max, 1 << 40, 4 << 30, Int(Int32.max), 3 << 20]

    @Test(
        "count up to Int.max: pread's bytes or pread's errno, in every mode, cached and evicted",
        arguments: [ReadMode.buffered, .direct, .automatic])
    func hugeCounts(_ mode: ReadMode) async throws {
        let engine = try ReadEngine()
        defer { engine.shutdown() }
        for size in [40, 5000, (1 << 20) + 123] {
            let file = try PatternFile(size: size, name: "huge-count-\(size)")
            try await BufferedFile.withFile(at: file.path, engine: engine) { handle in
                for evicted in [true, false] {
                    for offset in [0, 1, Int64(size / 2), Int64(size), Int64(size) + 4096] {
                        for count in Self.counts {
                            if evicted { file.evict() } else { file.warm() }
                            let expected = Self.pread(file, offset: offset, count: count)
                            let what = "size \(size) offset \(offset) count \(count) \(mode) evicted \(evicted)"
                            // Bools, not arrays: a failure would print megabytes element by element.
                            do {
                                let bytes = try await handle.read(
                                    fromAbsoluteOffset: offset, count: count, options: ReadOptions(mode: mode))
                                let same = expected == .success(bytes)
                                #expect(same, "\(what): \(bytes.count) bytes, pread: \(Self.describe(expected))")
                            } catch let error as BufferedAIOError {
                                let same = expected == .failure(error.errno ?? Errno(rawValue: 0))
                                #expect(same, "\(what): \(error), pread: \(Self.describe(expected))")
                            }
                        }
                    }
                }
            }
        }
    }

    @Test("chunks with a chunk length beyond the file yield the file once")
    func hugeChunks() async throws {
        let file = try PatternFile(size: (2 << 20) + 77, name: "huge-chunk")
        let engine = try ReadEngine()
        defer { engine.shutdown() }
        try await BufferedFile.withFile(at: file.path, engine: engine) { handle in
            for length in [Int.max, 1 << 40, file.size, file.size + 1] {
                file.evict()
                var chunks: [[UInt8]] = []
                for try await chunk in handle.chunks(chunkLength: length) { chunks.append(chunk) }
                #expect(chunks.count == 1, "chunk length \(length)")
                #expect(chunks.first == file.expected(0, file.size), "chunk length \(length)")
                var ranged: [UInt8] = []
                for try await chunk in handle.chunks(in: 1000..<Int64.max, chunkLength: length) { ranged += chunk }
                #expect(ranged == file.expected(1000, file.size - 1000), "ranged, chunk length \(length)")
            }
        }
    }

    @Test("read(into:) a buffer larger than the file returns the file's bytes")
    func intoLargeBuffer() async throws {
        let file = try PatternFile(size: 100_000, name: "into-large")
        let engine = try ReadEngine()
        defer { engine.shutdown() }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        try await BufferedFile.withFile(at: file.path, engine: engine) { handle in
            for mode in [ReadMode.buffered, .direct, .automatic] {
                file.evict()
                let count = try await handle.read(
                    fromAbsoluteOffset: 10, into: buffer, options: ReadOptions(mode: mode))
                #expect(count == file.size - 10, "\(mode)")
                #expect(Array(buffer.prefix(count)) == file.expected(10, file.size - 10), "\(mode)")
            }
        }
    }
}
