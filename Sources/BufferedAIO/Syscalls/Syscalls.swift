// This file is the one funnel to the kernel: every libc, libaio and raw syscall the engine makes goes
// through a `system_<cname>` wrapper here, so the errno policy lives in one place. Each wrapper returns the
// raw C result (-1 and errno, or the error number where the C function returns it). In debug builds the
// read and readahead wrappers first ask the test hook in Mocking.swift.
import CBufferedAIO
import Glibc

/// Runs `call` until it stops failing with EINTR and returns its raw result.
///
/// Every blocking call we make is restartable, so EINTR is never surfaced: a signal handler the caller
/// installed must not turn into a spurious I/O error in an event.
@inline(__always)
func retryingOnInterrupt<I: FixedWidthInteger>(_ call: () -> I) -> I {
    while true {
        let result = call()
        if result == -1 && errno == EINTR { continue }
        return result
    }
}

// MARK: - Reads

func system_pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: Int64) -> Int {
    #if DEBUG
    if let mocked = mockedResult(.pread, fd, buffer, count, offset) { return mocked }
    #endif
    return retryingOnInterrupt { pread(fd, buffer, count, off_t(offset)) }
}

func system_preadv2(
    _ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: Int64, _ flags: Int32
) -> Int {
    #if DEBUG
    if let mocked = mockedResult(.preadv2, fd, buffer, count, offset, flags: flags) { return mocked }
    #endif
    return retryingOnInterrupt { cbaio_preadv2(fd, buffer, count, offset, flags) }
}

// MARK: - Residency and readahead

func system_posix_fadvise(_ fd: Int32, _ offset: Int64, _ length: Int64, _ advice: Int32) -> Int32 {
    // posix_fadvise returns the error number instead of setting errno.
    #if DEBUG
    if let mocked = mockedResult(.posixFadvise, fd, nil, Int(length), offset, flags: advice) {
        return mocked < 0 ? errno : Int32(mocked)
    }
    #endif
    return posix_fadvise(fd, off_t(offset), off_t(length), advice)
}

func system_readahead(_ fd: Int32, _ offset: Int64, _ count: Int) -> Int {
    #if DEBUG
    if let mocked = mockedResult(.readahead, fd, nil, count, offset) { return mocked }
    #endif
    return cbaio_readahead(fd, offset, count)
}

func system_mincore(_ address: UnsafeMutableRawPointer, _ length: Int, _ vector: UnsafeMutablePointer<UInt8>) -> Int32 {
    mincore(address, length, vector)
}

func system_mmap(_ length: Int, _ fd: Int32) -> UnsafeMutableRawPointer? {
    let address = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0)
    return address == MAP_FAILED ? nil : address
}

func system_munmap(_ address: UnsafeMutableRawPointer, _ length: Int) -> Int32 {
    munmap(address, length)
}

func system_cachestat(_ fd: Int32, _ offset: UInt64, _ length: UInt64, _ out: inout cbaio_cachestat) -> Int32 {
    cbaio_cachestat(fd, offset, length, &out)
}

func system_lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> Int64 {
    Int64(lseek(fd, off_t(offset), whence))
}

// MARK: - Descriptors

func system_fstat(_ fd: Int32, _ buffer: inout stat) -> Int32 {
    fstat(fd, &buffer)
}

func system_fdatasync(_ fd: Int32) -> Int32 {
    retryingOnInterrupt { fdatasync(fd) }
}

func system_dup_cloexec(_ fd: Int32) -> Int32 {
    cbaio_dup_cloexec(fd)
}

func system_fcntl_getfl(_ fd: Int32) -> Int32 {
    cbaio_get_status_flags(fd)
}

func system_open(_ path: String, _ flags: Int32) -> Int32 {
    retryingOnInterrupt { open(path, flags | O_CLOEXEC) }
}

func system_close(_ fd: Int32) -> Int32 {
    // EINTR from close must not be retried on Linux: the descriptor is already gone.
    close(fd)
}

