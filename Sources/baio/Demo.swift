// This file owns `baio demo`: the README's main job. It makes a sample file, evicts it, reads it back
// through the engine, checks every byte against plain pread and prints what happened.
import ArgumentParser
import BufferedAIO
import Glibc

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read an evicted file through the engine, verify it against pread, and show what happened.",
        discussion: """
            With no --file, writes a sample file of --size bytes in $TMPDIR (or /tmp), evicts it from the page
            cache, reads it back through an IOContext with --queue-depth reads of --block-size bytes in
            flight, compares each block with a plain pread, and removes the file.

            Examples:
              baio demo
              baio demo --size 1G --block-size 64K --queue-depth 64
              baio demo --file /var/log/syslog --no-evict
            """)

    @Option(help: "Size of the sample file (suffixes K, M, G).", transform: parseSize)
    var size: Int = 256 << 20

    @Option(help: "Read this existing file instead of writing a sample.")
    var file: String?

    @Flag(help: "Do not evict the file before reading it.")
    var noEvict = false

    @Option(help: "Bytes per read (suffixes K, M, G).", transform: parseSize)
    var blockSize: Int = 1 << 20

    @Option(help: "Reads in flight.")
    var queueDepth: Int = 32

    @Option(help: "buffered, direct or automatic.")
    var mode: String = "buffered"

    func validate() throws {
        guard blockSize > 0 else { throw ValidationError("--block-size must be positive") }
        guard queueDepth > 0 && queueDepth <= 4096 else {
            throw ValidationError("--queue-depth must be between 1 and 4096")
        }
        guard ["buffered", "direct", "automatic"].contains(mode) else {
            throw ValidationError("--mode must be buffered, direct or automatic, not '\(mode)'")
        }
    }

    func run() throws {
        let path: String
        if let file {
            path = file
        } else {
            let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
            path = "\(directory)/baio-demo-\(getpid()).bin"
            try writeSample(path: path, size: size)
        }
        defer { if file == nil { unlink(path) } }

        let opened = try BufferedFile(path: path)
        defer { opened.close() }
        guard let fd = opened.descriptor else { throw ValidationError("'\(path)' closed unexpectedly") }
        var info = stat()
        fstat(fd, &info)
        let fileSize = Int(info.st_size)
        if !noEvict { PageCache.evict(descriptor: fd) }
        let before = try PageCache.residency(descriptor: fd)
        let trusted = PageCache.mincoreIsTrustworthy(descriptor: fd)

        let readMode: ReadMode = mode == "direct" ? .direct : mode == "automatic" ? .automatic : .buffered
        let start = ContinuousClock.now
        let outcome = try readVerified(opened, fd: fd, size: fileSize, mode: readMode)
        let elapsed = ContinuousClock.now - start
        let after = try PageCache.residency(descriptor: fd)

        let seconds = secondsOf(elapsed)
        let mib = Double(fileSize) / Double(1 << 20)
        func pages(_ r: PageCache.Residency?) -> String {
            r.map { "\($0.residentPages)/\($0.totalPages)" } ?? "unknown (mincore is not truthful for this caller)"
        }
        print("file: \(path) (\(fileSize) bytes)")
        print("pages resident before: \(pages(before))")
        print("pages resident after: \(pages(after))")
        print("read: \(outcome.reads) reads of \(blockSize) bytes, queue depth \(queueDepth), mode \(mode)")
        print("time: \(formatted(seconds * 1000)) ms (\(formatted(mib / max(seconds, 1e-9))) MiB/s)")
        print("probe: \(trusted ? "mincore" : "nowait")")
        let inline = outcome.statistics.completedInline
        print("inline: \(inline) of \(outcome.reads) reads finished inside submit")
        if inline > 0, let before, before.residentPages == 0 {
            // A new user read "resident before: 0/N" then "inline: 222" as an eviction that failed.
            print(
                "  (the file was evicted; inline reads are not a failed eviction: on Linux 6.12+ a RWF_NOWAIT miss at "
                    + "submit starts the read, and the kernel's readahead for it, which can end before this or a later "
                    + "read is submitted; \(outcome.statistics.pagesFoundMissing) pages were found missing and read "
                    + "ahead by the engine)")
        }
        print("statistics: \(outcome.statistics)")
        print("engine-fnv1a64: \(String(outcome.hash, radix: 16))")
        print("verified: \(outcome.mismatch == nil ? "yes" : "no")")
        if let mismatch = outcome.mismatch {
            throw ValidationError("data read through the engine differs from pread at offset \(mismatch)")
        }
    }

    struct Outcome {
        var reads = 0
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var mismatch: Int?
        var statistics = EngineStatistics()
    }

    /// Keeps `queueDepth` reads in flight over a ring of slots, consuming completed blocks in file order so
    /// the hash is of the file's bytes as read through the engine.
    private func readVerified(_ file: BufferedFile, fd: Int32, size: Int, mode: ReadMode) throws -> Outcome {
        let context = try IOContext(capacity: queueDepth)
        defer { context.close() }
        let slots = (0..<queueDepth).map { _ in
            UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
        }
        defer { slots.forEach { $0.deallocate() } }
        let check = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
        defer { check.deallocate() }

        var outcome = Outcome()
        let blocks = (size + blockSize - 1) / blockSize
        var results = [Int?](repeating: nil, count: queueDepth)
        var nextToSubmit = 0
        func submit(_ block: Int) throws {
            let slot = block % queueDepth
            let length = min(blockSize, size - block * blockSize)
            let request = ReadRequest(
                .file(file), offset: Int64(block * blockSize), length: length, into: slots[slot],
                tag: UInt64(block), mode: mode)
            try context.submit(request)
        }
        while nextToSubmit < min(blocks, queueDepth) {
            try submit(nextToSubmit)
            nextToSubmit += 1
        }
        var nextToConsume = 0
        while nextToConsume < blocks {
            for event in try context.getEvents(minimum: 1, maximum: queueDepth) {
                results[Int(event.tag) % queueDepth] = try event.get()
            }
            while nextToConsume < blocks, let count = results[nextToConsume % queueDepth] {
                let slot = nextToConsume % queueDepth
                results[slot] = nil
                let offset = nextToConsume * blockSize
                let expected = pread(fd, check.baseAddress, min(blockSize, size - offset), off_t(offset))
                if count != expected || memcmp(slots[slot].baseAddress!, check.baseAddress!, count) != 0 {
                    outcome.mismatch = outcome.mismatch ?? offset
                }
                for byte in slots[slot].prefix(count) {
                    outcome.hash = (outcome.hash ^ UInt64(byte)) &* 0x100_0000_01b3
                }
                outcome.reads += 1
                nextToConsume += 1
                if nextToSubmit < blocks {
                    try submit(nextToSubmit)
                    nextToSubmit += 1
                }
            }
        }
        outcome.statistics = context.statistics
        return outcome
    }

    private func writeSample(path: String, size: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw ValidationError("cannot create '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let chunk = 1 << 20
        var words = [UInt64](repeating: 0, count: chunk / 8)
        var offset = 0
        while offset < size {
            for i in 0..<words.count {
                var x = UInt64(offset + i * 8) &+ 0x9e37_79b9_7f4a_7c15
                x = (x ^ (x >> 30)) &* 0xbf58_476d_1ce4_e5b9
                words[i] = x ^ (x >> 27)
            }
            let length = min(chunk, size - offset)
            let written = words.withUnsafeBytes { pwrite(fd, $0.baseAddress, length, off_t(offset)) }
            guard written == length else {
                throw ValidationError("cannot write '\(path)': \(String(cString: strerror(errno)))")
            }
            offset += length
        }
        fsync(fd)
    }
}
