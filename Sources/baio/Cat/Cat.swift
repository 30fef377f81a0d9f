// This file owns `baio cat`: cat(1) with regular files read through the engine, a window of large reads in
// flight ahead of one writer that writes each block straight from the buffer it was read into.
import ArgumentParser
import BufferedAIO
import Glibc

struct Cat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Concatenate files to standard output, reading regular files through the engine.",
        discussion: """
            Copies each FILE to standard output in order, like cat. With no FILE, or where FILE is -, reads \
            standard input. A regular file is read through an IOContext with --window reads of --chunk-size \
            bytes in flight ahead of the writer (the file advised POSIX_FADV_SEQUENTIAL, as cat advises it), \
            and each block is written as soon as the blocks before it are; a pipe, terminal or device has no page \
            cache to track and is copied with plain read(2). A file that cannot be read is reported as cat \
            reports it (baio: NAME: No such file or directory) and the copy goes on with the next file; the \
            exit status is then 1. When standard error is a terminal, a copy that takes longer than half a \
            second shows a progress line there, refreshed in place and removed at the end; it never goes to \
            standard output.

            Like cat, baio dies of SIGPIPE when the reader of standard output goes away (or, with SIGPIPE \
            ignored, says "baio: write error: Broken pipe" and exits 1). SIGINT cancels the reads in flight \
            and ends the tool by the same signal.

            The formatting options are GNU cat's (-n, -b, -s, -E, -T, -v, and -A, -e, -t, which combine \
            them); line numbers and blank-line squeezing carry on across the files of one run.

            Examples:
              baio cat /var/log/syslog
              baio cat -n notes.txt
              baio cat -A suspicious.bin | less
              baio cat header.txt - footer.txt < body.txt > whole.txt
              baio cat big.iso | sha256sum
              baio cat --chunk-size 1M --window 4 /data/f > /dev/null
            """)

    @Argument(help: "The files to copy, in order; - is standard input.")
    var files: [String] = []

    @Option(help: "Bytes per read of a regular file (suffixes K, M, G; default 128K).", transform: parseSize)
    var chunkSize: Int = 128 << 10

    @Option(help: "Reads of a regular file in flight ahead of the writer.")
    var window: Int = 4

    @Flag(name: .customShort("u"), help: "Ignored, as GNU cat ignores it: output is never buffered (POSIX's cat -u).")
    var unbuffered = false

    @Flag(name: [.customShort("A"), .customLong("show-all")], help: "Equivalent to -vET.")
    var showAll = false

    @Flag(
        name: [.customShort("b"), .customLong("number-nonblank")], help: "Number nonempty output lines, overrides -n.")
    var numberNonblank = false

    @Flag(name: .customShort("e"), help: "Equivalent to -vE.")
    var showEndsAndNonprinting = false

    @Flag(name: [.customShort("E"), .customLong("show-ends")], help: "Display $ at end of each line.")
    var showEnds = false

    @Flag(name: [.customShort("n"), .customLong("number")], help: "Number all output lines.")
    var number = false

    @Flag(name: [.customShort("s"), .customLong("squeeze-blank")], help: "Suppress repeated empty output lines.")
    var squeezeBlank = false

    @Flag(name: .customShort("t"), help: "Equivalent to -vT.")
    var showTabsAndNonprinting = false

    @Flag(name: [.customShort("T"), .customLong("show-tabs")], help: "Display TAB characters as ^I.")
    var showTabs = false

    @Flag(
        name: [.customShort("v"), .customLong("show-nonprinting")],
        help: "Use ^ and M- notation, except for LFD and TAB.")
    var showNonprinting = false

    /// The formatting options as cat combines them.
    var format: CatFormat {
        CatFormat(
            numberAll: number, numberNonblank: numberNonblank, squeezeBlank: squeezeBlank,
            showEnds: showEnds || showAll || showEndsAndNonprinting,
            showTabs: showTabs || showAll || showTabsAndNonprinting,
            showNonprinting: showNonprinting || showAll || showEndsAndNonprinting || showTabsAndNonprinting)
    }

    @Flag(
        inversion: .prefixedNo,
        help: "Show the progress line on standard error even when it is not a terminal, or never show it.")
    var progress: Bool? = nil

    /// For tests and diagnosis: which paths the engine's reads took (stalls, blocking reads) is otherwise
    /// invisible from outside. Hidden: cat has no such option.
    @Flag(help: ArgumentHelp("Print the engine's counters on standard error at the end.", visibility: .hidden))
    var engineStatistics = false

    func validate() throws {
        guard chunkSize >= 4096 && chunkSize <= 1 << 30 else {
            throw ValidationError("--chunk-size must be between 4K and 1G")
        }
        guard window >= 1 && window <= 1024 else { throw ValidationError("--window must be between 1 and 1024") }
    }

    func run() throws {
        Interrupt.install()
        let copier = Copier(chunkSize: chunkSize, window: window, progress: progress, format: format)
        defer { copier.close() }
        var failed = false
        for name in files.isEmpty ? ["-"] : files {
            switch copier.copy(name) {
            case .copied: break
            case .failed: failed = true
            case .writeFailed: throw ExitCode.failure
            case .interrupted:
                copier.close()
                Interrupt.dieOfSignal()
            }
        }
        if copier.finish() == .writeFailed { throw ExitCode.failure }
        if engineStatistics { Console.writeAll(2, "baio: statistics: \(copier.statistics)\n") }
        if copier.readClosedStandardInput {
            // GNU cat's second complaint, from closing the descriptor it could not read.
            Console.complain("closing standard input: Bad file descriptor")
            failed = true
        }
        if failed { throw ExitCode.failure }
    }
}

