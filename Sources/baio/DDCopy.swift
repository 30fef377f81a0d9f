// This file owns `baio dd`'s copy: the input (a regular file through the engine with a window of reads in
// flight, or read(2) for pipes and devices), dd's record and re-blocking logic, the output, and GNU dd's
// summary. The structure follows coreutils 9.x dd.c (`dd_copy`, `iwrite`, `print_stats`) so results match.
import BufferedAIO
import Glibc
import Synchronization

/// Glibc's O_DIRECT, which Swift does not import (it is defined only under _GNU_SOURCE).
#if arch(x86_64)
let oDirect: Int32 = 0o40000
#else
let oDirect: Int32 = 0o200000
#endif

/// A failure after operands were accepted: GNU's message (without the `baio: ` prefix).
struct DDFailure: Error {
    let message: String
    /// GNU's `die` (memory exhausted) exits without the summary that its `quit` (every other failure) prints.
    var printsSummary = true
    init(_ message: String) { self.message = message }
    init(_ what: String, errno code: Int32) { message = "\(what): \(String(cString: strerror(code)))" }

    /// GNU's `alloc_ibuf`/`alloc_obuf` failure: "memory exhausted by input buffer of size 1099511627776
    /// bytes (1.0 TiB)", no summary.
    static func memoryExhausted(_ which: String, size: Int) -> DDFailure {
        var failure = DDFailure(
            "memory exhausted by \(which) buffer of size \(size) bytes (\(humanReadable(UInt64(size), base: 1024)))")
        failure.printsSummary = false
        return failure
    }
}

/// The kernel's MAX_RW_COUNT: the most one read(2) returns (`bs=3G` reads are short, as with GNU dd).
let ddMaximumRead: Int64 = 0x7fff_f000

/// dd's counters, as the summary prints them: records in are counted by the copy, the rest by the output.
struct DDCounts {
    var readFull = 0
    var readPartial = 0
    var writtenFull = 0
    var writtenPartial = 0
    var bytesWritten: Int64 = 0
}

/// Allocates `count` bytes aligned for oDirect, or nil (GNU reports "memory exhausted" instead of dying).
/// Free it with `free` (``UnsafeMutableRawBufferPointer/deallocate()`` does).
func allocateAligned(_ count: Int) -> UnsafeMutableRawBufferPointer? {
    var pointer: UnsafeMutableRawPointer?
    guard count >= 0, posix_memalign(&pointer, 4096, max(count, 1)) == 0, let pointer else { return nil }
    return UnsafeMutableRawBufferPointer(start: pointer, count: count)
}

/// Whether `count` bytes could be allocated now, asked as GNU dd's `alignalloc` asks (and then given back):
/// the engine's reader allocates only what the file holds, but `bs=1T` must still fail as GNU's does.
func canAllocate(_ count: Int) -> Bool {
    guard let buffer = allocateAligned(count) else { return false }
    buffer.deallocate()
    return true
}

// MARK: - Input

/// Anything that is not a regular file (standard input, a pipe, a device) read with read(2), one record per
/// call as dd does, or whole records with iflag=fullblock.
final class DDPlainInput {
    let fd: Int32
    let name: String
    let fullBlock: Bool
    let direct: Bool
    let buffer: UnsafeMutableRawBufferPointer
    var warnPartialRead: Bool
    var quiet: Bool
    private var previousRead = 0

    init(fd: Int32, name: String, blockSize: Int, fullBlock: Bool, direct: Bool, warnPartialRead: Bool, quiet: Bool)
        throws(DDFailure)
    {
        self.fd = fd
        self.name = name
        self.fullBlock = fullBlock
        self.direct = direct
        self.warnPartialRead = warnPartialRead
        self.quiet = quiet
        guard let buffer = allocateAligned(blockSize) else { throw .memoryExhausted("input", size: blockSize) }
        self.buffer = buffer
    }

    deinit { buffer.deallocate() }

    /// GNU's `iread`: one read(2), retried on EINTR unless the copy was interrupted; 0 at end of input.
    private func readOnce(_ into: UnsafeMutableRawPointer, _ size: Int) -> Int {
        while true {
            let n = read(fd, into, size)
            if n < 0 && errno == EINTR && !Interrupt.requested { continue }
            // oDirect refuses the unaligned tail after a short read with EINVAL: that is the end.
            if n < 0 && errno == EINVAL && direct && previousRead > 0 && previousRead < size { return 0 }
            if n > 0 && warnPartialRead && previousRead > 0 && previousRead < size {
                if !quiet {
                    let s = previousRead == 1 ? "" : "s"
                    DDUsageError.warn("warning: partial read (\(previousRead) byte\(s)); suggest iflag=fullblock")
                }
                warnPartialRead = false
            }
            previousRead = n
            return n
        }
    }

