// This file owns `PageRun`, a run of page indices, and the one place bytes are rounded to pages and back.

/// A run of page indices `[first, first + count)`. Page rounding is written here once: bytes to pages
/// (``init(bytes:_:)``, ``page(containing:)``, ``pageCount(bytes:)``) and back (``byteStart``, ``byteEnd``).
struct PageRun: Hashable {
    var first: Int64
    var count: Int64
    var end: Int64 { first + count }

    init(first: Int64, count: Int64) {
        self.first = first
        self.count = count
    }

    /// The pages that hold the bytes `[start, end)`; `end` must be greater than `start`.
    init(bytes start: Int64, _ end: Int64) {
        first = Self.page(containing: start)
        count = Self.page(containing: end - 1) - first + 1
    }

    /// The file offset of the run's first byte.
    var byteStart: Int64 { first * Int64(systemPageSize) }
    /// The file offset just past the run's last page.
    var byteEnd: Int64 { end * Int64(systemPageSize) }

    /// The index of the page that holds the byte at `offset`.
    static func page(containing offset: Int64) -> Int64 { offset / Int64(systemPageSize) }
}

/// The pages `bytes` bytes fill, the last one partly.
func pageCount(bytes: Int) -> Int { (bytes + systemPageSize - 1) / systemPageSize }
