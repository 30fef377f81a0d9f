// End-to-end tests of `baio residency`, run as the built binary; the oracle is mincore through the test's
// own mapping (PatternFile.residentPages), and for callers mincore lies to, the truth as root sees it.
import Foundation
import Glibc
import TestSupport
import Testing

@Suite(
    "baio residency against mincore", .serialized, .timeLimit(.minutes(3)),
    .enabled(if: Scratch.available, Scratch.skipReason))
struct ResidencyCommandTests {
    func baio() throws -> String { try #require(Baio.path, "baio was not built next to the tests") }

    func text(_ ended: Child.Ended) -> String { String(decoding: ended.stdout, as: UTF8.self) }

    /// The "N/M pages resident" counts of each report line.
    func counts(_ output: String) -> [(resident: Int, total: Int)] {
        output.split(separator: "\n").compactMap { line in
            guard let range = line.range(of: " pages resident") else { return nil }
            let fraction = line[..<range.lowerBound].split(separator: " ").last ?? ""
            let parts = fraction.split(separator: "/")
            guard parts.count == 2, let resident = Int(parts[0]), let total = Int(parts[1]) else { return nil }
            return (resident, total)
        }
    }

    @Test("--evict leaves 0 pages resident, as mincore confirms, and the map shows none")
    func evict() throws {
        let file = try PatternFile(size: 48 << 20, name: "res-evict")
        file.warm()
        let result = try Child.run([try baio(), "residency", "--evict", file.path])
        #expect(result.status == 0, "\(result)")
        #expect(file.residentPages() == 0)
        #expect(
            text(result)
                == "\(file.path): 0/12288 pages resident (0 B of 48.0 MiB, 0.0%)\n[\(String(repeating: ".", count: 64))]\n"
        )
    }

    @Test("--warm leaves every page resident, as mincore confirms, and the map shows all")
    func warm() throws {
        let file = try PatternFile(size: (40 << 20) + 100, name: "res-warm")
        file.evict()
        let result = try Child.run([try baio(), "residency", "--warm", file.path])
        #expect(result.status == 0, "\(result)")
        #expect(file.residentPages() == 10241)
        #expect(
            text(result)
                == "\(file.path): 10241/10241 pages resident (40.0 MiB of 40.0 MiB, 100.0%)\n[\(String(repeating: "#", count: 64))]\n",
            "\(text(result))")
    }

    @Test("a partly cached file: the count matches mincore and the map marks the cached part")
    func partial() throws {
        let file = try PatternFile(size: 64 << 20, name: "res-partial")
        file.evict()
        // Pages 0..<4096 (the first 16 MiB), read through a descriptor advised RANDOM: no readahead beyond.
        let reader = open(file.path, O_RDONLY | O_CLOEXEC)
        defer { close(reader) }
        posix_fadvise(reader, 0, 0, POSIX_FADV_RANDOM)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for offset in stride(from: 0, to: 16 << 20, by: 1 << 20) {
            _ = pread(reader, &buffer, buffer.count, off_t(offset))
        }
        let before = file.residentPages()
        let result = try Child.run([try baio(), "residency", "--width", "16", file.path])
        let after = file.residentPages()
        #expect(result.status == 0, "\(result)")
        let reported = try #require(counts(text(result)).first)
        #expect(reported.total == 16384)
        #expect(reported.resident == before || reported.resident == after, "mincore said \(before) then \(after)")
        let lines = text(result).split(separator: "\n")
        try #require(lines.count == 2)
        #expect(lines[1].count == 18)
        #expect(lines[1].hasPrefix("[####"), "the first quarter was read: \(lines[1])")
        #expect(before != 4096 || lines[1] == "[####............]", "\(lines[1])")
    }

    @Test("several files, a missing one and a directory: the others are reported and the status is 1")
    func missingMixedIn() throws {
        let first = try PatternFile(size: 3 * 4096, name: "res-first")
        let empty = try PatternFile(size: 0, name: "res-empty")
        first.warm()
        let directory = try Scratch.location.get()
        let result = try Child.run([
            try baio(), "residency", first.path, "/nonexistent/baio-res", directory, empty.path,
        ])
        #expect(result.status == 1, "\(result)")
        #expect(
            result.stderr
                == "baio: /nonexistent/baio-res: No such file or directory\nbaio: \(directory): Is a directory\n")
        #expect(
            text(result)
                == "\(first.path): 3/3 pages resident (12.0 KiB of 12.0 KiB, 100.0%)\n[###]\n\(empty.path): 0/0 pages resident (0 B of 0 B)\n"
        )
        let fifo = "\(directory)/baio-res-fifo-\(getpid())"
        try #require(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let special = try Child.run([try baio(), "residency", fifo])
        #expect(special.status == 1 && special.stderr.contains("not a regular file"), "\(special)")
    }

    @Test("a caller mincore would lie to is told residency is unknown, not shown a false map")
    func unprivileged() throws {
        try #require(geteuid() == 0, "needs root to drop to uid 65534")
        let file = try PatternFile(size: 16 << 20, name: "res-foreign", mode: 0o644)
        file.evict()
        let drop = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", try baio(), "residency"]
        let result = try Child.run(drop + [file.path])
        #expect(result.status == 0, "\(result)")
        #expect(
            text(result)
                == "\(file.path): residency unknown: the kernel reports every page resident to a caller that neither owns nor may write the file\n"
        )
        #expect(file.residentPages() == 0, "as root, mincore says the file is still evicted")
        let warmed = try Child.run(drop + ["--warm", file.path])
        #expect(warmed.status == 0, "\(warmed)")
        #expect(
            text(warmed).hasPrefix("\(file.path): warmed 16.0 MiB of 16.0 MiB (confirmed with RWF_NOWAIT reads)\n"),
            "\(text(warmed))")
        #expect(file.residentPages() == 4096, "--warm as a non-owner really cached the file")
        let evicted = try Child.run(drop + ["--evict", file.path])
        #expect(evicted.status == 0, "\(evicted)")
        #expect(file.residentPages() == 0, "--evict as a non-owner really dropped the file")
    }

    @Test("--json gives the same numbers, one object per file")
    func json() throws {
        let file = try PatternFile(size: 8 << 20, name: "res-json")
        file.evict()
        let result = try Child.run([try baio(), "residency", "--json", "--width", "8", "--warm", file.path])
        #expect(result.status == 0, "\(result)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout)) as? [String: Any])
        #expect(object["path"] as? String == file.path)
        #expect(object["pages"] as? Int == 2048)
        #expect(object["resident_pages"] as? Int == file.residentPages())
        #expect(object["resident_bytes"] as? Int == 8 << 20)
        #expect(object["map"] as? String == "########")
    }

    @Test("help with examples, and conflicting or missing operands refused")
    func helpAndValidation() throws {
        let help = try Child.run([try baio(), "residency", "--help"])
        let helpText = text(help)
        #expect(help.status == 0)
        #expect(helpText.contains("Examples:") && helpText.contains("baio residency --evict big.iso"), "\(helpText)")
        #expect(helpText.contains("--warm") && helpText.contains("--width"))
        let both = try Child.run([try baio(), "residency", "--evict", "--warm", "/dev/null"])
        #expect(both.status == 64 && both.stderr.contains("--evict and --warm cannot be used together"), "\(both)")
        let none = try Child.run([try baio(), "residency"])
        #expect(none.status == 64, "\(none)")
        let width = try Child.run([try baio(), "residency", "--width", "0", "/dev/null"])
        #expect(width.status == 64 && width.stderr.contains("--width must be at least 1"), "\(width)")
    }
}