    /// One input record of at most `size` bytes into ``buffer``.
    func readRecord(_ size: Int) throws(DDFailure) -> Int {
        guard fullBlock else {
            let n = readOnce(buffer.baseAddress!, size)
            if n < 0 { throw DDFailure("error reading \(quote(name))", errno: errno) }
            return n
        }
        var total = 0
        while total < size && !Interrupt.requested {
            let n = readOnce(buffer.baseAddress! + total, size - total)
            if n < 0 { throw DDFailure("error reading \(quote(name))", errno: errno) }
            if n == 0 { break }
            total += n
        }
        return total
    }
}

// MARK: - Output

/// The output side of dd: `iwrite` (sparse seeks, oDirect turned off for a final short block), bs=
/// records written as read, or ibs/obs re-blocking into obs-sized writes through one staging buffer.
final class DDOutput {
    let fd: Int32
    let name: String
    let blockSize: Int
    var sparse: Bool
    var direct: Bool
    var syncAtEnd = false
    private(set) var finalOperationWasSeek = false
    var counts = DDCounts()
    /// The staging block for re-blocking (GNU's obuf) and how much of it is filled (GNU's oc).
    private var staging: UnsafeMutableRawBufferPointer?
    private var filled = 0
    let reblocks: Bool

    init(fd: Int32, name: String, blockSize: Int, reblocks: Bool, sparse: Bool, direct: Bool) {
        self.fd = fd
        self.name = name
        self.blockSize = blockSize
        self.sparse = sparse
        self.direct = direct
        self.reblocks = reblocks
    }

    deinit { staging?.deallocate() }

    /// Allocates the staging block when re-blocking, where GNU's `alloc_obuf` does: after skip= and seek=,
    /// before the first read.
    func allocate() throws(DDFailure) {
        guard reblocks && staging == nil else { return }
        guard let buffer = allocateAligned(blockSize) else { throw .memoryExhausted("output", size: blockSize) }
        staging = buffer
    }

