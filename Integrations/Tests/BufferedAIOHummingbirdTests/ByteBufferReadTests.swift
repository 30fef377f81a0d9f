// BufferedAIONIO's ByteBuffer reads against the file's bytes as FileManager reads them.
import BufferedAIO
import BufferedAIONIO
import NIOCore
import Testing

@Suite(.enabled(if: ScratchDirectory.available, Comment(rawValue: ScratchDirectory.unavailableReason ?? "")))
struct ByteBufferReadTests {
    @Test(
        "readChunk: a range, a range crossing EOF (short), past EOF (empty); cached and evicted",
        arguments: [false, true])
    func readChunk(evicted: Bool) async throws {
        let directory = try ScratchDirectory()
        let size = 1 << 20 + 321
        let file = try directory.makeFile("data.bin", size: size)
        if evicted { directory.evict("data.bin") }
        try await BufferedFile.withFile(at: "\(directory.path)/data.bin") { handle in
            let middle = try await handle.readChunk(fromAbsoluteOffset: 4000, length: 300_000)
            #expect(bytes(middle) == Array(file[4000..<304_000]))
            let tail = try await handle.readChunk(fromAbsoluteOffset: Int64(size - 100), length: 4096)
            #expect(bytes(tail) == Array(file[(size - 100)...]))
            let none = try await handle.readChunk(fromAbsoluteOffset: Int64(size + 10), length: 4096)
            #expect(none.readableBytes == 0)
        }
    }

    @Test("read(appendingTo:) writes after what the buffer holds and moves only the writer index")
    func appending() async throws {
        let directory = try ScratchDirectory()
        let file = try directory.makeFile("data.bin", size: 10000)
        try await BufferedFile.withFile(at: "\(directory.path)/data.bin") { handle in
            var buffer = ByteBuffer(string: "head:")
            let count = try await handle.read(fromAbsoluteOffset: 10, length: 5000, appendingTo: &buffer)
            #expect(count == 5000)
            #expect(bytes(buffer) == Array("head:".utf8) + Array(file[10..<5010]))
            let shared = buffer  // a copy shares storage: the read must not write into it
            _ = try await handle.read(fromAbsoluteOffset: 0, length: 10, appendingTo: &buffer)
            #expect(shared.readableBytes == 5005)
            #expect(bytes(buffer) == Array("head:".utf8) + Array(file[10..<5010]) + Array(file[0..<10]))
        }
    }

    @Test(
        "readChunks: in order, equal to the file, for windows 1 and 4, whole file and a range; evicted",
        arguments: [1, 4])
    func chunks(window: Int) async throws {
        let directory = try ScratchDirectory()
        let size = 5 << 20 + 4321
        let file = try directory.makeFile("data.bin", size: size)
        directory.evict("data.bin")
        try await BufferedFile.withFile(at: "\(directory.path)/data.bin") { handle in
            var whole: [UInt8] = []
            var lengths: [Int] = []
            for try await chunk in handle.readChunks(chunkLength: 1 << 20, window: window) {
                whole += bytes(chunk)
                lengths.append(chunk.readableBytes)
            }
            #expect(whole == file)
            #expect(lengths == [1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 4321])
            var part: [UInt8] = []
            for try await chunk in handle.readChunks(in: 1000..<3_000_000, chunkLength: 128 * 1024, window: window) {
                part += bytes(chunk)
            }
            #expect(part == Array(file[1000..<3_000_000]))
        }
    }

    @Test("readChunks stops at EOF inside a range that runs past it, and leaving early is clean")
    func chunksPastEnd() async throws {
        let directory = try ScratchDirectory()
        let file = try directory.makeFile("data.bin", size: 300_000)
        try await BufferedFile.withFile(at: "\(directory.path)/data.bin") { handle in
            var all: [UInt8] = []
            for try await chunk in handle.readChunks(in: 0..<10_000_000, chunkLength: 65536, window: 8) {
                all += bytes(chunk)
            }
            #expect(all == file)
            for try await chunk in handle.readChunks(chunkLength: 4096, window: 8) {
                #expect(bytes(chunk) == Array(file[0..<4096]))
                break
            }
        }
    }

    @Test("readToEnd returns the file and refuses one over the limit; readExactly refuses a short range")
    func limits() async throws {
        let directory = try ScratchDirectory()
        let file = try directory.makeFile("data.bin", size: 2 << 20 + 1)
        try await BufferedFile.withFile(at: "\(directory.path)/data.bin") { handle in
            #expect(bytes(try await handle.readToEnd(maximumSizeAllowed: 2 << 20 + 1)) == file)
            await #expect(throws: BufferedAIOError.self) { try await handle.readToEnd(maximumSizeAllowed: 2 << 20) }
            let exact = try await handle.readExactly(5..<1005)
            #expect(bytes(exact) == Array(file[5..<1005]))
            await #expect(throws: FileShrankError.self) {
                try await handle.readExactly(Int64(file.count - 5)..<Int64(file.count + 5))
            }
        }
    }
}
