import BufferedAIOHummingbird
// A file changed while a request is served: the response is one version of the file or an error, never a
// mix or a silently short body.
import BufferedAIONIO
import Foundation
import Glibc
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// BufferedFileProvider with a hook run after `loadFile` returns and before the body is written: the
/// window in which a real file can change under a request whose headers are already decided.
struct ChangingProvider: FileProvider {
    let inner: BufferedFileProvider
    let change: @Sendable () throws -> Void

    func getFileIdentifier(_ path: String) -> String? { inner.getFileIdentifier(path) }
    func getAttributes(id: String) async throws -> BufferedFileProvider.FileAttributes? {
        try await inner.getAttributes(id: id)
    }
    func loadFile(id: String, context: some RequestContext) async throws -> ResponseBody {
        let body = try await inner.loadFile(id: id, context: context)
        try change()
        return body
    }
    func loadFile(id: String, range: ClosedRange<Int>, context: some RequestContext) async throws -> ResponseBody {
        let body = try await inner.loadFile(id: id, range: range, context: context)
        try change()
        return body
    }
}

@Suite(.enabled(if: ScratchDirectory.available, Comment(rawValue: ScratchDirectory.unavailableReason ?? "")))
struct ChangedFileTests {
    let size = 3 << 20 + 999  // streamed: larger than the single-read limit

    @Test("a file replaced between two requests: the second gets the new bytes and a new ETag")
    func replacedBetweenRequests() async throws {
        let directory = try ScratchDirectory()
        try directory.makeFile("data.bin", size: 70000)
        let app = fileApp(BufferedFileProvider(rootFolder: directory.path))
        try await app.test(.router) { client in
            let first = try await client.execute(uri: "/data.bin", method: .get)
            #expect(bytes(first.body) == (try directory.contents("data.bin")))
            try directory.makeFile("data.bin", size: 80000)
            let second = try await client.execute(uri: "/data.bin", method: .get)
            #expect(bytes(second.body) == (try directory.contents("data.bin")))
            #expect(second.headers[.contentLength] == "80000")
            #expect(second.headers[.eTag] != first.headers[.eTag])
        }
    }

    @Test("a file renamed over mid-request: the response is the old file whole (the open descriptor's inode)")
    func renamedOver() async throws {
        let directory = try ScratchDirectory()
        let old = try directory.makeFile("data.bin", size: size)
        try directory.makeFile("next.bin", size: size)
        let provider = ChangingProvider(inner: BufferedFileProvider(rootFolder: directory.path)) {
            #expect(rename("\(directory.path)/next.bin", "\(directory.path)/data.bin") == 0)
        }
        try await fileApp(provider).test(.router) { client in
            let response = try await client.execute(uri: "/data.bin", method: .get)
            #expect(response.status == .ok)
            #expect(bytes(response.body) == old)
            #expect(try directory.contents("data.bin") != old)
        }
    }

    @Test("a file truncated mid-request: the body fails with FileShrankError instead of ending short")
    func truncated() async throws {
        let directory = try ScratchDirectory()
        try directory.makeFile("data.bin", size: size)
        let provider = ChangingProvider(inner: BufferedFileProvider(rootFolder: directory.path)) {
            #expect(truncate("\(directory.path)/data.bin", 1 << 20) == 0)
        }
        try await fileApp(provider).test(.router) { client in
            _ = await #expect(throws: FileShrankError.self) {
                try await client.execute(uri: "/data.bin", method: .get)
            }
        }
    }

    @Test("a file appended to mid-request: the body is exactly the promised length, the old bytes")
    func grown() async throws {
        let directory = try ScratchDirectory()
        let old = try directory.makeFile("data.bin", size: size)
        let provider = ChangingProvider(inner: BufferedFileProvider(rootFolder: directory.path)) {
            let handle = try #require(FileHandle(forWritingAtPath: "\(directory.path)/data.bin"))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(repeating: 0x5A, count: 100_000))
            try handle.close()
        }
        try await fileApp(provider).test(.router) { client in
            let response = try await client.execute(uri: "/data.bin", method: .get)
            #expect(response.headers[.contentLength] == String(size))
            #expect(bytes(response.body) == old)
        }
    }
}
