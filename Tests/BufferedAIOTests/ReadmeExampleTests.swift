// Builds the README's async example as a separate package that depends on this one by path, and runs it,
// so the example a newcomer copies keeps compiling and working.
import Foundation
import Testing

@Suite("README example", .timeLimit(.minutes(10)))
struct ReadmeExampleTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func example() throws -> String {
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let start = try #require(readme.range(of: "<!-- example:async -->\n```swift\n"))
        let end = try #require(readme.range(of: "```\n<!-- end example -->", range: start.upperBound..<readme.endIndex))
        return String(readme[start.upperBound..<end.lowerBound])
    }

    static func run(_ arguments: [String], in directory: URL) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    @Test("the README's async example builds in a new package and streams a file")
    func exampleBuildsAndRuns() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baio-readme-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(
            at: directory.appendingPathComponent("Sources/Example"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let manifest = """
            // swift-tools-version:6.1
            import PackageDescription
            let package = Package(
                name: "Example",
                dependencies: [.package(path: "\(Self.root.path)")],
                targets: [.executableTarget(name: "Example", dependencies: [.product(name: "BufferedAIO", package: "main")])]
            )
            """
        // The dependency's identity is its folder name; CI clones into a folder of another name.
        let identity = Self.root.lastPathComponent
        try manifest.replacingOccurrences(of: "package: \"main\"", with: "package: \"\(identity)\"")
            .write(to: directory.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
        try Self.example().write(
            to: directory.appendingPathComponent("Sources/Example/Example.swift"), atomically: true, encoding: .utf8)

        let (buildStatus, buildOutput) = try Self.run(["swift", "build"], in: directory)
        #expect(buildStatus == 0, "the README example did not build:\n\(buildOutput)")
        guard buildStatus == 0 else { return }

        let input = directory.appendingPathComponent("input.bin")
        let bytes = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try Data(bytes).write(to: input)
        let (status, output) = try Self.run([".build/debug/Example", input.path], in: directory)
        #expect(status == 0, "the README example failed:\n\(output)")
        #expect(output.contains("first 64 bytes read"))
        #expect(output.contains("streamed 3000000 bytes"), "output was:\n\(output)")
    }
}
