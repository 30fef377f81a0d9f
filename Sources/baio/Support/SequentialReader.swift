// This file owns `SequentialReader`, the read side `baio cat` and `baio dd` share: a byte range of a regular
// file read through an IOContext and handed out in file order, with a window of reads ahead of the writer.
import BufferedAIO
import Glibc

/// A byte range `[start, end)` of a regular file, read through an ``IOContext`` in chunks and handed to the
/// consumer in file order.
///
/// Cached data is read one chunk at a time into one buffer, as cat and dd do: the read finishes inside
/// `submit`. The first time the next chunk is found still being read, the window opens: the reads in flight
/// double, up to a ring of `ring` buffers, and WILLNEED keeps `window` bytes of the file being read into the
/// page cache ahead of them. The kernel's own readahead ramps up per read(2) call; this way the device queue
/// stays full from the first miss on. The buffers stay few, so the copies land in memory still in the CPU
/// cache: a ring of 32 one-MiB buffers, each filled by its own read, measured 2.1 s against 0.97 s for 4
/// buffers (docs/cli.md). Direct reads do not go through the cache, so for them the ring is the window.
final class SequentialReader {
    /// Bytes read ahead of the consumer once the window is open (docs/cli.md: how it was chosen).
    static let defaultWindow = 32 << 20
    /// Buffers in the ring for buffered reads.
    static let defaultRing = 4

    let source: ReadRequest.Source
    let context: IOContext
    let mode: ReadMode
    let chunk: Int
    /// The most chunks in flight: the ring's size (smaller if memory ran out while it grew).
    private(set) var ring: Int
    /// The chunks the window holds.
    private let depth: Int
    private let window: Int
    /// Chunks wanted ahead now: one at first, doubled each time the consumer finds the next chunk not yet
    /// read, up to ``depth``; at most ``ring`` of them are reads in flight, WILLNEED covers the rest.
    private var target = 1
    /// The window is open: WILLNEED keeps ``window`` bytes ahead of the reads.
    private var prefetching = false
    private var advisedUpTo: Int64 = 0
    /// The buffered descriptor, for WILLNEED.
    private let descriptor: Int32
    /// Buffers allocated so far (at most ``ring``); a read's tag is its slot.
    private var slots: [UnsafeMutableRawBufferPointer] = []
    private var free: [Int] = []
    /// Slots with reads in flight or done and not yet consumed, in file order.
    private var order: [Int] = []
    /// What each slot's read returned; nil while pending.
    private var results: [Result<Int, BufferedAIOError>?] = []
    private var requested: [Int] = []
    private var offsets: [Int64] = []
    /// Reads submitted whose events have not been collected: a buffer is freed only when this is 0.
    private var outstanding = 0
    private var nextOffset: Int64
    /// Where the range ends: earlier than asked if the file turned out shorter (it shrank meanwhile).
    private(set) var end: Int64
    private var lent: Int?

    /// The ring a reader of `chunk`-byte reads uses in `mode`, for sizing the context it is given.
    static func ring(chunk: Int, mode: ReadMode, window: Int = defaultWindow, buffers: Int = defaultRing) -> Int {
        let depth = depth(chunk: chunk, window: window)
        return mode == .direct ? depth : min(depth, buffers)
    }

    private static func depth(chunk: Int, window: Int) -> Int {
        // Two chunks at least so reading overlaps writing; one if a chunk alone is huge (bs=1G), as GNU dd
        // would hold only one buffer of it.
        chunk >= 256 << 20 ? 1 : max(2, window / max(chunk, 1))
    }

    /// - Parameters:
    ///   - context: Where the reads go; its capacity must be at least ``ring(chunk:mode:window:buffers:)``.
    ///     Several readers may use it one after another: ``close()`` collects every event of its reads.
    ///   - chunk: Bytes per read.
    ///   - buffers: The ring's size for buffered reads.
    init(
        _ source: ReadRequest.Source, context: IOContext, from start: Int64, to end: Int64, chunk: Int,
        mode: ReadMode = .buffered, window: Int = defaultWindow, buffers: Int = defaultRing
    ) {
        self.source = source
        self.context = context
        self.mode = mode
        self.chunk = chunk
        self.window = window
        depth = Self.depth(chunk: chunk, window: window)
        ring = Self.ring(chunk: chunk, mode: mode, window: window, buffers: buffers)
        precondition(context.capacity >= ring, "the context holds fewer reads than the ring")
        switch source {
        case .descriptor(let fd): descriptor = fd
        case .file(let file): descriptor = file.descriptor ?? -1
        }
        nextOffset = start
        self.end = end
    }

    deinit { close() }

