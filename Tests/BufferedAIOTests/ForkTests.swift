// A forked child must not inherit Swift's cached thread ids: with its parent thread's id in them, the
// runtime's once-locks hang the child and a Mutex traps, the first time two of its threads meet on one
// (fork_tid.c).
import CBufferedAIO
import Glibc
import Synchronization
import Testing

/// Initialized on first use through swift_once's slow path, which caches the calling thread's id.
private let initializedOnFirstUse = getpid()

/// Locked by this thread before the fork, and by two threads in the child.
private let sharedMutex = Mutex(0)

/// The calling thread's cached thread ids, as fork_tid.c finds them.
private func cachedThreadIDs() -> [UnsafeMutablePointer<Int32>] {
    var addresses = [UnsafeMutablePointer<Int32>?](repeating: nil, count: 512)
    let count = cbaio_swift_cached_tid_addresses(&addresses, addresses.count)
    return addresses.prefix(count).compactMap { $0 }
}

@Suite(
    "Fork",
    .enabled(
        if: cachedThreadIDs().count >= 2,
        "this build has no symbol tables to find Swift's cached thread ids in, so the fork handler does nothing"))
struct ForkTests {
    @Test("a forked child starts with Swift's thread-id caches cleared, not holding its parent thread's id")
    func childClearsInheritedThreadIDs() throws {
        // Fill both kinds of cache in this thread: a once-lock's and a Mutex's.
        _ = initializedOnFirstUse
        let mutex = Mutex(0)
        mutex.withLock { $0 += 1 }
        let caches = cachedThreadIDs()
        let me = threadID()
        #expect(caches.allSatisfy { $0.pointee == 0 || $0.pointee == me }, "a cache holds another thread's id")
        #expect(caches.count { $0.pointee == me } >= 2, "the once-lock and Mutex caches should hold this thread's id")
        let child = fork()
        try #require(child >= 0)
        if child == 0 {
            // Only async-signal-safe work in the child: the thread-locals are at the same addresses in its
            // only thread, a copy of this one, and its own thread id is its pid.
            var stale: Int32 = 0
            for cache in caches where cache.pointee != 0 && cache.pointee != getpid() { stale += 1 }
            _exit(stale)
        }
        var status: Int32 = 0
        #expect(waitpid(child, &status, 0) == child)
        #expect(status & 0x7f == 0, "the child died of signal \(status & 0x7f)")
        #expect((status >> 8) & 0xff == 0, "caches in the child still holding the parent thread's id")
    }
}

extension ForkTests {
    @Test("in a forked child, a Mutex its parent thread locked is contended by a new thread without trapping or hanging")
    func childMutexUnderContention() throws {
        sharedMutex.withLock { $0 += 1 }  // caches this thread's id for the Mutex code of this module
        let child = fork()
        try #require(child >= 0)
        if child == 0 {
            var other = pthread_t()
            let started = sharedMutex.withLock { _ -> Bool in
                // The other thread finds the lock held and waits in the kernel (FUTEX_LOCK_PI), which looks up
                // the owner by the id stored in the lock word; unlocking then goes through the kernel too.
                guard pthread_create(&other, nil, { _ in sharedMutex.withLock { $0 += 1 }; return nil }, nil) == 0 else {
                    return false
                }
                usleep(100_000)
                return true
            }
            guard started else { _exit(2) }
            pthread_join(other, nil)
            _exit(sharedMutex.withLock { $0 } == 2 ? 0 : 3)
        }
        let status = try waitWithLimit(child, seconds: 20)
        #expect(status & 0x7f == 0, "the child died of signal \(status & 0x7f), or hung and was killed")
        #expect((status >> 8) & 0xff == 0, "the child's exit status")
    }
}

/// waitpid with a limit: a child still running after `seconds` is killed (and its status says SIGKILL).
private func waitWithLimit(_ child: pid_t, seconds: Int) throws -> Int32 {
    var status: Int32 = 0
    for _ in 0..<(seconds * 100) {
        let waited = waitpid(child, &status, WNOHANG)
        if waited == child { return status }
        try #require(waited == 0)
        usleep(10_000)
    }
    kill(child, SIGKILL)
    waitpid(child, &status, 0)
    return status
}

/// The calling thread's id, from procfs ("/proc/thread-self" links to "PID/task/TID").
private func threadID() -> Int32 {
    var link = [CChar](repeating: 0, count: 64)
    let count = readlink("/proc/thread-self", &link, link.count - 1)
    guard count > 0 else { return -1 }
    let text = String(decoding: link.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return text.split(separator: "/").last.flatMap { Int32($0) } ?? -1
}
