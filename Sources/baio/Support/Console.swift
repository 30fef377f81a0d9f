// This file owns what baio's commands share about the terminal and standard streams: messages in
// coreutils' shape, whole writes (dd's to standard error too), byte sizes for people, the terminal's width,
// and SIGINT.
import Glibc
import Synchronization

enum Console {
    /// Prints `baio: TEXT` on standard error, like coreutils' `error(0, errno, ...)`.
    static func complain(_ text: String) {
        writeAll(2, "baio: \(text)\n")
    }

    /// `baio: NAME: strerror(code)`, the shape cat uses for a file it could not read.
    static func complain(_ name: String, errno code: Int32) {
        complain("\(name): \(String(cString: strerror(code)))")
    }

    /// Writes all of `text` to `fd`; standard error has nowhere to report its own failure, so errors end it.
    static func writeAll(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { bytes in _ = writeAll(fd, UnsafeRawBufferPointer(bytes)) }
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR unless SIGINT asked to stop.
    /// Returns 0, or the errno of the write that failed.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n > 0 {
                done += n
                // A signal that arrives after some bytes went makes write return the short count, not EINTR.
                if done < bytes.count && Interrupt.requested { return EINTR }
            } else if n < 0 && errno == EINTR {
                if Interrupt.requested { return EINTR }
            } else {
                return n < 0 ? errno : EIO
            }
        }
        return 0
    }

    /// The terminal's width in columns, from whichever of standard output and standard error is a terminal,
    /// or nil when neither is.
    static var terminalWidth: Int? {
        for fd: Int32 in [1, 2] {
            var size = winsize()
            if ioctl(fd, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 { return Int(size.ws_col) }
        }
        return nil
    }

    /// 512 B, 12.0 KiB, 4.8 MiB, 1.0 GiB: powers of 1024, as fincore and ls -h count.
    static func bytes(_ count: Int64) -> String {
        if count < 1024 { return "\(count) B" }
        var value = Double(count)
        for unit in ["KiB", "MiB", "GiB", "TiB"] {
            value /= 1024
            if value < 1024 || unit == "TiB" { return "\(formatted(value)) \(unit)" }
        }
        return "\(count) B"
    }
}

/// SIGINT as a request to stop: the copy loops check it between reads and writes, cancel what is in
/// flight, and then die of SIGINT so the parent sees what a shell-killed cat shows (status 130).
enum Interrupt {
    static let flag = Atomic<Bool>(false)
    /// The thread that copies. The root command is async, so this is a pool thread, and the kernel may
    /// deliver SIGINT to any thread that does not block it; the handler passes it on to this one.
    static let copier = Atomic<UInt>(0)

    static var requested: Bool { flag.load(ordering: .relaxed) }

    /// Installs the handler without SA_RESTART, so a write to a stuck pipe or a read of an idle one
    /// returns EINTR and the loop gets to look at the flag. Call it on the thread that copies.
    static func install() {
        copier.store(UInt(pthread_self()), ordering: .relaxed)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in
            let first = !Interrupt.flag.exchange(true, ordering: .relaxed)
            Interrupt.kickCopier(unlessSelf: true)
            if first {
                // The copy may have looked at the flag just before entering a blocking write: interrupt it
                // again every 50 ms until it ends, from SIGALRM (async-signal-safe calls only).
                var every = itimerval(
                    it_interval: timeval(tv_sec: 0, tv_usec: 50_000), it_value: timeval(tv_sec: 0, tv_usec: 50_000))
                setitimer(__itimer_which_t(ITIMER_REAL.rawValue), &every, nil)
            }
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGINT, &action, nil)
        action.__sigaction_handler.sa_handler = { _ in Interrupt.kickCopier(unlessSelf: false) }
        sigaction(SIGALRM, &action, nil)
        // Dispatch's pool threads block most signals; this one must take SIGINT to see its EINTR.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Sends SIGINT to the copying thread, which has it unblocked, to cut its blocking syscall short.
    private static func kickCopier(unlessSelf: Bool) {
        let target = pthread_t(copier.load(ordering: .relaxed))
        guard target != 0 else { return }
        if unlessSelf && pthread_equal(target, pthread_self()) != 0 { return }
        pthread_kill(target, SIGINT)
    }

    /// Runs `body` with SIGINT blocked, so threads it starts (an IOContext's poller) inherit the block and
    /// the signal always lands on the thread that copies, where its EINTR is expected.
    static func blocked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        var set = sigset_t()
        var old = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_BLOCK, &set, &old)
        defer { pthread_sigmask(SIG_SETMASK, &old, nil) }
        return try body()
    }

    /// Dies of SIGINT, with the default disposition restored.
    static func dieOfSignal() -> Never {
        signal(SIGINT, SIG_DFL)
        raise(SIGINT)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        exit(130)
    }
}

/// Writes all of `text` to standard error, retrying short and interrupted writes.
func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        done += n
    }
}