    /// Advises the window ahead, then submits reads until ``target`` (at most ``ring``) are in flight,
    /// allocating buffers as the ring grows.
    private func fill() throws(BufferedAIOError) {
        if prefetching {
            // In steps of at most 2 MiB: one WILLNEED reads at most one readahead window.
            advisedUpTo = max(advisedUpTo, nextOffset)
            let limit = min(end, nextOffset + Int64(window))
            while advisedUpTo < limit {
                let length = min(Int64(2 << 20), limit - advisedUpTo)
                _ = posix_fadvise(descriptor, off_t(advisedUpTo), off_t(length), POSIX_FADV_WILLNEED)
                advisedUpTo += length
            }
        }
        while order.count < min(target, ring) && nextOffset < end {
            let slot: Int
            if let reused = free.popLast() {
                slot = reused
            } else if slots.count < ring, let buffer = try allocateSlot() {
                slots.append(buffer)
                results.append(nil)
                requested.append(0)
                offsets.append(0)
                slot = slots.count - 1
            } else {
                return
            }
            try submit(slot)
        }
    }

    /// A buffer for one read: never larger than the range holds (`bs=16G` over a small file allocates the
    /// file's size), allocated fallibly. Nil if memory ran out with buffers already in the ring, which then
    /// stops growing; an error if there is none.
    private func allocateSlot() throws(BufferedAIOError) -> UnsafeMutableRawBufferPointer? {
        let range = end - nextOffset
        let pages = range / 4096 + (range % 4096 == 0 ? 0 : 1)
        let size = Int(min(Int64(chunk), max(pages, 1) * 4096))
        var pointer: UnsafeMutableRawPointer?
        if posix_memalign(&pointer, 4096, size) == 0, let pointer {
            return UnsafeMutableRawBufferPointer(start: pointer, count: size)
        }
        guard slots.isEmpty else {
            ring = slots.count
            return nil
        }
        throw BufferedAIOError(
            .systemResource, "cannot allocate a read buffer of \(size) bytes", errno: Errno(rawValue: ENOMEM))
    }

    private func submit(_ slot: Int) throws(BufferedAIOError) {
        let length = Int(min(Int64(chunk), end - nextOffset))
        let request = ReadRequest(
            source, offset: nextOffset, length: length, into: slots[slot], tag: UInt64(slot), mode: mode)
        do {
            try context.submit(request)
        } catch {
            free.append(slot)
            throw error
        }
        outstanding += 1
        results[slot] = nil
        requested[slot] = length
        offsets[slot] = nextOffset
        order.append(slot)
        nextOffset += Int64(length)
    }

    /// The next chunk in file order, valid until the next call; nil at the end of the range or the file.
    /// The chunk handed out before is read again (its buffer refilled) first, so no buffer is allocated once
    /// the ring is full.
    ///
    /// - Throws: The read's error; the reader is then finished (call ``close()``).
    func next() throws(BufferedAIOError) -> UnsafeRawBufferPointer? {
        if let previous = lent {
            lent = nil
            free.append(previous)
        }
        try fill()
        guard let slot = order.first else { return nil }
        if results[slot] == nil && target < depth {
            // Reads of cached data are done inside submit; their events only need collecting.
            try collect(minimum: 0)
            if results[slot] == nil {
                // The next chunk is still being read: the data comes from the device, so read further ahead.
                target = min(depth, target * 2)
                if target > ring { prefetching = true }
                try fill()
            }
        }
        while results[slot] == nil { try collect(minimum: 1) }
        order.removeFirst()
        lent = slot
        let count = try results[slot]!.get()
        if count < requested[slot] {
            // A short count is not yet the end: the file may have shrunk, or the read met an I/O error after
            // its first page (pread's short count). As a read(2) loop does, read again from where it stopped:
            // 0 bytes there is the end, an error is the error (issue 13: `baio dd` took EIO for the end).
            dropReadsAhead()
            nextOffset = offsets[slot] + Int64(count)
            if count == 0 { end = nextOffset }
        }
        guard count > 0 else { return nil }
        return UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(slots[slot])[0..<count])
    }

    /// Cancels and collects the reads after the chunk just handed out, and frees their buffers.
    private func dropReadsAhead() {
        for slot in order where results[slot] == nil { context.cancel(tag: UInt64(slot)) }
        do {
            while order.contains(where: { results[$0] == nil }) { try collect(minimum: 1) }
        } catch {
            order.removeAll()  // the context is gone: leave those buffers out of the ring
            return
        }
        free.append(contentsOf: order)
        order.removeAll()
    }

    private func collect(minimum: Int) throws(BufferedAIOError) {
        for event in try context.getEvents(minimum: minimum, maximum: ring) {
            results[Int(event.tag)] = event.result
            outstanding -= 1
        }
    }

    /// Cancels the reads still waiting for pages, collects every event of this reader's reads (a direct read
    /// the kernel is doing is waited for), then frees the buffers, which nothing can write any more.
    /// Idempotent; the context stays open for the next reader.
    func close() {
        if outstanding > 0 {
            for slot in order where results[slot] == nil { context.cancel(tag: UInt64(slot)) }
            while outstanding > 0 {
                guard let events = try? context.getEvents(minimum: 1, maximum: ring), !events.isEmpty else { break }
                outstanding -= events.count
            }
        }
        // A context closed under us has dropped its reads (io_destroy's contract): the buffers are free.
        slots.forEach { $0.deallocate() }
        slots = []
        order = []
        free = []
    }
}
