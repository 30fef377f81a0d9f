// This file owns `baio dd`'s ends of the copy: the plain input (read(2) for pipes and devices), the
// output with its re-blocking, sparse and sync handling, conv=sync/swab, and iflag=nocache. The copy that
// drives them is in DDCopy.swift.
import BufferedAIO
import CBufferedAIO
import Glibc

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

    init(
        fd: Int32, name: String, blockSize: Int, fullBlock: Bool, direct: Bool, warnPartialRead: Bool, quiet: Bool
    )
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
            // O_DIRECT refuses the unaligned tail after a short read with EINVAL: that is the end.
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

/// The output side of dd: `iwrite` (sparse seeks, O_DIRECT turned off for a final short block), bs=
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
            // O_DIRECT cannot write a short final block; GNU turns it off and syncs at the end instead.
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags & ~cbaio_O_DIRECT)
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
        // O_DIRECT needs aligned sources, which only the staging block is sure to be.
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
