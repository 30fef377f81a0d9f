// This file owns the test hook below the kernel: in debug builds a test can script what the read and
// readahead wrappers of Syscalls.swift return for one file, on every thread (the poller's too), so the
// engine's stall, re-arm and back-off paths can be driven without racing the real page cache.
// Adapted from swift-system's Internals/Mocking.swift; unlike its thread-local driver, a mock here is
// keyed by the file (device and inode), because the calls it must see are made on the engine's threads
// and through the engine's own duplicates of the test's descriptor. Release builds compile none of it.
#if DEBUG
import Glibc
import Synchronization

/// One call a mocked wrapper received, as it received it.
package struct MockedCall: Sendable {
    package enum Name: Sendable, Hashable {
        case pread
        case preadv2
        case posixFadvise
        case readahead
    }

    package let name: Name
    package let fd: Int32
    /// The destination's address (0 for calls without one), to tell the caller's buffer from the
    /// poller's scratch.
    package let address: UInt
    package let count: Int
    package let offset: Int64
    /// preadv2's flags, posix_fadvise's advice; 0 otherwise.
    package let flags: Int32

    /// The destination, for a handler that does the read itself.
    package var buffer: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: address) }
}

/// What a mock makes a wrapper return.
package enum MockedResult: Sendable {
    /// Make the real call.
    case passThrough
    /// Fail with this errno: -1 and errno, or the error number for posix_fadvise.
    case fail(Int32)
    /// Return this without making the call.
    case value(Int)
}

/// A script for the calls made on one file, installed until ``remove()``.
package final class SyscallMock: Sendable {
    let device: UInt64
    let inode: UInt64
    private let handler: @Sendable (MockedCall) -> MockedResult
    private let calls = Mutex<[MockedCall.Name: Int]>([:])

    /// Installs `handler` for every mocked call on the file `fd` refers to, whichever descriptor of it
    /// the engine uses. Runs on the thread making the call; it must not call the mocked wrappers itself.
    package static func install(
        forFileOf fd: Int32, _ handler: @escaping @Sendable (MockedCall) -> MockedResult
    ) -> SyscallMock {
        var info = stat()
        precondition(fstat(fd, &info) == 0, "mocking needs an open descriptor")
        let mock = SyscallMock(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), handler: handler)
        installed.withLock { $0.append(mock) }
        active.add(1, ordering: .releasing)
        return mock
    }

    private init(device: UInt64, inode: UInt64, handler: @escaping @Sendable (MockedCall) -> MockedResult) {
        self.device = device
        self.inode = inode
        self.handler = handler
    }

    /// Stops mocking the file; its calls reach the kernel again.
    package func remove() {
        let removed = Self.installed.withLock { mocks in
            let before = mocks.count
            mocks.removeAll { $0 === self }
            return before - mocks.count
        }
        if removed > 0 { Self.active.subtract(removed, ordering: .releasing) }
    }

    /// How many calls named `name` reached the handler.
    package func count(of name: MockedCall.Name) -> Int { calls.withLock { $0[name] ?? 0 } }

    fileprivate func handle(_ call: MockedCall) -> MockedResult {
        calls.withLock { $0[call.name, default: 0] += 1 }
        return handler(call)
    }

    /// The installed mocks; ``active`` lets every wrapper skip the lock and the fstat while there are none.
    fileprivate static let installed = Mutex<[SyscallMock]>([])
    fileprivate static let active = Atomic<Int>(0)
}

/// The mocked result of a wrapper's call, or nil to make the real call. A failure sets errno and
/// returns -1.
func mockedResult(
    _ name: MockedCall.Name, _ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: Int64,
    flags: Int32 = 0
) -> Int? {
    guard SyscallMock.active.load(ordering: .acquiring) > 0 else { return nil }
    var info = stat()
    guard fstat(fd, &info) == 0 else { return nil }
    let mock = SyscallMock.installed.withLock { mocks in
        mocks.first { $0.device == UInt64(info.st_dev) && $0.inode == UInt64(info.st_ino) }
    }
    guard let mock else { return nil }
    let call = MockedCall(
        name: name, fd: fd, address: UInt(bitPattern: buffer), count: count, offset: offset, flags: flags)
    switch mock.handle(call) {
    case .passThrough: return nil
    case .value(let value): return value
    case .fail(let code):
        errno = code
        return -1
    }
}
#endif
