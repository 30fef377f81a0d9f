// This file owns `baio dd`'s copy: the input (a regular file through the engine with a window of reads in
// flight, or DDPlainInput for pipes and devices), dd's record logic and GNU dd's summary. The ends (input,
// output, conversions) are in DDStreams.swift, the failure and counters in DDBasics.swift, the number
// formatting in DDFormat.swift. The structure
// follows coreutils 9.x dd.c (`dd_copy`, `iwrite`, `print_stats`) so results match.
import BufferedAIO
import CBufferedAIO
import Glibc
import Synchronization

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
            if o.inputFlags.contains(.direct) { flags |= cbaio_O_DIRECT }
            inputFD = open(path, flags)
            guard inputFD >= 0 else { throw DDFailure("failed to open \(quote(path))", errno: errno) }
        } else if o.inputFlags.contains(.direct) {
            _ = fcntl(0, F_SETFL, fcntl(0, F_GETFL) | cbaio_O_DIRECT)
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
            if o.outputFlags.contains(.direct) { _ = fcntl(1, F_SETFL, fcntl(1, F_GETFL) | cbaio_O_DIRECT) }
            return 1
        }
        var flags = O_CLOEXEC
        if o.outputFlags.contains(.direct) { flags |= cbaio_O_DIRECT }
        if o.outputFlags.contains(.dsync) { flags |= O_DSYNC }
        if o.outputFlags.contains(.sync) { flags |= O_SYNC }
        if !o.conversions.contains(.nocreat) { flags |= O_CREAT }
        if o.conversions.contains(.excl) { flags |= O_EXCL }
        if o.seekRecords == 0 && !o.conversions.contains(.notrunc) { flags |= O_TRUNC }
        // Before the open, as GNU checks it: an impossible length creates no file.
        let (size, overflow) = o.seekRecords.multipliedReportingOverflow(by: o.outputBlockSize)
        if !o.conversions.contains(.notrunc) && (overflow || size.addingReportingOverflow(o.seekBytes).overflow) {
            throw DDFailure(
                "offset too large: cannot truncate to a length of seek=\(o.seekRecords) (\(o.outputBlockSize)-byte) blocks"
            )
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
                        DDFailure(
                            "failed to truncate to \(size + o.seekBytes) bytes in output file \(quote(path))",
                            errno: code
                        ).message)
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
        let input = SequentialReader(
            .file(file), context: context, from: start, to: max(start, end), chunk: chunk, mode: mode)
        defer {
            input.close()
            context.close()
            file.close()
        }
        func nextChunk() throws(DDFailure) -> UnsafeRawBufferPointer? {
            do {
                return try input.next()
            } catch {
                throw DDFailure(
                    "error reading \(quote(file.path))", errno: Int32(truncatingIfNeeded: -error.negatedErrno))
            }
        }

        var position = start
        let conversion = DDRecordConversion(o)
        var readError: DDFailure?
        while !interrupted {
            let next: UnsafeRawBufferPointer?
            do { next = try nextChunk() } catch {
                readError = error
                break
            }
            guard let chunk = next else { break }
            counts.readFull += chunk.count / o.inputBlockSize
            if chunk.count % o.inputBlockSize != 0 { counts.readPartial += 1 }
            try write(try conversion.convert(chunk), to: output)
            position += Int64(chunk.count)
            dropper?.consumed(upTo: position)
            progress()
        }
        if interrupted { return }
        // After a read error GNU dd still writes the last partial output block (and syncs) before failing.
        try conversion.finish(output)
        try output.finish(o.conversions)
        if let readError { throw readError }
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
            try write(
                try conversion.convert(UnsafeRawBufferPointer(start: input.buffer.baseAddress!, count: n)), to: output)
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
