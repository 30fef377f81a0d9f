// This file owns the small things every part of `baio dd` shares: its failure (GNU's message and whether
// the summary follows), its record counters, and O_DIRECT-aligned buffers.
import Glibc

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

/// Allocates `count` bytes aligned for O_DIRECT, or nil (GNU reports "memory exhausted" instead of dying).
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
