// This file owns the decoding of an iocb into a buffered read the engine may hold, and the RWF_NOWAIT probe
// that tells whether its pages are resident.
//
// The rule is conservative: a read is held only if the kernel would surely accept it at io_submit, since
// a held read's final submit happens later and a refusal then could not be reported as io_submit's
// return. Anything doubtful goes to the kernel, which gives its own answer.
import BufferedAIO
import CBufferedAIO
import Glibc

/// IOCB_FLAG_RESFD (libaio.h writes the bit without naming it).
let resfdFlag: UInt32 = 1
/// UIO_MAXIOV: the kernel refuses more segments with EINVAL.
let maximumSegments = 1024
/// The kernel's MAX_RW_COUNT: longer reads are clamped.
let maximumReadCount = 0x7fff_f000
/// The RWF_NOWAIT probe at submit copies at most this much: a larger cached read is confirmed by the
/// engine's residency check instead of a copy of all of it. `BAIO_PROBE_LIMIT=0` turns the probe off, so
/// every buffered read goes through the engine, which then finds its missing pages itself: a diagnostic
/// setting, and the tests' way to be sure reads of an evicted file are held (a RWF_NOWAIT miss starts the
/// read, and with the host caching the disk it often ends inside the probe).
let probeLimit: Int = {
    guard let text = getenv("BAIO_PROBE_LIMIT"), let value = Int(String(cString: text)) else { return 256 << 10 }
    return min(max(value, 0), 1 << 20)
}()

/// NULL, `(void *)-1` and kernel addresses: what the kernel's access_ok refuses with EFAULT. An unmapped
/// user address cannot be told apart without touching it (docs/libaio-dropin.md).
@inline(__always)
func isBadUserPointer(_ pointer: UnsafeRawPointer?) -> Bool {
    guard let pointer else { return true }
    return UInt(bitPattern: pointer) >= userSpaceEnd
}

/// The lowest address no user mapping reaches on 64-bit Linux (x86-64 and arm64 with 48-bit addresses);
/// a range ending past it is refused by access_ok.
let userSpaceEnd: UInt = 0x0000_8000_0000_0000

/// A plain buffered read, decoded from an iocb the kernel would accept.
struct BufferedRead {
    let descriptor: Int32
    let facts: FileFacts
    let offset: Int64
    /// The bytes asked, clamped to MAX_RW_COUNT as the kernel clamps them.
    let length: Int
    /// The destination: one segment for IO_CMD_PREAD, the caller's iovec array for IO_CMD_PREADV.
    let buffer: UnsafeMutableRawPointer?
    let vector: UnsafePointer<iovec>?
    let segments: Int
    /// The iocb's eventfd (IOCB_FLAG_RESFD), or -1.
    let eventFD: Int32

    /// Nil unless the iocb is a read the engine may hold.
    init?(_ iocb: UnsafeMutablePointer<iocb>) {
        let cb = iocb.pointee
        let opcode = Int32(cb.aio_lio_opcode)
        let vectored = opcode == Int32(IO_CMD_PREADV.rawValue)
        guard opcode == Int32(IO_CMD_PREAD.rawValue) || vectored else { return nil }
        // RWF_* flags, I/O priorities and reserved fields: the kernel's business.
        guard cb.aio_rw_flags == 0, cb.aio_reqprio == 0, cb.u.c.flags & ~resfdFlag == 0, cb.u.c.__pad3 == 0 else {
            return nil
        }
        let offset = Int64(cb.u.c.offset)
        guard offset >= 0 else { return nil }
        if vectored {
            let count = Int(cb.u.v.nr)
            guard count > 0, count <= maximumSegments, let list = cb.u.v.vec, !isBadUserPointer(list),
                UInt(bitPattern: list) + UInt(count * MemoryLayout<iovec>.stride) <= userSpaceEnd,
                let total = Self.checkedTotal(list, count)
            else { return nil }
            vector = list
            segments = count
            buffer = nil
            length = total
        } else {
            // size_t comes into Swift as UInt here; above SSIZE_MAX the kernel says EINVAL.
            guard cb.u.c.nbytes > 0, cb.u.c.nbytes <= UInt(Int.max) else { return nil }
            let asked = min(Int(cb.u.c.nbytes), maximumReadCount)
            guard let base = cb.u.c.buf, !isBadUserPointer(base),
                UInt(bitPattern: base).addingReportingOverflow(UInt(asked)).partialValue <= userSpaceEnd
            else { return nil }
            buffer = base
            vector = nil
            segments = 1
            length = asked
        }
        guard !offset.addingReportingOverflow(Int64(length)).overflow else { return nil }

        let fd = cb.aio_fildes
        let flags = cbaio_get_status_flags(fd)
        guard flags >= 0, flags & O_ACCMODE != O_WRONLY, flags & cbaio_O_DIRECT == 0, flags & cbaio_O_PATH == 0 else {
            return nil
        }
        var info = stat()
        guard fstat(fd, &info) == 0, FileKind(info) == .regular else { return nil }
        if cb.u.c.flags & resfdFlag != 0 {
            guard Self.isEventFD(Int32(bitPattern: cb.u.c.resfd)) else { return nil }
            eventFD = Int32(bitPattern: cb.u.c.resfd)
        } else {
            eventFD = -1
        }
        descriptor = fd
        facts = FileFacts(info: info, statusFlags: flags)
        self.offset = offset
    }

