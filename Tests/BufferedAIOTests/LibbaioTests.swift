// Tests of libbaio (libBAIOCompat.so) with a C program written against libaio.h only: compiled here with the
// system compiler, run against the real libaio and then with libbaio preloaded, on an evicted ext4 file.
import Foundation
import Glibc
import TestSupport
import Testing

enum Libbaio {
    /// libBAIOCompat.so, built next to this test bundle.
    static var library: String? { builtProduct("libBAIOCompat.so") }

    static let conformanceSource = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Compat/libaio_conformance.c").path

    /// Runs `script` in sh with its output in files; returns (status, stdout, stderr).
    static func run(_ script: String, in directory: String) throws -> (status: Int32, stdout: String, stderr: String) {
        let out = "\(directory)/out-\(UInt32.random(in: 0...UInt32.max)).txt"
        let err = out + ".err"
        defer {
            unlink(out)
            unlink(err)
        }
        let status = Scratch.shell("\(script) > '\(out)' 2> '\(err)'")
        return (
            status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
            (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        )
    }

    /// The sum of `name=value` over the lines of a BAIO_STATS file.
    static func total(_ name: String, in report: String) -> Int {
        report.split(separator: "\n").reduce(0) { sum, line in
            guard let field = line.split(separator: " ").first(where: { $0.hasPrefix("\(name)=") }) else { return sum }
            return sum + (Int(field.dropFirst(name.count + 1)) ?? 0)
        }
    }
}

@Suite(
    "libbaio, the libaio drop-in", .serialized, .enabled(if: Scratch.available, Scratch.skipReason),
    .timeLimit(.minutes(3)))
struct LibbaioTests {
    @Test(
        "a libaio program gives the same events, data and errors with libbaio preloaded, and the engine served its reads"
    )
    func conformance() throws {
        let library = try #require(Libbaio.library, "libBAIOCompat.so was not built next to the tests")
        let directory = try Scratch.location.get()
        let program = "\(directory)/libaio_conformance-\(getpid())"
        defer { unlink(program) }
        let compiled = try Libbaio.run(
            "cc -O1 -Wall -o '\(program)' '\(Libbaio.conformanceSource)' -laio", in: directory)
        try #require(compiled.status == 0, "cc failed: \(compiled.stderr)")

        let file = try PatternFile(size: 16 << 20, name: "libbaio")
        let stats = "\(directory)/libbaio-stats-\(getpid()).txt"
        unlink(stats)
        defer { unlink(stats) }

        // The program evicts the file itself before its uncached sections.
        let command = "timeout 120 '\(program)' '\(file.path)' '\(directory)'"
        let plain = try Libbaio.run(command, in: directory)
        #expect(plain.status == 0, "real libaio run failed: \(plain.stderr)")
        let preloaded = try Libbaio.run("LD_PRELOAD='\(library)' BAIO_STATS='\(stats)' \(command)", in: directory)
        #expect(preloaded.status == 0, "libbaio run failed: \(preloaded.stderr)")

        #expect(plain.stdout.hasSuffix("done\n"), "\(plain.stdout)")
        #expect(!plain.stdout.contains(" NO") && !plain.stdout.contains("WRONG"), "\(plain.stdout)")
        let plainLines = plain.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let preloadedLines = preloaded.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        for (index, (expected, actual)) in zip(plainLines, preloadedLines).enumerated() where expected != actual {
            Issue.record("line \(index + 1): libaio printed '\(expected)', libbaio printed '\(actual)'")
        }
        #expect(plainLines.count == preloadedLines.count)
        // Silent: the statistics went to the file, and nothing else may be printed.
        #expect(preloaded.stderr.isEmpty, "libbaio printed: \(preloaded.stderr)")

        // The reads really went through the engine, and some of them found their pages missing.
        let report = (try? String(contentsOfFile: stats, encoding: .utf8)) ?? ""
        #expect(Libbaio.total("engineReads", in: report) >= 150, "\(report)")
        #expect(Libbaio.total("pagesMissing", in: report) > 0, "\(report)")
        #expect(Libbaio.total("kernelIocbs", in: report) >= 3, "the write, fsync and O_DIRECT read go to the kernel")
    }

    @Test("loading libbaio starts no thread and prints nothing")
    func quietAtLoad() throws {
        let library = try #require(Libbaio.library, "libBAIOCompat.so was not built next to the tests")
        let directory = try Scratch.location.get()
        let result = try Libbaio.run("LD_PRELOAD='\(library)' /bin/sh -c 'ls /proc/$$/task | wc -l'", in: directory)
        #expect(result.status == 0)
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        #expect(result.stderr.isEmpty)
    }
}
