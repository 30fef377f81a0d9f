// The property "every read equals pread" as an unprivileged user (issue 13). A reader that neither owns
// nor can write a file gets lies from mincore, so the engine probes residency with RWF_NOWAIT instead: a
// path the root-run property tests never take. The front end is `baio dd` (SequentialReader over an
// IOContext) run as uid 65534 with byte-exact skip= and count=; the oracle is pread of the same range.
import Glibc
import PropertyBased
import TestSupport
import Testing

@Suite("Property: unprivileged baio dd equals pread", .serialized, .timeLimit(.minutes(2)))
struct UnprivilegedPropertyTests {
    /// Each case starts a process; 30 of them take a few seconds.
    static let cases = 30

    @Test("uid 65534: baio dd iflag=skip_bytes,count_bytes gives pread's bytes for random files and ranges")
    func ddEqualsPread() async throws {
        try #require(geteuid() == 0, "needs root to drop to uid 65534")
        try #require(Scratch.available, Scratch.skipReason)
        let baio = try #require(Baio.path)
        await propertyCheck(
            count: Self.cases, input: Gen.int(in: 0...600), Gen.int(in: -3...3), Gen.int(in: 0...3),
            Gen.int(in: 0...800), Gen.int(in: 0...800), Gen.int(in: 0...2)
        ) { pages, delta, residency, skipPart, countPart, blockKind in
            let size = max(0, pages * 4096 + delta)
            // skip= and count= as 800ths of the file, snapped to a page boundary one time in two.
            var skip = size * skipPart / 800
            if skipPart % 2 == 0 { skip -= skip % 4096 }
            let count = max(0, (size - skip) * countPart / 800 + 1)
            let blockSize = [4096, 1000, 1 << 20][blockKind]
            let file = try PatternFile(size: size, name: "unprivileged-property", mode: 0o644)
            switch residency {
            case 0: file.warm()
            case 1: file.evict()
            case 2:
                file.evict()
                for page in stride(from: 0, to: (size + 4095) / 4096, by: 2) { file.warmPage(page) }
            default:
                file.evict()
                file.warm(0, size / 2)
            }
            let what = "file of \(size) bytes, residency \(residency), skip=\(skip) count=\(count) bs=\(blockSize)"
            let ended = try Child.run([
                "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", baio, "dd", "if=\(file.path)",
                "bs=\(blockSize)", "skip=\(skip)", "count=\(count)", "iflag=skip_bytes,count_bytes", "status=none",
            ])
            #expect(ended.status == 0, "\(what): \(ended)")
            let same = ended.stdout == file.expected(skip, max(0, min(count, size - skip)))
            #expect(same, "\(what): \(ended.stdout.count) bytes differ from pread's")
        }
    }
}
