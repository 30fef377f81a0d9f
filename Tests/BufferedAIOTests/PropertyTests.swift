// Property-based tests (issue 13): random file sizes (page multiples and not), residency patterns (cached,
// evicted, every other page, half, holes), offsets and lengths around page and end-of-file boundaries, and
// every read mode, through the IOContext API and the async API. Every result must equal plain pread's and
// every read must finish within a bound. On a failure PropertyBased prints the shrunk counterexample and a
// seed for `.fixedSeed(...)`; the expectation's message spells the case out.
import BufferedAIO
import Glibc
import PropertyBased
import TestSupport
import Testing

/// A position relative to something the engine treats specially: a page boundary, the end of the file, or
/// anywhere. Shrinks toward "page 0, exactly".
struct Anchor: Sendable, CustomStringConvertible {
    enum Kind: Int, Sendable { case page, endOfFile, anywhere, huge }
    let kind: Kind
    /// A page number (page), or a fraction in 1/800ths of the file (anywhere).
    let amount: Int
    /// Bytes before or after the anchor.
    let delta: Int

    static func generator(huge: Bool) -> Generator<Anchor, some SendableSequenceType> {
        zip(Gen.int(in: 0...(huge ? 3 : 2)), Gen.int(in: 0...800), Gen.int(in: -5...5)).map { value in
            Anchor(kind: Kind(rawValue: value.0)!, amount: value.1, delta: value.2)
        }
    }

    /// The position this anchor names in a file of `size` bytes, never negative. `base` is where a length
    /// starts (so "end of file" means "to the end of the file").
    func resolve(size: Int, base: Int = 0) -> Int {
        switch kind {
        case .page: max(0, amount * 4096 + delta)
        case .endOfFile: max(0, size - base + delta)
        case .anywhere: max(0, size * amount / 800 + delta)
        // Lengths far beyond the file: up to just over MAX_RW_COUNT.
        case .huge: [1 << 30, 0x7fff_f000, 0x7fff_f000 + 4097][amount % 3]
        }
    }

    var description: String { "\(kind)(\(amount), \(delta >= 0 ? "+" : "")\(delta))" }
}

/// How much of the file is in the page cache when the read starts.
enum Residency: Int, Sendable, CaseIterable {
    case cached, evicted, everyOtherPage, firstHalf, holes
}

/// One generated read: a fresh file of `size` bytes in `residency`, read at `offset` for `length`.
struct ReadCase: CustomStringConvertible {
    let size: Int
    let residency: Residency
    let offset: Int
    let length: Int
    let mode: ReadMode

    init(pages: Int, delta: Int, residency: Int, offset: Anchor, length: Anchor, mode: Int) {
        size = max(0, pages * 4096 + delta)
        self.residency = Residency(rawValue: residency)!
        self.offset = offset.resolve(size: size)
        self.length = length.resolve(size: size, base: self.offset)
        self.mode = [ReadMode.buffered, .direct, .automatic][mode]
    }

    var description: String {
        "file of \(size) bytes (\(residency)), read \(length) bytes at \(offset), \(mode)"
    }

    /// Makes the file and puts it in the residency the case asks for, right before the read.
    func makeFile() throws -> PatternFile {
        // Holes: 12 KiB unwritten every 32 KiB from 8 KiB, and the last 5000 bytes.
        let holes =
            residency != .holes
            ? []
            : stride(from: 8192, to: size, by: 32768).map { $0..<min(size, $0 + 12288) }
                + [max(0, size - 5000)..<size]
        let file = try PatternFile(size: size, name: "property", holes: holes)
        switch residency {
        case .cached: file.warm()
        case .evicted, .holes: file.evict()
        case .everyOtherPage:
            file.evict()
            for page in stride(from: 0, to: (size + 4095) / 4096, by: 2) { file.warmPage(page) }
        case .firstHalf:
            file.evict()
            file.warm(0, size / 2)
        }
        return file
    }

    /// pread's answer: the bytes from `offset` up to `length` or the end of the file.
    func expected(_ file: PatternFile) -> [UInt8] {
        file.expected(offset, max(0, min(length, size - offset)))
    }
}

/// A buffer for a read of any length: an anonymous mapping, of which only what the file fills is touched.
final class MappedBuffer {
    let bytes: UnsafeMutableRawBufferPointer
    init(_ count: Int) {
        let base = mmap(nil, max(count, 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)!
        precondition(base != MAP_FAILED, "cannot map \(count) bytes")
        bytes = UnsafeMutableRawBufferPointer(start: base, count: count)
    }
    deinit { munmap(bytes.baseAddress, max(bytes.count, 1)) }
}

struct TimedOut: Error {}

@Suite(
    "Property: every read equals pread", .serialized, .enabled(if: Scratch.available, Scratch.skipReason),
    .timeLimit(.minutes(2)))
struct PropertyTests {
    /// Cases per API: enough to cover every residency and mode several times, short enough for CI.
    static let cases = 40
    /// A read that takes longer than this has hung (they take milliseconds).
    static let bound = Duration.seconds(30)

    @Test("IOContext: submit and getEvents return pread's bytes, within the bound")
    func contextEqualsPread() async throws {
        let context = try IOContext(capacity: 4)
        defer { context.close() }
        await propertyCheck(
            count: Self.cases, input: Gen.int(in: 0...384), Gen.int(in: -3...3), Gen.int(in: 0...4),
            Anchor.generator(huge: false), Anchor.generator(huge: true), Gen.int(in: 0...2)
        ) { pages, delta, residency, offset, length, mode in
            let read = ReadCase(
                pages: pages, delta: delta, residency: residency, offset: offset, length: length, mode: mode)
            let file = try read.makeFile()
            let handle = try BufferedFile(path: file.path)
            defer { handle.close() }
            let buffer = MappedBuffer(read.length)
            try context.submit(
                ReadRequest(
                    .file(handle), offset: Int64(read.offset), length: read.length, into: buffer.bytes, mode: read.mode)
            )
            let events = try context.getEvents(minimum: 1, maximum: 1, timeout: Self.bound)
            try #require(events.count == 1, "\(read): no event within \(Self.bound)")
            let count = try events[0].get()
            let same = Array(buffer.bytes.prefix(count)) == read.expected(file)
            #expect(same, "\(read): \(count) bytes, pread gave \(read.expected(file).count), or other bytes")
        }
    }

    @Test("async API: read(fromAbsoluteOffset:count:) returns pread's bytes, within the bound")
    func asyncEqualsPread() async throws {
        let engine = try ReadEngine()
        defer { engine.shutdown() }
        await propertyCheck(
            count: Self.cases, input: Gen.int(in: 0...384), Gen.int(in: -3...3), Gen.int(in: 0...4),
            Anchor.generator(huge: false), Anchor.generator(huge: true), Gen.int(in: 0...2)
        ) { pages, delta, residency, offset, length, mode in
            let read = ReadCase(
                pages: pages, delta: delta, residency: residency, offset: offset, length: length, mode: mode)
            let file = try read.makeFile()
            let handle = try BufferedFile(path: file.path, engine: engine)
            defer { handle.close() }
            let bytes = try await withThrowingTaskGroup(of: [UInt8].self) { group in
                group.addTask {
                    try await handle.read(
                        fromAbsoluteOffset: Int64(read.offset), count: read.length,
                        options: ReadOptions(mode: read.mode))
                }
                group.addTask {
                    try await Task.sleep(for: Self.bound)
                    throw TimedOut()
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
            let same = bytes == read.expected(file)
            #expect(same, "\(read): \(bytes.count) bytes, pread gave \(read.expected(file).count), or other bytes")
        }
    }
}
