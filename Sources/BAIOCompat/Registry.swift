// This file owns libbaio's process-wide state: the table of contexts made by io_setup (by handle, the
// address of the kernel's ring), the one engine that watches every context's reads, the fork rule, and the
// BAIO_STATS report. Nothing here runs at load time: the table is a lazily initialised global, and the
// engine's poller thread starts with the first read that needs it.
import BufferedAIO
import CBufferedAIO
import Glibc
import Synchronization

/// The contexts of this process, by handle. A forked child starts with a new, empty table and no engine:
/// the kernel gives a child none of its parent's AIO contexts (the ring is not copied), the parent's
/// poller thread does not exist in the child, and the parent's locks may have been held by another of its
/// threads at the instant of the fork (measured before: 1-3 of 100 forks under a busy reader trapped).
enum Registry {
    /// The contexts in 256 small dictionaries by page number of the handle. One big dictionary would grow
    /// by doubling into allocations of megabytes, which glibc serves with mmap; a program that makes as many
    /// contexts as fs.aio-max-nr allows (libaio's harness case 20: 65,536) has used up vm.max_map_count with
    /// their rings by then, the mmap fails and Swift traps. Small tables grow on the heap.
    private final class Table: Sendable {
        let shards = Mutex<[[UInt: KernelContext]]>(Array(repeating: [:], count: 256))

        static func shard(_ key: UInt) -> Int { Int((key >> 12) & 255) }
        /// Made on first use; a failed start (no thread could be made) is retried by the next read.
        let watcher = Mutex<ResidencyWatcher?>(nil)
        /// The address of the same engine once started, read with one atomic load by every held read:
        /// the lock was two atomic read-modify-writes per read on the submit path (Benchmarks/cost-model).
        /// Not an AtomicLazyReference: its load is generic code that looks its metadata up on every call
        /// (about 780 instructions, more than the lock). `watcher` keeps the engine alive, and a table is
        /// never freed, so the unretained address stays valid.
        let started = Atomic<UInt>(0)

        static func retainedAddress() -> UInt { UInt(bitPattern: Unmanaged.passRetained(Table()).toOpaque()) }
    }

    /// The current table, retained for good: the one a child replaces is its copy of the parent's.
    private static let current = Atomic<UInt>(Table.retainedAddress())
    private static let forkHandlerInstalled = Atomic<Bool>(false)
    private static let exitReportRegistered = Atomic<Bool>(false)

    private static var table: Table {
        Unmanaged<Table>.fromOpaque(UnsafeRawPointer(bitPattern: current.load(ordering: .acquiring))!)
            .takeUnretainedValue()
    }

    static func lookup(_ handle: io_context_t?) -> KernelContext? {
        guard let handle else { return nil }
        let key = UInt(bitPattern: handle)
        return table.shards.withLock { $0[Table.shard(key)][key] }
    }

    static func insert(_ context: KernelContext) {
        if !forkHandlerInstalled.exchange(true, ordering: .acquiringAndReleasing) {
            // Runs in the child's only thread, before it can reach the registry.
            pthread_atfork(nil, nil) {
                Registry.current.store(Table.retainedAddress(), ordering: .releasing)
            }
        }
        let key = context.handle
        table.shards.withLock { $0[Table.shard(key)][key] = context }
        if StatisticsReport.destination != nil, !exitReportRegistered.exchange(true, ordering: .relaxed) {
            atexit { Registry.reportAtExit() }
        }
    }

    /// Removes the context `handle` names; false if another thread removed it first.
    static func remove(_ handle: io_context_t?) -> Bool {
        let key = UInt(bitPattern: handle)
        return table.shards.withLock { $0[Table.shard(key)].removeValue(forKey: key) } != nil
    }

    static var isEmpty: Bool { table.shards.withLock { $0.allSatisfy(\.isEmpty) } }

    /// Re-keys a context whose ring the program moved with mremap.
    static func moved(from old: UInt, to new: UInt) {
        let context: KernelContext? = table.shards.withLock { shards in
            guard let context = shards[Table.shard(old)].removeValue(forKey: old) else { return nil }
            shards[Table.shard(new)][new] = context
            return context
        }
        context?.moveHandle(to: new)
    }

    /// The engine, started on first use. Nil when its thread cannot be started; reads then go to the kernel.
    static func watcher() -> ResidencyWatcher? {
        let table = table
        let address = table.started.load(ordering: .acquiring)
        if address != 0 { return Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: address)!).takeUnretainedValue() }
        return table.watcher.withLock { watcher in
            if let watcher { return watcher }
            // The RWF_NOWAIT probe at submit copies at most probeLimit bytes; the engine must agree, or it
            // would take a probe cut short for a miss that started the next page.
            var configuration = EngineConfiguration()
            configuration.inlineCopyLimit = probeLimit
            watcher = try? ResidencyWatcher(configuration: configuration)
            if let watcher {
                table.started.store(
                    UInt(bitPattern: Unmanaged.passUnretained(watcher).toOpaque()), ordering: .releasing)
            }
            return watcher
        }
    }

    /// The engine if it was started, without starting it.
    static var startedWatcher: ResidencyWatcher? { table.watcher.withLock { $0 } }

    private static func reportAtExit() {
        // One shard at a time: a list of every context would be one large allocation, and a program that
        // made as many contexts as the kernel allows has no mappings left for it (Swift traps then).
        for shard in 0..<256 {
            let live = table.shards.withLock { Array($0[shard].values) }
            for context in live where context.owner == getpid() { context.report(when: "exit") }
        }
        StatisticsReport.reportEngine(when: "exit")
    }
}

/// `BAIO_STATS`: unset (silent, the default), `1` or `stderr` (standard error), or a file path to append to.
/// Each context writes one line at io_destroy (and at exit if still open) with its own counts; the engine,
/// shared by all of them, writes its line when the last context is destroyed and at exit.
enum StatisticsReport {
    static var destination: String? {
        guard let value = getenv("BAIO_STATS") else { return nil }
        let text = String(cString: value)
        return text.isEmpty || text == "0" ? nil : text
    }

    static func reportEngine(when moment: String) {
        guard destination != nil, let watcher = Registry.startedWatcher else { return }
        write("libbaio: pid \(getpid()) engine at \(moment): \(watcher.statistics)")
    }

    static func write(_ line: String) {
        guard let destination else { return }
        let fd: Int32
        if destination == "1" || destination == "stderr" {
            fd = STDERR_FILENO
        } else {
            fd = open(destination, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { return }
        }
        var bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if fd != STDERR_FILENO { close(fd) }
    }
}