    /// GNU's `iwrite`: writes all of `size` bytes unless an error stops it; returns the bytes written.
    /// A sparse all-zero buffer becomes a seek.
    func write(_ buffer: UnsafeRawPointer, _ size: Int) -> Int {
        if direct && size < blockSize {
            // oDirect cannot write a short final block; GNU turns it off and syncs at the end instead.
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags & ~oDirect)
            direct = false
            syncAtEnd = true
        }
        var total = 0
        while total < size {
            // GNU checks for signals before every write: a write cut short by ^C is not resumed.
            if Interrupt.requested { break }
            var written = 0
            finalOperationWasSeek = false
            if sparse && isZero(buffer, size) {
                if lseek(fd, off_t(size), SEEK_CUR) < 0 {
                    sparse = false
                } else {
                    finalOperationWasSeek = true
                    written = size
                }
            }
            if written == 0 {
                written = Glibc.write(fd, buffer + total, size - total)
                if written < 0 {
                    if errno == EINTR && !Interrupt.requested { continue }
                    break
                }
                if written == 0 {
                    errno = ENOSPC
                    break
                }
            }
            total += written
        }
        return total
    }

    private func isZero(_ buffer: UnsafeRawPointer, _ size: Int) -> Bool {
        let words = size / 8
        let wordPointer = UnsafeRawPointer(buffer)
        for i in 0..<words where wordPointer.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 {
            return false
        }
        for i in words * 8..<size where buffer.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        return true
    }

    /// bs= mode: input records of `recordSize` bytes (the last may be short) written as they were read.
    /// Whole records are written together unless sparse needs to look at each.
    func writeRecords(_ chunk: UnsafeRawBufferPointer, recordSize: Int) throws(DDFailure) {
        let whole = chunk.count / recordSize * recordSize
        var offset = 0
        while offset < whole {
            let length = sparse ? recordSize : whole - offset
            let written = write(chunk.baseAddress! + offset, length)
            counts.bytesWritten += Int64(written)
            counts.writtenFull += written / recordSize
            if written != length { throw DDFailure("error writing \(quote(name))", errno: errno) }
            offset += length
        }
        if whole < chunk.count {
            let length = chunk.count - whole
            let written = write(chunk.baseAddress! + whole, length)
            counts.bytesWritten += Int64(written)
            if written != length { throw DDFailure("error writing \(quote(name))", errno: errno) }
            counts.writtenPartial += 1
        }
    }

    /// Re-blocking mode: appends input bytes, writing each full obs block. Whole blocks go straight from
    /// the input's buffer when nothing is staged (GNU copies them through obuf; the bytes are the same).
    func append(_ chunk: UnsafeRawBufferPointer) throws(DDFailure) {
        try allocate()
        guard staging != nil else { return }
        var source = chunk.baseAddress!
        var left = chunk.count
        if filled > 0 { try stage(&source, &left) }
        // oDirect needs aligned sources, which only the staging block is sure to be.
        if left >= blockSize && !direct {
            let whole = left / blockSize * blockSize
            try writeBlocks(source, whole)
            source += whole
            left -= whole
        }
        while left > 0 { try stage(&source, &left) }
    }

    /// Copies what fits of `left` bytes at `source` into the staging block, writing it once it is full.
    private func stage(_ source: inout UnsafeRawPointer, _ left: inout Int) throws(DDFailure) {
        guard let staging else { return }
        let take = min(left, blockSize - filled)
        (staging.baseAddress! + filled).copyMemory(from: source, byteCount: take)
        filled += take
        source += take
        left -= take
        if filled == blockSize {
            try writeBlocks(UnsafeRawPointer(staging.baseAddress!), blockSize)
            filled = 0
        }
    }

    /// GNU's `write_output` for `length / blockSize` whole blocks.
    private func writeBlocks(_ source: UnsafeRawPointer, _ length: Int) throws(DDFailure) {
        var offset = 0
        while offset < length {
            let size = sparse ? blockSize : length - offset
            let written = write(source + offset, size)
            counts.bytesWritten += Int64(written)
            counts.writtenFull += written / blockSize
            if written != size {
                if written % blockSize != 0 { counts.writtenPartial += 1 }
                throw DDFailure("writing to \(quote(name))", errno: errno)
            }
            offset += size
        }
    }

    /// Writes the last, partial obs block; extends the file if the last block was a sparse seek; syncs.
    func finish(_ conversions: DDOperands.Conversions) throws(DDFailure) {
        if let staging, filled > 0 {
            let written = write(UnsafeRawPointer(staging.baseAddress!), filled)
            counts.bytesWritten += Int64(written)
            if written != 0 { counts.writtenPartial += 1 }
            if written != filled { throw DDFailure("error writing \(quote(name))", errno: errno) }
            filled = 0
        }
        if finalOperationWasSeek {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw DDFailure("cannot fstat \(quote(name))", errno: errno) }
            if info.st_mode & S_IFMT == S_IFREG {
                let offset = lseek(fd, 0, SEEK_CUR)
                if offset >= 0 && info.st_size < offset && ftruncate(fd, offset) != 0 {
                    throw DDFailure(
                        "failed to truncate to \(offset) bytes in output file \(quote(name))", errno: errno)
                }
            }
        }
        var fsyncNeeded = conversions.contains(.fsync) || syncAtEnd
        if conversions.contains(.fdatasync) && fdatasync(fd) != 0 {
            if errno != ENOSYS && errno != EINVAL {
                throw DDFailure("fdatasync failed for \(quote(name))", errno: errno)
            }
            fsyncNeeded = true
        }
        if fsyncNeeded && fsync(fd) != 0 {
            throw DDFailure("fsync failed for \(quote(name))", errno: errno)
        }
    }
}

// MARK: - conv=sync and conv=swab

/// What GNU dd does to input between reading and writing: conv=sync pads a short record to ibs with NULs,
/// then conv=swab swaps each pair of bytes of the stream, an odd byte waiting for the next record (and
/// written alone at the end). Records arrive whole, but for the last of each block of them. A class, so its
/// scratch buffer is freed however the copy ends (an error, or SIGINT before `finish`).
final class DDRecordConversion {
    let recordSize: Int
    let pad: Bool
    let swab: Bool
    private var saved: UInt8?
    private var scratch: UnsafeMutableRawBufferPointer?

    init(_ operands: DDOperands) {
        recordSize = operands.inputBlockSize
        pad = operands.conversions.contains(.sync)
        swab = operands.conversions.contains(.swab)
    }

    deinit { scratch?.deallocate() }

    /// Returns the bytes to write; valid until the next call.
    func convert(_ records: UnsafeRawBufferPointer) throws(DDFailure) -> UnsafeRawBufferPointer {
        let short = records.count % recordSize
        let padding = pad && short != 0 ? recordSize - short : 0
        guard swab || padding > 0 else { return records }
        let length = (saved == nil ? 0 : 1) + records.count + padding
        if (scratch?.count ?? 0) < length {
            scratch?.deallocate()
            // conv=sync pads to ibs, which the file's size does not bound (ibs=16G on a small file): GNU's
            // input buffer holds it, and runs out of memory the same way.
            scratch = allocateAligned(length)
            guard scratch != nil else { throw .memoryExhausted("input", size: recordSize) }
        }
        let buffer = scratch!.baseAddress!
        var count = 0
        if let saved {
            buffer.storeBytes(of: saved, as: UInt8.self)
            count = 1
        }
        (buffer + count).copyMemory(from: records.baseAddress!, byteCount: records.count)
        count += records.count
        (buffer + count).initializeMemory(as: UInt8.self, repeating: 0, count: padding)
        count += padding
        guard swab else { return UnsafeRawBufferPointer(start: buffer, count: count) }
        saved = nil
        if count % 2 == 1 {
            count -= 1
            saved = buffer.load(fromByteOffset: count, as: UInt8.self)
        }
        let bytes = UnsafeMutableBufferPointer(start: buffer.assumingMemoryBound(to: UInt8.self), count: count)
        for index in stride(from: 0, to: count, by: 2) { bytes.swapAt(index, index + 1) }
        return UnsafeRawBufferPointer(start: buffer, count: count)
    }

