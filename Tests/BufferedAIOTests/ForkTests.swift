// What a libaio program sees after fork under libbaio: each child reads right through contexts of its own,
// from two threads at once, although the thread that forked had filled Swift's cached thread ids (a Swift
// runtime bug that libbaio's fork handler, Sources/CBAIOCompat/fork_tid.c, works around). Never skipped:
// with libbaio built, it runs on any file system, and without the handler 7 to 15 of the 20 children trap
// or hang (docs/libaio-dropin.md, "A Swift runtime bug in forked children").
import Foundation
import Glibc
import TestSupport
import Testing

@Suite("Fork under libbaio", .serialized, .timeLimit(.minutes(5)))
struct ForkTests {
    static let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Compat/fork_reads.c").path

    @Test(
        "a libaio program that forks reads right in every child, from two threads at once, and the parent still reads")
    func childrenReadThroughLibbaio() throws {
        let library = try #require(Libbaio.library, "libBAIOCompat.so was not built next to the tests")
        // Not Scratch.location: the bug needs no ext4, and this test must not be skipped where there is none.
        let directory = Scratch.directory ?? "/tmp"
        let program = "\(directory)/fork_reads-\(getpid())"
        defer { unlink(program) }
        let compiled = try Libbaio.run("cc -O1 -Wall -o '\(program)' '\(Self.source)' -laio -lpthread", in: directory)
        try #require(compiled.status == 0, "cc failed: \(compiled.stderr)")

        let run = try Libbaio.run(
            "LD_PRELOAD='\(library)' BAIO_STATS=stderr '\(program)' '\(directory)' 20", in: directory)
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("children: 20 of 20 clean"), "\(run.stdout)")
        #expect(run.stdout.contains("parent after the forks: reads right"), "\(run.stdout)")
        // The handler found the caches it clears (it says so under BAIO_STATS when it does not).
        #expect(!run.stderr.contains("fork workaround inactive"), "\(run.stderr)")
    }
}
