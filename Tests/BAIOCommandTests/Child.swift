// Running the built tools as child processes with full control of their descriptors and signal dispositions,
// for comparing `baio` with coreutils byte for byte and exit status for exit status.
import Glibc
import Testing

enum Child {
    /// How a child ended and what it wrote.
    struct Ended: CustomStringConvertible {
        /// The exit status, or nil if a signal ended it.
        var status: Int32?
        /// The signal that ended it, or nil if it exited.
        var signal: Int32?
        var stdout: [UInt8] = []
        var stderr = ""

        var description: String {
            "status \(status.map(String.init) ?? "-") signal \(signal.map(String.init) ?? "-"), stderr: \(stderr)"
        }
    }

    /// Starts `argv` (argv[0] an absolute path) with the given descriptors as 0, 1 and 2. SIGPIPE and SIGINT
    /// start at their default dispositions and nothing is blocked, whatever the test runner did with them.
    static func start(_ argv: [String], stdin: Int32, stdout: Int32, stderr: Int32, fd3: Int32? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        if let fd3 { posix_spawn_file_actions_adddup2(&actions, fd3, 3) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        sigaddset(&defaults, SIGINT)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var arguments = argv.map { strdup($0) } + [nil]
        defer { arguments.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, argv[0], &actions, &attributes, &arguments, environ)
        try #require(spawned == 0, "cannot start \(argv[0]): \(String(cString: strerror(spawned)))")
        return pid
    }

    /// Waits for `pid`; with a deadline, kills it with SIGKILL if it has not ended by then and records an issue.
    static func wait(_ pid: pid_t, within deadline: Duration? = nil) -> Ended {
        var raw: Int32 = 0
        if let deadline {
            let end = ContinuousClock.now + deadline
            while waitpid(pid, &raw, WNOHANG) == 0 {
                if ContinuousClock.now > end {
                    Issue.record("pid \(pid) did not end within \(deadline)")
                    kill(pid, SIGKILL)
                    waitpid(pid, &raw, 0)
                    break
                }
                usleep(10_000)
            }
        } else {
            while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        }
        return raw & 0x7f == 0 ? Ended(status: (raw >> 8) & 0xff) : Ended(signal: raw & 0x7f)
    }

    /// Runs `argv` to the end with standard output and error in temporary files, standard input from
    /// `stdinPath` (/dev/null by default).
    static func run(_ argv: [String], stdinPath: String = "/dev/null") throws -> Ended {
        let input = open(stdinPath, O_RDONLY | O_CLOEXEC)
        try #require(input >= 0)
        defer { close(input) }
        let out = try TemporaryFile()
        let err = try TemporaryFile()
        let pid = try start(argv, stdin: input, stdout: out.fd, stderr: err.fd)
        var ended = wait(pid, within: .seconds(120))
        ended.stdout = out.contents()
        ended.stderr = String(decoding: err.contents(), as: UTF8.self)
        return ended
    }

    /// `/bin/sh -c script`, for pipelines and redirections.
    static func shell(_ script: String) throws -> Ended {
        try run(["/bin/sh", "-c", script])
    }

    /// A pipe whose ends are not inherited by children unless dup2'd into place.
    static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        try #require(Glibc.pipe(&fds) == 0)
        // pipe2 is not visible from Swift; the tests start children one at a time, so no spawn can slip in.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }
}

/// An unlinked temporary file for a child's output.
final class TemporaryFile {
    let fd: Int32

    init() throws {
        var template = Array("/tmp/baio-test-output-XXXXXX".utf8CString)
        fd = mkstemp(&template)
        try #require(fd >= 0)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        unlink(template)
    }

    deinit { close(fd) }

    func contents() -> [UInt8] {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset: off_t = 0
        while true {
            let n = pread(fd, &buffer, buffer.count, offset)
            if n <= 0 { break }
            data += buffer.prefix(n)
            offset += off_t(n)
        }
        return data
    }
}

/// `text` in single quotes for /bin/sh.
func quoted(_ text: String) -> String {
    "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
}