    /// Writes the odd byte swab still holds, as GNU's `output_char` does at the end of input.
    func finish(_ output: DDOutput) throws(DDFailure) {
        guard var byte = saved else { return }
        saved = nil
        try withUnsafeBytes(of: &byte) { (last) throws(DDFailure) in try output.append(last) }
    }
}

// MARK: - Dropping what was read (iflag=nocache)

/// Drops the input's pages behind the reader in whole pages, as GNU's `invalidate_cache` does, so a page
/// shared by two reads is dropped once both are done.
struct DDCacheDropper {
    let fd: Int32
    var droppedUpTo: Int64

    init(fd: Int32, from offset: Int64) {
        self.fd = fd
        droppedUpTo = offset - offset % 4096
    }

    mutating func consumed(upTo offset: Int64) {
        let page = offset - offset % 4096
        guard page > droppedUpTo else { return }
        _ = posix_fadvise(fd, off_t(droppedUpTo), off_t(page - droppedUpTo), POSIX_FADV_DONTNEED)
        droppedUpTo = page
    }

    /// At the end: to end of file (length 0) if the input ended, else through the page holding the last byte.
    mutating func finish(at offset: Int64, endOfFile: Bool) {
        let length = endOfFile ? 0 : (offset + 4095) / 4096 * 4096 - droppedUpTo
        guard endOfFile || length > 0 else { return }
        _ = posix_fadvise(fd, off_t(droppedUpTo), off_t(length), POSIX_FADV_DONTNEED)
    }
}

// MARK: - The copy

/// Runs one validated `baio dd`: opens, skips, seeks, copies, syncs and prints the summary. Returns the exit
/// status; on SIGINT it prints the summary so far and ends the process by SIGINT, as GNU dd does.
struct DDCopier {
    let operands: DDOperands
    private var counts = DDCounts()
    /// Set once the copy starts; a failure before that (opening a file) prints no summary, as with GNU dd.
    private var output: DDOutput?
    private var startTime: UInt64 = 0
    private var nextProgress: UInt64 = 0
    private var progressLength = 0
    /// conv=notrunc was not given and truncating at seek= failed: reported, and the exit status is 1.
    private var truncateFailed = false

    init(_ operands: DDOperands) { self.operands = operands }

    private var inputName: String { operands.input ?? "standard input" }
    private var outputName: String { operands.output ?? "standard output" }

    mutating func run() -> Int32 {
        Interrupt.install()
        var status: Int32 = 0
        do {
            try copy()
        } catch {
            // A write or read cut short by ^C is not an error to report: the summary says where it stopped.
            if !Interrupt.requested { DDUsageError.warn(error.message) }
            if !error.printsSummary { return 1 }
            status = 1
        }
        if Interrupt.requested {
            printStatistics()
            Interrupt.dieOfSignal()
        }
        printStatistics()
        return truncateFailed ? 1 : status
    }

    private mutating func copy() throws(DDFailure) {
        let o = operands
        // Input first, then output, as GNU dd opens them: a missing input creates no output file.
        var inputFD: Int32 = 0
        var inputInfo = stat()
        if let path = o.input {
            var flags = O_RDONLY | O_CLOEXEC
            if o.inputFlags.contains(.direct) { flags |= oDirect }
            inputFD = open(path, flags)
            guard inputFD >= 0 else { throw DDFailure("failed to open \(quote(path))", errno: errno) }
        } else if o.inputFlags.contains(.direct) {
            _ = fcntl(0, F_SETFL, fcntl(0, F_GETFL) | oDirect)
        }
        defer { if o.input != nil { Glibc.close(inputFD) } }
        guard fstat(inputFD, &inputInfo) == 0 else {
            throw DDFailure("cannot fstat \(quote(inputName))", errno: errno)
        }

        let outputFD = try openOutput()
        defer { if o.output != nil { Glibc.close(outputFD) } }
        let output = DDOutput(
            fd: outputFD, name: outputName, blockSize: o.outputBlockSize, reblocks: o.reblocks,
            sparse: o.conversions.contains(.sparse), direct: o.outputFlags.contains(.direct))

        startTime = monotonicNanoseconds()
        nextProgress = startTime + 1_000_000_000
        self.output = output

        let regular = o.input != nil && inputInfo.st_mode & S_IFMT == S_IFREG
        if regular {
            try copyRegular(inputFD, size: Int64(inputInfo.st_size), output)
        } else {
            try copyPlain(inputFD, output)
        }
    }

