// BufferedFileProvider through Hummingbird's own test client: bodies checked against the file's bytes as
// FileManager reads them, and headers checked against what LocalFileSystem answers to the same request.
import BufferedAIOHummingbird
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

/// An application serving `provider` with FileMiddleware, as a user would set it up.
func fileApp<Provider: FileProvider>(_ provider: Provider) -> some ApplicationProtocol
where Provider.FileAttributes: FileMiddlewareFileAttributes {
    let router = Router()
    router.add(middleware: FileMiddleware(fileProvider: provider))
    return Application(router: router)
}

/// One request answered by both providers: BufferedAIO's, and LocalFileSystem as the reference.
func bothAnswers(
    _ directory: ScratchDirectory, uri: String, method: HTTPRequest.Method = .get, headers: HTTPFields = [:],
    setup: TestingSetup = .router
) async throws -> (ours: TestResponse, reference: TestResponse) {
    let ours = try await fileApp(BufferedFileProvider(rootFolder: directory.path)).test(setup) { client in
        try await client.execute(uri: uri, method: method, headers: headers)
    }
    let reference = try await fileApp(
        LocalFileSystem(rootFolder: directory.path, threadPool: .singleton, logger: Logger(label: "reference"))
    ).test(setup) { client in
        try await client.execute(uri: uri, method: method, headers: headers)
    }
    return (ours, reference)
}

/// The headers FileMiddleware builds from a provider's attributes: equal ones mean a migration changes no
/// client cache (ETag and Last-Modified) and no length.
let attributeHeaders: [HTTPField.Name] = [
    .contentLength, .eTag, .lastModified, .contentRange, .acceptRanges, .contentType,
]

func expectSameHeaders(_ ours: TestResponse, _ reference: TestResponse) {
    #expect(ours.status == reference.status)
    for name in attributeHeaders {
        #expect(ours.headers[name] == reference.headers[name], "\(name)")
    }
}

func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }

@Suite(.enabled(if: ScratchDirectory.available, Comment(rawValue: ScratchDirectory.unavailableReason ?? "")))
struct ProviderTests {
    @Test(
        "full bodies equal the file: one read (64 KiB), streamed (3 MiB + 5), empty, evicted first",
        arguments: [(65536, false), (3 << 20 + 5, false), (0, false), (65536, true), (3 << 20 + 5, true)])
    func fullBody(size: Int, evicted: Bool) async throws {
        let directory = try ScratchDirectory()
        try directory.makeFile("data.bin", size: size)
        if evicted { directory.evict("data.bin") }
        let (ours, reference) = try await bothAnswers(directory, uri: "/data.bin")
        #expect(ours.status == .ok)
        #expect(bytes(ours.body) == (try directory.contents("data.bin")))
        #expect(ours.headers[.contentLength] == String(size))
        expectSameHeaders(ours, reference)
    }

    @Test(
        "ranges equal the file's slice, with LocalFileSystem's Content-Range, single-read and streamed",
        arguments: [65536, 1 << 20 + 12345])
    func ranges(size: Int) async throws {
        let directory = try ScratchDirectory()
        try directory.makeFile("data.bin", size: size)
        let file = try directory.contents("data.bin")
        let cases: [(String, ClosedRange<Int>)] = [
            ("bytes=0-0", 0...0),
            ("bytes=100-4195", 100...4195),
            ("bytes=4095-8192", 4095...8192),
            ("bytes=\(size - 10)-", (size - 10)...(size - 1)),
            ("bytes=-500", 0...500),  // FileMiddleware reads a suffix range as 0-500
            ("bytes=1000-\(size + 1000)", 1000...(size - 1)),  // past the end: clamped
            ("bytes=7-\(size - 1)", 7...(size - 1)),  // nearly all: streamed for the large file
        ]
        for (header, expected) in cases {
            let (ours, reference) = try await bothAnswers(directory, uri: "/data.bin", headers: [.range: header])
            #expect(ours.status == .partialContent, "\(header)")
            #expect(bytes(ours.body) == Array(file[expected]), "\(header)")
            #expect(ours.headers[.contentRange] == "bytes \(expected.lowerBound)-\(expected.upperBound)/\(size)")
            expectSameHeaders(ours, reference)
        }
    }

    @Test("HEAD gives LocalFileSystem's headers and no body")
    func head() async throws {
        let directory = try ScratchDirectory()
        try directory.makeFile("page.html", size: 12345)
        let (ours, reference) = try await bothAnswers(directory, uri: "/page.html", method: .head)
        #expect(ours.status == .ok)
        #expect(ours.body.readableBytes == 0)
        #expect(ours.headers[.contentLength] == "12345")
        #expect(ours.headers[.contentType] == "text/html")
        expectSameHeaders(ours, reference)
    }

    @Test("a missing file, a path escaping the root and a directory answer as LocalFileSystem does")
    func notFound() async throws {
        let directory = try ScratchDirectory()
        try FileManager.default.createDirectory(atPath: "\(directory.path)/sub", withIntermediateDirectories: false)
        for uri in ["/missing.bin", "/sub/missing", "/../etc/passwd", "/sub/"] {
            let (ours, reference) = try await bothAnswers(directory, uri: uri)
            #expect(ours.status == reference.status, "\(uri)")
            #expect(ours.body.readableBytes == reference.body.readableBytes, "\(uri)")
        }
        let (ours, _) = try await bothAnswers(directory, uri: "/missing.bin")
        #expect(ours.status == .notFound)
    }

    @Test("If-None-Match with our ETag gives 304, and so does LocalFileSystem's ETag after the migration")
    func conditional() async throws {
        let directory = try ScratchDirectory()
        try directory.makeFile("data.bin", size: 1000)
        let (_, reference) = try await bothAnswers(directory, uri: "/data.bin")
        let eTag = try #require(reference.headers[.eTag])
        let (ours, _) = try await bothAnswers(directory, uri: "/data.bin", headers: [.ifNoneMatch: eTag])
        #expect(ours.status == .notModified)
    }

    @Test("over a real socket (live server, AsyncHTTPClient): whole file and a range, streamed")
    func live() async throws {
        let directory = try ScratchDirectory()
        let size = 2 << 20 + 77
        try directory.makeFile("big.bin", size: size)
        let file = try directory.contents("big.bin")
        let app = fileApp(BufferedFileProvider(rootFolder: directory.path))
        try await app.test(.live) { client in
            let whole = try await client.execute(uri: "/big.bin", method: .get)
            #expect(whole.status == .ok)
            #expect(bytes(whole.body) == file)
            let part = try await client.execute(uri: "/big.bin", method: .get, headers: [.range: "bytes=300000-"])
            #expect(part.status == .partialContent)
            #expect(bytes(part.body) == Array(file[300000...]))
        }
    }
}
