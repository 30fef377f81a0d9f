// Tests of libbaio's kernel contexts, one behaviour each: Tests/Compat/kernel_context.c runs a mode against
// the real libaio and kernel (the oracle) and again with libbaio preloaded; the outputs must be the same,
// and libbaio's statistics must show that its engine held reads (the file is evicted before them).
import Foundation
import Glibc
import TestSupport
import Testing

enum KernelContextProgram {
    static let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Compat/kernel_context.c").path

    /// The program, compiled once per test process into the scratch directory.
    static let binary: Result<String, SkipReason> = {
        guard let directory = Scratch.directory else { return .failure(SkipReason("no ext4 scratch directory")) }
        let program = "\(directory)/kernel_context-\(getpid())"
        let compiled = try? Libbaio.run("cc -O1 -Wall -o '\(program)' '\(source)' -laio", in: directory)
        guard compiled?.status == 0 else { return .failure(SkipReason("cc failed: \(compiled?.stderr ?? "")")) }
        chmod(program, 0o755)
        return .success(program)
    }()

    struct Runs {
        let plain: String
        let preloaded: String
        let report: String
    }

    /// Runs `mode` on `file` plainly and with libbaio preloaded (as `user`, if given, through setpriv).
    static func run(_ mode: String, file: String, user: String? = nil, extra: String = "") throws -> Runs {
        let library = try #require(Libbaio.library, "libBAIOCompat.so was not built next to the tests")
        let program = try binary.get()
        let directory = try Scratch.location.get()
        let stats = "\(directory)/kernel-context-stats-\(getpid())-\(mode).txt"
        unlink(stats)
        // Created here and opened to everyone, so an unprivileged run can append to it.
        close(open(stats, O_WRONLY | O_CREAT | O_TRUNC, 0o666))
        chmod(stats, 0o666)
        defer { unlink(stats) }
        let drop = user.map { "/usr/bin/setpriv --reuid=\($0) --regid=\($0) --clear-groups " } ?? ""
        let command = "\(drop)timeout 120 '\(program)' \(mode) '\(file)' '\(directory)' \(extra)"
        let plain = try Libbaio.run(command, in: directory)
        // BAIO_PROBE_LIMIT=0: no RWF_NOWAIT probe at submit, so every read of the evicted file is held by the
        // engine (a probe's miss starts the read, and on this VM it often ends inside the probe).
        let preloaded = try Libbaio.run(
            "LD_PRELOAD='\(library)' BAIO_STATS='\(stats)' BAIO_PROBE_LIMIT=0 \(command)", in: directory)
        #expect(plain.status == 0, "\(mode) against libaio failed: \(plain.stderr)")
        #expect(preloaded.status == 0, "\(mode) with libbaio failed: \(preloaded.stderr)")
        #expect(preloaded.stderr.isEmpty, "libbaio printed: \(preloaded.stderr)")
        return Runs(
            plain: plain.stdout, preloaded: preloaded.stdout,
            report: (try? String(contentsOfFile: stats, encoding: .utf8)) ?? "")
    }

    /// The engine's line of a BAIO_STATS report, as `name=value` pairs.
    static func engine(_ report: String) -> [String: Int] {
        guard let line = report.split(separator: "\n").last(where: { $0.contains(" engine at ") }) else { return [:] }
        var values: [String: Int] = [:]
        for field in line.split(separator: " ") {
            let parts = field.split(separator: "=")
            if parts.count == 2, let value = Int(parts[1]) { values[String(parts[0])] = value }
        }
        return values
    }
}

@Suite(
    "libbaio contexts are the kernel's", .serialized, .enabled(if: Scratch.available, Scratch.skipReason),
    .timeLimit(.minutes(3)))
struct LibbaioKernelContextTests {
    /// Each mode's output must equal the kernel's, line for line, and end with "done".
    private func expectSame(_ runs: KernelContextProgram.Runs, _ mode: String) {
        #expect(runs.plain.hasSuffix("done\n"), "\(mode) against libaio: \(runs.plain)")
        #expect(!runs.plain.contains("NO"), "\(mode) against libaio: \(runs.plain)")
        let plain = runs.plain.split(separator: "\n", omittingEmptySubsequences: false)
        let preloaded = runs.preloaded.split(separator: "\n", omittingEmptySubsequences: false)
        for (index, (expected, actual)) in zip(plain, preloaded).enumerated() where expected != actual {
            Issue.record("\(mode), line \(index + 1): the kernel said '\(expected)', libbaio '\(actual)'")
        }
        #expect(plain.count == preloaded.count, "\(mode): \(runs.preloaded)")
    }

    private func engineHeldReads(_ runs: KernelContextProgram.Runs, _ mode: String) {
        #expect(Libbaio.total("engineReads", in: runs.report) >= 1, "\(mode): no read was held: \(runs.report)")
        #expect(Libbaio.total("lost", in: runs.report) == 0, "\(mode): \(runs.report)")
    }

    @Test(
        "events held by the engine reach the kernel's ring, in the modes where libbaio used to differ",
        arguments: ["eventfd-order", "raw-syscalls", "mremap", "signal", "after-submit", "partial", "one-slot"])
    func heldReads(mode: String) throws {
        let file = try PatternFile(size: 16 << 20, name: "kernel-context")
        let runs = try KernelContextProgram.run(mode, file: file.path)
        expectSame(runs, mode)
        engineHeldReads(runs, mode)
    }

    @Test("a buffered write's event is visible at min_nr 0 as soon as io_submit returns")
    func writeVisible() throws {
        let file = try PatternFile(size: 1 << 20, name: "kernel-context-write")
        expectSame(try KernelContextProgram.run("write-visible", file: file.path), "write-visible")
    }

    @Test("IO_CMD_PREADV with no segments completes with res 0")
    func emptyVector() throws {
        let file = try PatternFile(size: 1 << 20, name: "kernel-context-empty")
        expectSame(try KernelContextProgram.run("empty-vector", file: file.path), "empty-vector")
    }

    @Test("20,000 contexts cost libbaio no thread and no descriptor, and the first and last still read")
    func manyContexts() throws {
        let file = try PatternFile(size: 1 << 20, name: "kernel-context-many")
        let runs = try KernelContextProgram.run("contexts", file: file.path, extra: "20000")
        expectSame(runs, "contexts")
        #expect(runs.preloaded.contains("io_setup(1) x 20000: 20000 made"))
        #expect(runs.preloaded.contains("descriptors added: 0\nthreads added: 0\n"))
    }

    @Test(
        "reads crossing end of file finish short and without a stall, as root and as an unprivileged user",
        arguments: [nil, "65534"] as [String?])
    func endOfFile(user: String?) throws {
        if user != nil { try #require(geteuid() == 0, "needs root to drop to uid 65534") }
        // Not a page multiple, owned by root and 0644: mincore lies to uid 65534, RWF_NOWAIT does not.
        let file = try PatternFile(size: (16 << 20) - 1234, name: "kernel-context-eof")
        let runs = try KernelContextProgram.run("eof", file: file.path, user: user)
        expectSame(runs, "eof")
        engineHeldReads(runs, "eof")
        let engine = KernelContextProgram.engine(runs.report)
        // No engine line: the engine never had to start, so nothing stalled either.
        #expect(engine["stalls", default: 0] == 0, "\(runs.report)")
        #expect(engine["blockingReads", default: 0] == 0, "\(runs.report)")
    }
}