    /// GNU's `open` of of=: read-write when seeking (so a later version may read what it skips), created
    /// 0666 & ~umask, truncated at the seek point unless conv=notrunc.
    private mutating func openOutput() throws(DDFailure) -> Int32 {
        let o = operands
        guard let path = o.output else {
            if o.outputFlags.contains(.direct) { _ = fcntl(1, F_SETFL, fcntl(1, F_GETFL) | oDirect) }
            return 1
        }
        var flags = O_CLOEXEC
        if o.outputFlags.contains(.direct) { flags |= oDirect }
        if o.outputFlags.contains(.dsync) { flags |= O_DSYNC }
        if o.outputFlags.contains(.sync) { flags |= O_SYNC }
        if !o.conversions.contains(.nocreat) { flags |= O_CREAT }
        if o.conversions.contains(.excl) { flags |= O_EXCL }
        if o.seekRecords == 0 && !o.conversions.contains(.notrunc) { flags |= O_TRUNC }
        // Before the open, as GNU checks it: an impossible length creates no file.
        let (size, overflow) = o.seekRecords.multipliedReportingOverflow(by: o.outputBlockSize)
        if !o.conversions.contains(.notrunc) && (overflow || size.addingReportingOverflow(o.seekBytes).overflow) {
            throw DDFailure(
                "offset too large: cannot truncate to a length of seek=\(o.seekRecords) (\(o.outputBlockSize)-byte) blocks")
        }
        var fd: Int32 = -1
        if o.seekRecords > 0 { fd = open(path, flags | O_RDWR, 0o666) }
        if fd < 0 { fd = open(path, flags | O_WRONLY, 0o666) }
        guard fd >= 0 else { throw DDFailure("failed to open \(quote(path))", errno: errno) }
        if o.seekRecords > 0 && !o.conversions.contains(.notrunc) {
            var info = stat()
            if ftruncate(fd, off_t(size + o.seekBytes)) != 0 {
                let code = errno
                // Only regular files, directories and shared memory define ftruncate (GNU's rule). GNU goes
                // on (to fail at the seek, past ext4's size limit) and exits 1 at the end.
                if fstat(fd, &info) == 0 && info.st_mode & S_IFMT == S_IFREG {
                    DDUsageError.warn(
                        DDFailure("failed to truncate to \(size + o.seekBytes) bytes in output file \(quote(path))",
                                  errno: code).message)
                    truncateFailed = true
                }
            }
        }
        return fd
    }

    /// seek=: an lseek of the output. GNU dd refuses to seek an output that cannot (a pipe): it would have
    /// to read what it skips, so it reports "cannot seek" and stops.
    private func seekOutput(_ output: DDOutput) throws(DDFailure) {
        let o = operands
        guard o.seekRecords > 0 || o.seekBytes > 0 else { return }
        let (bytes, overflow) = o.seekRecords.multipliedReportingOverflow(by: o.outputBlockSize)
        let (offset, overflow2) = bytes.addingReportingOverflow(o.seekBytes)
        if !overflow && !overflow2 && lseek(output.fd, off_t(offset), SEEK_CUR) >= 0 { return }
        let code = overflow || overflow2 ? EOVERFLOW : errno
        throw DDFailure("\(quoteIfNeeded(outputName)): cannot seek", errno: code)
    }

    private var interrupted: Bool { Interrupt.requested }

    /// skip= on a regular input: GNU's `skip` lseeks the input, so an offset the filesystem refuses (past
    /// ext4's 16 TiB limit: EINVAL) or that off_t cannot hold (EOVERFLOW) is "cannot skip", exit status 1
    /// with the summary; an offset past the end of the file is only a warning. Returns where reading starts.
    private func skipRegular(_ fd: Int32, size: Int64) throws(DDFailure) -> Int64 {
        let o = operands
        guard o.skipRecords > 0 || o.skipBytes > 0 else { return 0 }
        let (bytes, overflow) = Int64(o.skipRecords).multipliedReportingOverflow(by: Int64(o.inputBlockSize))
        let (offset, overflow2) = bytes.addingReportingOverflow(Int64(o.skipBytes))
        guard !overflow && !overflow2 && lseek(fd, off_t(offset), SEEK_CUR) >= 0 else {
            let code = overflow || overflow2 ? EOVERFLOW : errno
            throw DDFailure("\(quoteIfNeeded(inputName)): cannot skip", errno: code)
        }
        guard size > 0 && offset > size else { return offset }
        if o.status != .none { DDUsageError.warn("\(quoteIfNeeded(inputName)): cannot skip to specified offset") }
        return size
    }