func system_dio_alignment(_ fd: Int32, _ memory: inout UInt32, _ offset: inout UInt32) -> Int32 {
    cbaio_dio_alignment(fd, &memory, &offset)
}

func system_write(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int {
    retryingOnInterrupt { write(fd, buffer, count) }
}

// MARK: - Memory

/// Memory aligned for O_DIRECT, or nil; posix_memalign returns the error number instead of setting errno.
func system_posix_memalign(_ alignment: Int, _ length: Int) -> UnsafeMutableRawPointer? {
    var pointer: UnsafeMutableRawPointer? = nil
    return posix_memalign(&pointer, alignment, length) == 0 ? pointer : nil
}

// MARK: - Event descriptors and waiting

/// A non-blocking, close-on-exec eventfd.
func system_eventfd() -> Int32 {
    cbaio_eventfd()
}

func system_eventfd_signal(_ fd: Int32) {
    var one: UInt64 = 1
    _ = retryingOnInterrupt { write(fd, &one, 8) }
}

/// Resets an EFD_NONBLOCK eventfd to zero; EAGAIN (already zero) is the normal outcome.
func system_eventfd_drain(_ fd: Int32) {
    var value: UInt64 = 0
    _ = retryingOnInterrupt { read(fd, &value, 8) }
}

/// Waits until `fd` is readable or `timeout` passes (nil waits forever). Returns true if readable.
/// An EINTR wakes it early, which every caller treats like a timeout and re-checks its state.
func system_ppoll_readable(_ fd: Int32, timeout: Duration?) -> Bool {
    guard let timeout else { return cbaio_wait_readable(fd, -1) == 1 }
    let (seconds, attoseconds) = timeout.components
    let nanoseconds = max(0, seconds) &* 1_000_000_000 &+ max(0, attoseconds / 1_000_000_000)
    return cbaio_wait_readable(fd, nanoseconds) == 1
}

// MARK: - Kernel AIO
// Raw system calls, not libaio's functions: in libBAIOCompat.so (or with it preloaded) the io_* names
// resolve to libbaio's exports, which would send the engine's own direct reads back into libbaio.

func system_io_setup(_ events: Int32, _ context: inout io_context_t?) -> Int32 {
    Int32(cbaio_sys_io_setup(UInt32(bitPattern: events), &context))
}

func system_io_destroy(_ context: io_context_t) -> Int32 {
    Int32(cbaio_sys_io_destroy(context))
}

func system_io_submit(
    _ context: io_context_t, _ count: Int, _ iocbs: UnsafeMutablePointer<UnsafeMutablePointer<iocb>?>
) -> Int32 {
    Int32(cbaio_sys_io_submit(context, count, iocbs))
}

func system_io_getevents(
    _ context: io_context_t, _ minimum: Int, _ maximum: Int, _ events: UnsafeMutablePointer<io_event>,
    _ timeout: UnsafeMutablePointer<timespec>?
) -> Int32 {
    Int32(cbaio_sys_io_getevents(context, minimum, maximum, events, timeout))
}

// MARK: - Threads

func system_sched_yield() {
    _ = sched_yield()
}

// MARK: - Process facts

func system_geteuid() -> uid_t { geteuid() }

func system_getegid() -> gid_t { getegid() }

/// The caller's supplementary groups (getgroups(2) asked twice: for the count, then for the list).
func system_getgroups() -> [gid_t] {
    let count = getgroups(0, nil)
    guard count > 0 else { return [] }
    var groups = [gid_t](repeating: 0, count: Int(count))
    let got = getgroups(count, &groups)
    return got > 0 ? Array(groups.prefix(Int(got))) : []
}

/// The running kernel's release string, such as "6.12.8-amd64"; empty if uname fails.
func system_uname_release() -> String {
    var names = utsname()
    guard uname(&names) == 0 else { return "" }
    return withUnsafeBytes(of: &names.release) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

let systemPageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))