/// Copies files to standard output. One IOContext serves every file of a run; each regular file is read by a
/// SequentialReader on it.
final class Copier {
    enum Outcome {
        case copied
        /// The file could not be read (reported); the copy goes on with the next one.
        case failed
        /// Standard output failed (reported); cat stops at once.
        case writeFailed
        case interrupted
    }

    let chunkSize: Int
    let window: Int
    private var context: IOContext?
    /// For read(2) copies: cat's own buffer size, enough for any pipe.
    private let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 << 10, alignment: 4096)
    private var meter: ProgressLine
    /// Standard output, when it is a regular file: copying that file into itself is refused, as cat does.
    private let output: stat?
    /// With formatting options, what is written is the formatter's rewrite of each block.
    private let formatter: CatFormatter?

    init(chunkSize: Int, window: Int, progress: Bool?, format: CatFormat = CatFormat()) {
        self.chunkSize = chunkSize
        self.window = window
        self.formatter = format.isPlain ? nil : CatFormatter(format)
        self.meter = ProgressLine(forced: progress)
        var info = stat()
        output = fstat(1, &info) == 0 && info.st_mode & S_IFMT == S_IFREG ? info : nil
    }

    deinit {
        close()
        plain.deallocate()
    }

    /// What the engine has done for this run's regular files (all zero if none was read through it).
    var statistics: EngineStatistics { context?.statistics ?? EngineStatistics() }

    /// Closes the context (cancelling any read in flight). Idempotent.
    func close() {
        context?.close()
        context = nil
    }

    /// Set when `-` was read but standard input had been closed when baio started.
    private(set) var readClosedStandardInput = false

    /// Whether standard input was closed when the process started. Descriptor 0 is then taken by the first
    /// descriptor the process opens: usually Dispatch's epoll instance, but Dispatch makes it on another
    /// thread, so now and then the engine's eventfd wins the race (reading it said EAGAIN: seen once in 5
    /// runs of `baio cat f - <&-`). Any anonymous inode there means the caller closed it.
    private lazy var standardInputClosed: Bool = {
        var target = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/self/fd/0", &target, target.count - 1)
        return n > 0
            && String(decoding: target.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("anon_inode:")
    }()

    /// Copies one operand; reports its failure on standard error.
    func copy(_ name: String) -> Outcome {
        if name == "-" && standardInputClosed {
            readClosedStandardInput = true
            complain(name, errno: EBADF)
            return .failed
        }
        let fd = name == "-" ? 0 : open(name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            complain(name, errno: errno)
            return .failed
        }
        defer { if fd != 0 { Glibc.close(fd) } }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            complain(name, errno: errno)
            return .failed
        }
        let regular = info.st_mode & S_IFMT == S_IFREG
        if let output, regular, info.st_dev == output.st_dev, info.st_ino == output.st_ino,
            lseek(fd, 0, SEEK_CUR) < info.st_size
        {
            meter.clear()
            Console.complain("\(name): input file is output file")
            return .failed
        }
        meter.begin(name, total: regular ? Int64(info.st_size) : nil)
        defer { meter.end() }

        if regular && info.st_size > 0 {
            // Standard input may be a regular file opened at any offset: start there, and leave the offset
            // after what was copied, as read(2) would.
            let start = max(0, Int64(lseek(fd, 0, SEEK_CUR)))
            if start < Int64(info.st_size) {
                _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
                switch copyThroughEngine(fd, name, from: start, to: Int64(info.st_size)) {
                case .success(let end): lseek(fd, off_t(end), SEEK_SET)
                case .failure(let box): return box.outcome
                }
            }
        }
        // Pipes, devices, files the kernel sizes as 0 (/proc), and whatever a regular file grew by meanwhile.
        return copyWithRead(fd, name)
    }

    /// Copies `[start, end)` of a regular file through the engine, in order. Returns where the copy
    /// stopped (`end`, or earlier if the file shrank meanwhile), or the outcome that ends this file.
    private func copyThroughEngine(
        _ fd: Int32, _ name: String, from start: Int64, to end: Int64
    ) -> Result<Int64, OutcomeBox> {
        let context: IOContext
        do {
            context = try makeContext()
        } catch {
            // No engine (no threads, no eventfd): the copy still happens, with read(2).
            return .success(start)
        }
        let reader = SequentialReader(
            .descriptor(fd), context: context, from: start, to: end, chunk: chunkSize, buffers: window)
        defer { reader.close() }
        var position = start
        while true {
            if Interrupt.requested { return .failure(OutcomeBox(.interrupted)) }
            let chunk: UnsafeRawBufferPointer?
            do {
                chunk = try reader.next()
            } catch {
                complain(name, errno: Int32(-error.negatedErrno))
                return .failure(OutcomeBox(.failed))
            }
            // The end, or the file shrank under us: read(2) from here finds its end the way cat would.
            guard let chunk else { return .success(position) }
            if let outcome = write(chunk) { return .failure(OutcomeBox(outcome)) }
            position += Int64(chunk.count)
        }
    }

    /// Copies the rest of `fd` with read(2), for inputs the engine cannot or need not read.
    private func copyWithRead(_ fd: Int32, _ name: String) -> Outcome {
        while true {
            let n = read(fd, plain.baseAddress, plain.count)
            if n == 0 { return .copied }
            if n < 0 {
                if errno == EINTR {
                    if Interrupt.requested { return .interrupted }
                    continue
                }
                complain(name, errno: errno)
                return .failed
            }
            if let outcome = write(UnsafeRawBufferPointer(rebasing: plain[..<n])) { return outcome }
            if Interrupt.requested { return .interrupted }
        }
    }

    /// Writes what the formatter still holds back once every file is copied; nil on success.
    func finish() -> Outcome? {
        formatter?.finish { emit($0, input: 0) }
    }

    /// Writes one block to standard output (formatted, with formatting options); nil on success.
    private func write(_ bytes: UnsafeRawBufferPointer) -> Outcome? {
        guard let formatter else { return emit(bytes, input: bytes.count) }
        // The progress line counts input, not the longer formatted output.
        if let outcome = formatter.format(bytes, emit: { emit($0, input: 0) }) { return outcome }
        meter.add(bytes.count)
        return nil
    }

    /// `input` is how many bytes of the files this stands for, for the progress line.
    private func emit(_ bytes: UnsafeRawBufferPointer, input: Int) -> Outcome? {
        let code = Console.writeAll(1, bytes)
        if code == EINTR && Interrupt.requested { return .interrupted }
        if code != 0 {
            meter.clear()
            Console.complain("write error: \(String(cString: strerror(code)))")
            return .writeFailed
        }
        meter.add(input)
        return nil
    }

    private func makeContext() throws(BufferedAIOError) -> IOContext {
        if let context { return context }
        // The poller inherits the blocked SIGINT, so the signal always interrupts this thread's syscalls.
        let made = try Interrupt.blocked { () throws(BufferedAIOError) -> IOContext in
            try IOContext(capacity: window)
        }
        context = made
        return made
    }

    private func complain(_ name: String, errno code: Int32) {
        meter.clear()
        Console.complain(name, errno: code)
    }

    /// An Outcome as an Error, for Result.
    struct OutcomeBox: Error {
        let outcome: Outcome
        init(_ outcome: Outcome) { self.outcome = outcome }
    }
}