    /// A regular input file: skip by offset, then the byte range through the engine. Reads are short only
    /// at end of file, so records follow from the offsets: whole ibs blocks, the last one partial.
    private mutating func copyRegular(_ fd: Int32, size: Int64, _ output: DDOutput) throws(DDFailure) {
        let o = operands
        let ibs = Int64(o.inputBlockSize)
        let start = try skipRegular(fd, size: size)
        try seekOutput(output)
        var dropper = o.inputFlags.contains(.nocache) ? DDCacheDropper(fd: fd, from: start) : nil
        if o.maxRecords == 0 && o.maxBytes == 0 {
            try output.finish(o.conversions)
            // GNU's special case: count=0 with nocache drops the whole input from the skip point on.
            dropper?.finish(at: start, endOfFile: true)
            return
        }
        // GNU allocates its input buffer (ibs, one more byte for swab) here, and dies if it cannot; the
        // reader below allocates only what the file holds, so ask for GNU's size once to fail as GNU does.
        let swabByte = o.conversions.contains(.swab) ? 1 : 0
        guard canAllocate(o.inputBlockSize + swabByte) else { throw .memoryExhausted("input", size: o.inputBlockSize) }
        try output.allocate()
        // One read(2) returns at most MAX_RW_COUNT: GNU's bs=3G reads (and counts, as partial records)
        // 2 GiB - 4 KiB at a time, so the reader's reads are never longer either. With fullblock GNU
        // gathers whole blocks: the bytes are the same, but baio counts each read as a record then.
        let readSize = o.inputFlags.contains(.fullblock) ? ibs : min(ibs, ddMaximumRead)
        var end = size
        if o.maxRecords < Int.max {
            let (blocks, overflow) = Int64(o.maxRecords).multipliedReportingOverflow(by: readSize)
            if !overflow {
                let (limit, overflow2) = start.addingReportingOverflow(blocks + min(Int64(o.maxBytes), readSize))
                if !overflow2 { end = min(end, limit) }
            }
        }
        let file: BufferedFile
        do {
            file = try BufferedFile(path: o.input!, accessPattern: .sequential)
        } catch {
            throw DDFailure("failed to open \(quote(o.input!))", errno: Int32(truncatingIfNeeded: -error.negatedErrno))
        }
        if o.inputFlags.contains(.direct) && !file.supportsDirect {
            file.close()
            throw DDFailure("failed to open \(quote(o.input!))", errno: EINVAL)
        }
        // About 1 MiB per read, in whole input blocks.
        let blocks = max(1, (1 << 20) / o.inputBlockSize)
        let (product, overflow) = blocks.multipliedReportingOverflow(by: o.inputBlockSize)
        let chunk = Int(min(Int64(overflow ? o.inputBlockSize : product), ddMaximumRead))
        let mode: ReadMode = o.inputFlags.contains(.direct) ? .direct : .buffered
        let context: IOContext
        do {
            // The poller inherits the blocked SIGINT, so the signal always interrupts this thread's syscalls.
            context = try Interrupt.blocked { () throws(BufferedAIOError) -> IOContext in
                try IOContext(capacity: SequentialReader.ring(chunk: chunk, mode: mode))
            }
        } catch {
            file.close()
            throw DDFailure("cannot create an IO context: \(error)")
        }
        let input = SequentialReader(.file(file), context: context, from: start, to: max(start, end), chunk: chunk, mode: mode)
        defer {
            input.close()
            context.close()
            file.close()
        }
        func nextChunk() throws(DDFailure) -> UnsafeRawBufferPointer? {
            do {
                return try input.next()
            } catch {
                throw DDFailure("error reading \(quote(file.path))", errno: Int32(truncatingIfNeeded: -error.negatedErrno))
            }
        }

        var position = start
        let conversion = DDRecordConversion(o)
        while !interrupted, let chunk = try nextChunk() {
            counts.readFull += chunk.count / o.inputBlockSize
            if chunk.count % o.inputBlockSize != 0 { counts.readPartial += 1 }
            try write(try conversion.convert(chunk), to: output)
            position += Int64(chunk.count)
            dropper?.consumed(upTo: position)
            progress()
        }
        if interrupted { return }
        try conversion.finish(output)
        try output.finish(o.conversions)
        dropper?.finish(at: position, endOfFile: position >= size)
    }