    /// The segments' total, clamped to MAX_RW_COUNT as the kernel clamps it; nil if a segment is one the
    /// kernel refuses (a negative length, or memory past user space) or none has a byte to read.
    private static func checkedTotal(_ list: UnsafePointer<iovec>, _ count: Int) -> Int? {
        var total = 0
        for i in 0..<count {
            // size_t comes into Swift as Int: SIZE_MAX is -1 here.
            let length = list[i].iov_len
            guard length >= 0 else { return nil }
            if length > 0 {
                guard let base = list[i].iov_base, !isBadUserPointer(base),
                    UInt(bitPattern: base).addingReportingOverflow(UInt(length)).partialValue <= userSpaceEnd
                else { return nil }
            } else if let base = list[i].iov_base, UInt(bitPattern: base) >= userSpaceEnd {
                // access_ok refuses a kernel address even for an empty segment: the kernel's EFAULT, before
                // any byte is read (found by Fuzz/libbaio_iocb_fuzz.c: the probe had filled the others).
                return nil
            }
            total = min(maximumReadCount, total + min(length, maximumReadCount))
        }
        return total > 0 ? total : nil
    }

    private static func isEventFD(_ fd: Int32) -> Bool {
        var target = [CChar](repeating: 0, count: 64)
        let count = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
        guard count > 0 else { return false }
        let link = String(decoding: target.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return link == "anon_inode:[eventfd]"
    }

    enum Probe {
        /// Every byte is resident (or the read ends at end of file): the kernel can copy it at once.
        case resident
        /// Some page is missing: the engine holds the read. `firstCopy` is the resident prefix in bytes,
        /// or a negative errno (-EAGAIN: none; on Linux 6.12+ the miss started the first page's read).
        case missing(firstCopy: Int)
    }

    /// One preadv2(RWF_NOWAIT) of up to ``probeLimit`` bytes into the caller's own buffer: accurate for
    /// every caller (mincore is not, for files it cannot write). The kernel copies again at the final
    /// submit (its cost per cached read is not measured yet).
    func probe() -> Probe {
        let want = min(length, probeLimit)
        guard want > 0 else { return .missing(firstCopy: 0) }
        let copied: Int
        if let buffer {
            copied = cbaio_preadv2(descriptor, buffer, want, offset, cbaio_RWF_NOWAIT)
        } else {
            copied = withTruncatedVector(want) { cbaio_preadv2_vector(descriptor, $0, $1, offset, cbaio_RWF_NOWAIT) }
        }
        if copied < 0 {
            // EAGAIN: missing. EOPNOTSUPP (no RWF_NOWAIT here, as on tmpfs, where reads are memory copies)
            // and errors such as EFAULT or EIO: the kernel reads it and reports what it finds.
            return errno == EAGAIN ? .missing(firstCopy: -Int(EAGAIN)) : .resident
        }
        if copied == length { return .resident }
        // Judged by the file size, not by a short count: a read that reaches end of file is complete.
        if copied < want && offset + Int64(copied) >= Int64(facts.info.st_size) { return .resident }
        return .missing(firstCopy: copied)
    }

    /// Calls `body` with the caller's iovec array cut to `length` bytes.
    private func withTruncatedVector<R>(_ length: Int, _ body: (UnsafePointer<iovec>, Int32) -> R) -> R {
        var copy = Array(UnsafeBufferPointer(start: vector!, count: segments))
        var left = length
        var used = 0
        while used < copy.count && left > 0 {
            copy[used].iov_len = min(copy[used].iov_len, left)
            left -= copy[used].iov_len
            used += 1
        }
        return copy.withUnsafeBufferPointer { body($0.baseAddress!, Int32(max(used, 1))) }
    }

    /// A copy of the caller's iovec array for the final submit, or nil for IO_CMD_PREAD.
    func copiedVector() -> UnsafeMutableBufferPointer<iovec>? {
        guard let vector else { return nil }
        let copy = UnsafeMutableBufferPointer<iovec>.allocate(capacity: segments)
        _ = copy.initialize(from: UnsafeBufferPointer(start: vector, count: segments))
        return copy
    }
}
