// This file owns `baio residency`: fincore/vmtouch for one or more files (resident pages, bytes and a map
// of which parts are cached), with eviction and warming, and honest about callers mincore lies to.
import ArgumentParser
import BufferedAIO
import Glibc

struct ResidencyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "residency",
        abstract: "Show how much of each file is in the page cache, with a map; evict or warm it first.",
        discussion: """
            For each FILE prints the resident pages of the total, the resident bytes and the share, then a map \
            with one character per bucket of pages: # all resident, + partly, . none. The map is as wide as \
            the terminal (64 characters when there is none), one character per page for small files.

            Residency comes from mincore, which the kernel answers truthfully only to a caller that owns the \
            file, may write it, or is root; to anyone else it reports every page resident. baio then says \
            the residency is unknown instead of printing that map. --evict still works for such a caller \
            (POSIX_FADV_DONTNEED needs only read access) and --warm is confirmed with RWF_NOWAIT reads, which \
            tell everyone the truth.

            The exit status is 0 when every file was reported (even as unknown), 1 when any could not be \
            opened or examined.

            Examples:
              baio residency /var/lib/db/*.dat
              baio residency --evict big.iso
              baio residency --warm index.bin
              baio residency --width 40 --json f1 f2
            """)

    @Argument(help: "The files to examine.")
    var files: [String]

    @Flag(help: "Drop each file from the page cache first (fdatasync, then POSIX_FADV_DONTNEED).")
    var evict = false

    @Flag(help: "Read each file into the page cache first (readahead) and wait until every page is resident.")
    var warm = false

    @Option(help: "Characters in the map (default: the terminal's width, or 64 when there is no terminal).")
    var width: Int?

    @Flag(help: "Print one JSON object per file, one per line, instead of text.")
    var json = false

    func validate() throws {
        guard !(evict && warm) else { throw ValidationError("--evict and --warm cannot be used together") }
        if let width, width < 1 { throw ValidationError("--width must be at least 1") }
    }

    static let unknown =
        "residency unknown: the kernel reports every page resident to a caller that neither owns nor may write the file"

    func run() throws {
        let columns = width ?? Console.terminalWidth.map { max(1, $0 - 2) } ?? 64
        var failed = false
        for path in files where !report(path, columns: columns) { failed = true }
        if failed { throw ExitCode.failure }
    }

    /// Evicts or warms one file as asked and reports it; false if it could not be examined (reported).
    private func report(_ path: String, columns: Int) -> Bool {
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            Console.complain(path, errno: errno)
            return false
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            Console.complain(path, errno: errno)
            return false
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR:
            Console.complain(path, errno: EISDIR)
            return false
        default:
            Console.complain("\(path): not a regular file (a pipe, socket or device has no page cache to report)")
            return false
        }
        let size = Int64(info.st_size)
        var warmed: Int64?
        if evict { PageCache.evict(descriptor: fd) }
        if warm {
            do {
                warmed = try PageCache.warm(descriptor: fd)
            } catch {
                Console.complain(path, errno: Int32(-error.negatedErrno))
                return false
            }
        }
        let residency: PageCache.Residency?
        do {
            residency = try PageCache.residency(descriptor: fd, withMap: true)
        } catch {
            Console.complain(path, errno: Int32(-error.negatedErrno))
            return false
        }

        guard let residency else {
            if json {
                print(
                    "{\"path\": \(jsonQuoted(path)), \"bytes\": \(size), \"known\": false"
                        + (warmed.map { ", \"warmed_bytes\": \($0)" } ?? "") + "}")
            } else {
                if let warmed {
                    print(
                        "\(path): warmed \(Console.bytes(warmed)) of \(Console.bytes(size)) (confirmed with RWF_NOWAIT reads)"
                    )
                } else if evict {
                    print("\(path): evicted (POSIX_FADV_DONTNEED)")
                }
                print("\(path): \(Self.unknown)")
            }
            return true
        }
        let pageSize = Int64(sysconf(Int32(_SC_PAGESIZE)))
        var residentBytes = Int64(residency.residentPages) * pageSize
        // The last page is partly past end of file; count only the file's bytes in it.
        if residency.map.last == true { residentBytes -= Int64(residency.totalPages) * pageSize - size }
        let map = Self.map(residency.map, columns: columns)
        if json {
            print(
                "{\"path\": \(jsonQuoted(path)), \"bytes\": \(size), \"known\": true, \"pages\": \(residency.totalPages), "
                    + "\"resident_pages\": \(residency.residentPages), \"resident_bytes\": \(residentBytes), "
                    + "\"map\": \"\(map)\"}")
            return true
        }
        var line = "\(path): \(residency.residentPages)/\(residency.totalPages) pages resident "
        line += "(\(Console.bytes(residentBytes)) of \(Console.bytes(size))"
        if residency.totalPages > 0 {
            line += ", \(formatted(Double(residency.residentPages) * 100 / Double(residency.totalPages)))%"
        }
        print(line + ")")
        if !map.isEmpty { print("[\(map)]") }
        return true
    }

    /// One character per bucket of pages: `#` all resident, `+` some, `.` none; at most one per page.
    static func map(_ pages: [Bool], columns: Int) -> String {
        let count = pages.count
        guard count > 0 else { return "" }
        let width = min(columns, count)
        var text = ""
        text.reserveCapacity(width)
        for bucket in 0..<width {
            let first = bucket * count / width
            let end = (bucket + 1) * count / width
            var resident = 0
            for page in first..<end where pages[page] { resident += 1 }
            text.append(resident == end - first ? "#" : resident == 0 ? "." : "+")
        }
        return text
    }
}