    /// Standard input, pipes and devices: GNU's read loop, one record per read(2).
    private mutating func copyPlain(_ fd: Int32, _ output: DDOutput) throws(DDFailure) {
        let o = operands
        let input = try DDPlainInput(
            fd: fd, name: inputName, blockSize: o.inputBlockSize, fullBlock: o.inputFlags.contains(.fullblock),
            direct: o.inputFlags.contains(.direct), warnPartialRead: o.warnPartialRead, quiet: o.status == .none)
        let startOffset = Int64(lseek(fd, 0, SEEK_CUR))
        var position = Int64(max(0, startOffset))
        if o.skipRecords > 0 || o.skipBytes > 0 {
            position = try skipPlain(input, from: startOffset)
        }
        try seekOutput(output)
        let seekable = startOffset >= 0
        var dropper = o.inputFlags.contains(.nocache) && seekable ? DDCacheDropper(fd: fd, from: position) : nil
        if o.maxRecords == 0 && o.maxBytes == 0 {
            try output.finish(o.conversions)
            dropper?.finish(at: position, endOfFile: true)
            return
        }
        try output.allocate()
        var endOfFile = false
        let conversion = DDRecordConversion(o)
        while !interrupted {
            progress()
            let records = counts.readFull + counts.readPartial
            if records >= o.maxRecords &+ (o.maxBytes > 0 ? 1 : 0) { break }
            let n = try input.readRecord(records >= o.maxRecords ? o.maxBytes : o.inputBlockSize)
            if interrupted { break }
            if n == 0 {
                endOfFile = true
                break
            }
            position += Int64(n)
            dropper?.consumed(upTo: position)
            if n < o.inputBlockSize { counts.readPartial += 1 } else { counts.readFull += 1 }
            // One record: written whole, counted full only if it is a whole block.
            try write(try conversion.convert(UnsafeRawBufferPointer(start: input.buffer.baseAddress!, count: n)), to: output)
        }
        if interrupted { return }
        try conversion.finish(output)
        try output.finish(o.conversions)
        dropper?.finish(at: position, endOfFile: endOfFile)
    }

    /// Input records, converted, to the output: re-blocked into obs, or written as the records they are.
    private func write(_ records: UnsafeRawBufferPointer, to output: DDOutput) throws(DDFailure) {
        if operands.reblocks {
            try output.append(records)
        } else {
            try output.writeRecords(records, recordSize: operands.inputBlockSize)
        }
    }

    /// skip= on input that may not seek: lseek if it can, else read and discard whole records (each read
    /// counts as one, as in GNU's `skip`). Returns the input offset after it.
    private func skipPlain(_ input: DDPlainInput, from startOffset: Int64) throws(DDFailure) -> Int64 {
        let o = operands
        let (bytes, overflow) = o.skipRecords.multipliedReportingOverflow(by: o.inputBlockSize)
        let (offset, overflow2) = bytes.addingReportingOverflow(o.skipBytes)
        if !overflow && !overflow2 && lseek(input.fd, off_t(offset), SEEK_CUR) >= 0 {
            var info = stat()
            if fstat(input.fd, &info) == 0 && info.st_mode & S_IFMT == S_IFREG && info.st_size > 0
                && startOffset >= 0 && Int64(info.st_size) - startOffset < Int64(offset) && o.status != .none
            {
                DDUsageError.warn("\(quoteIfNeeded(inputName)): cannot skip to specified offset")
            }
            return startOffset + Int64(offset)
        }
        // GNU reads to skip only what cannot seek at all: a seekable input refused the offset itself.
        let code = overflow || overflow2 ? EOVERFLOW : errno
        if lseek(input.fd, 0, SEEK_END) >= 0 {
            throw DDFailure("\(quoteIfNeeded(inputName)): cannot skip", errno: code)
        }
        var records = o.skipRecords
        var tail = o.skipBytes
        var position = max(0, startOffset)
        while records > 0 || tail > 0 {
            let n = try input.readRecord(records > 0 ? o.inputBlockSize : tail)
            if n == 0 {
                if o.status != .none {
                    DDUsageError.warn("\(quoteIfNeeded(inputName)): cannot skip to specified offset")
                }
                break
            }
            position += Int64(n)
            if records > 0 { records -= 1 } else { tail = 0 }
            if Interrupt.requested { break }
        }
        return position
    }

    // MARK: - Summary

    /// status=progress: at most once a second, the transfer line refreshed in place with a carriage return.
    private mutating func progress() {
        guard operands.status == .progress else { return }
        let now = monotonicNanoseconds()
        guard now >= nextProgress else { return }
        let line = transferLine(now: now, progress: true)
        var text = "\r" + line
        if line.utf8.count < progressLength {
            text += String(repeating: " ", count: progressLength - line.utf8.count)
        }
        progressLength = line.utf8.count
        writeStandardError(text)
        nextProgress += 1_000_000_000
    }

