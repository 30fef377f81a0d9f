// End-to-end tests of `baio demo`, `baio bench` and the root command, run as the built binary.
import Foundation
import TestSupport
import Testing

enum Baio {
    /// The `baio` executable next to this test bundle (in the same build directory).
    static var path: String? { builtProduct("baio") }

    static func run(
        _ arguments: [String], environment: [String: String]? = nil
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        try run(
            executable: try #require(path, "baio was not built next to the tests"), arguments, environment: environment)
    }

    /// Runs any program to completion and returns its status and output.
    static func run(
        executable: String, _ arguments: [String], environment: [String: String]? = nil
    ) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (
            process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self)
        )
    }
}

@Suite("baio demo and root", .serialized, .timeLimit(.minutes(3)))
struct DemoCommandTests {
    @Test("baio demo writes, evicts and reads back a sample file, verified against pread")
    func demo() throws {
        let result = try Baio.run(["demo", "--size", "32M", "--block-size", "256K"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("verified: yes"))
        #expect(
            result.stdout.contains("pages resident before: 0/8192"), "the sample was not evicted:\n\(result.stdout)")
        #expect(result.stdout.contains("pages resident after: "), "\(result.stdout)")
    }

    @Test("baio demo in direct mode verifies too and reports direct reads")
    func demoDirect() throws {
        let result = try Baio.run(["demo", "--size", "8M", "--mode", "direct"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("verified: yes"))
        #expect(result.stdout.contains("directReads=8"), "\(result.stdout)")
    }

    @Test("bad demo options are refused with a message that says what to do")
    func demoValidation() throws {
        let badMode = try Baio.run(["demo", "--mode", "sideways"])
        #expect(badMode.status != 0)
        #expect(badMode.stderr.contains("--mode must be buffered, direct or automatic"))
        let badSize = try Baio.run(["demo", "--size", "lots"])
        #expect(badSize.status != 0)
        #expect(badSize.stderr.contains("is not a size"))
        let missing = try Baio.run(["demo", "--file", "/nonexistent/baio-test"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("/nonexistent/baio-test"))
    }

    @Test("baio --version and --help describe the tool")
    func rootHelp() throws {
        let version = try Baio.run(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0.1.0")
        let help = try Baio.run(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("demo"))
        #expect(help.stdout.contains("bench"))
    }
}
