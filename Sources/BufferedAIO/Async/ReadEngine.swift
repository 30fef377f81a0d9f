// This file owns `ReadEngine`, the engine behind the async API: one shared instance per process by
// default (one poller thread for the whole process), or an explicit one with its own policies.

/// The engine that serves ``BufferedFile``'s async reads.
///
/// Most programs use ``shared``, created on first use: one poller thread for the whole process. Create
/// your own for a different ``EngineConfiguration`` (poll intervals, inline-copy limit, bypass threshold)
/// or to isolate a workload; call ``shutdown()`` when done with it.
public final class ReadEngine: Sendable {
    let engine: Engine

    /// The process-wide engine, created on first use with the default configuration.
    public static var shared: ReadEngine {
        get throws(BufferedAIOError) { try sharedEngine.get() }
    }

    private static let sharedEngine: Result<ReadEngine, BufferedAIOError> = {
        do throws(BufferedAIOError) {
            return .success(try ReadEngine(configuration: EngineConfiguration()))
        } catch {
            return .failure(error)
        }
    }()

    /// Creates an engine and starts its poller thread.
    ///
    /// - Parameter configuration: The engine's policies.
    /// - Throws: ``BufferedAIOError/Code/systemResource`` if the eventfd or the thread cannot be created.
    public init(configuration: EngineConfiguration = EngineConfiguration()) throws(BufferedAIOError) {
        engine = try Engine(configuration: configuration)
    }

    /// Stops the poller: pending reads fail with ``BufferedAIOError/Code/shutDown``, direct reads in flight
    /// are waited for, and the thread is joined. Reads started afterwards fail. Idempotent.
    public func shutdown() { engine.shutdown() }

    /// What the engine has done so far.
    public var statistics: EngineStatistics { engine.counters.snapshot() }

    /// Reads the poller held after its last pass; 0 once everything is delivered or dropped.
    package var pollerPending: Int { engine.pollerPending.load(ordering: .relaxed) }

    /// The name of the engine's poller thread, as /proc/self/task/*/comm shows it (for tests).
    package var pollerThreadName: String { engine.threadName }
}