    /// GNU's `print_stats`: records in and out, then (unless status=noxfer) the transfer line.
    private mutating func printStatistics() {
        guard operands.status != .none, let output else { return }
        counts.writtenFull = output.counts.writtenFull
        counts.writtenPartial = output.counts.writtenPartial
        counts.bytesWritten = output.counts.bytesWritten
        var text = progressLength > 0 ? "\n" : ""
        progressLength = 0
        text += "\(counts.readFull)+\(counts.readPartial) records in\n"
        text += "\(counts.writtenFull)+\(counts.writtenPartial) records out\n"
        if operands.status != .noxfer {
            text += transferLine(now: monotonicNanoseconds(), progress: false) + "\n"
        }
        writeStandardError(text)
    }

    /// `N bytes (SI, IEC) copied, T s, R/s`, with GNU's rules: no parenthesis below 1000 bytes, only the SI
    /// size while the IEC one has no prefix, whole seconds in progress lines.
    private func transferLine(now: UInt64, progress: Bool) -> String {
        let bytes = output?.counts.bytesWritten ?? 0
        let si = humanReadable(UInt64(bytes), base: 1000)
        let iec = humanReadable(UInt64(bytes), base: 1024)
        let elapsed = now > startTime ? now - startTime : 0
        let seconds = Double(elapsed) / 1e9
        let rate = elapsed > 0 ? humanRate(UInt64(bytes), nanoseconds: elapsed) + "/s" : "Infinity B/s"
        let time = cFormat(progress ? "%.0f s" : "%g s", seconds)
        if si.hasSuffix(" B") {
            return "\(bytes) byte\(bytes == 1 ? "" : "s") copied, \(time), \(rate)"
        }
        if iec.hasSuffix(" B") {
            return "\(bytes) bytes (\(si)) copied, \(time), \(rate)"
        }
        return "\(bytes) bytes (\(si), \(iec)) copied, \(time), \(rate)"
    }
}

// MARK: - GNU's number formatting

private let powerLetters: [Character] = [" ", "K", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q"]

/// gnulib's `human_readable(n, autoscale | round_to_nearest | space_before_unit | SI | B [| base_1024], 1, 1)`
/// on its exact integer path: "2.1 kB", "2.1 KiB", "100 B".
func humanReadable(_ n: UInt64, base: UInt64) -> String {
    var amount = n
    var tenths: UInt64 = 0
    var rounding: UInt64 = 0
    var exponent = 0
    var fraction = ""
    if base <= amount {
        repeat {
            let r10 = (amount % base) * 10 + tenths
            let r2 = (r10 % base) * 2 + (rounding >> 1)
            amount /= base
            tenths = r10 / base
            rounding = r2 < base ? (r2 + rounding != 0 ? 1 : 0) : 2 + (base < r2 + rounding ? 1 : 0)
            exponent += 1
        } while base <= amount && exponent < powerLetters.count - 1
        if amount < 10 {
            if 2 < rounding + (tenths & 1) {
                tenths += 1
                rounding = 0
                if tenths == 10 {
                    amount += 1
                    tenths = 0
                }
            }
            if amount < 10 {
                fraction = ".\(tenths)"
                tenths = 0
                rounding = 0
            }
        }
    }
    if 5 < tenths + (0 < rounding + (amount & 1) ? 1 : 0) {
        amount += 1
        if amount == base && exponent < powerLetters.count - 1 {
            exponent += 1
            fraction = ".0"
            amount = 1
        }
    }
    var unit = ""
    if exponent > 0 { unit = base == 1000 && exponent == 1 ? "k" : String(powerLetters[exponent]) }
    if base == 1024 && exponent > 0 { unit += "i" }
    return "\(amount)\(fraction) \(unit)B"
}

/// The rate as GNU computes it: human_readable(bytes, ..., 1e9, ns) on gnulib's floating-point path,
/// always scaled to at least k ("0.0 kB").
func humanRate(_ bytes: UInt64, nanoseconds: UInt64) -> String {
    var amount = Double(bytes) * (1e9 / Double(nanoseconds))
    var scale = 1.0
    var exponent = 0
    repeat {
        scale *= 1000
        exponent += 1
    } while scale * 1000 <= amount && exponent < powerLetters.count - 1
    amount /= scale
    var text = cFormat("%.1f", amount)
    if text.utf8.count > 4 { text = cFormat("%.0f", amount) }
    return text + " " + (exponent == 1 ? "k" : String(powerLetters[exponent])) + "B"
}

/// printf formatting of one double, which Swift's own description does not do ("%g").
func cFormat(_ format: String, _ value: Double) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    _ = withVaList([value]) { arguments in vsnprintf(&buffer, buffer.count, format, arguments) }
    return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}
