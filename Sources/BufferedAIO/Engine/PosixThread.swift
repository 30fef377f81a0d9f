// This file owns the engine's one kind of thread: a named pthread running a closure, joined by its owner.
import CBufferedAIO
import Glibc

package enum PosixThread {
    private final class Box {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts a thread named `name` (at most 15 bytes, the kernel's limit) running `body`.
    /// The closure is handed over with one `passRetained` and taken back once, by the thread.
    package static func start(name: String, _ body: @escaping () -> Void) throws(BufferedAIOError) -> pthread_t {
        let box = Unmanaged.passRetained(Box(name: String(name.utf8.prefix(15))!, body: body))
        var thread = pthread_t()
        let result = pthread_create(
            &thread, nil,
            { argument in
                let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
                _ = cbaio_set_thread_name(box.name)
                // Sleeps of tens of microseconds must stay that short; the default slack is 50 us.
                _ = cbaio_set_timer_slack(1000)
                box.body()
                return nil
            }, box.toOpaque())
        guard result == 0 else {
            box.release()
            throw BufferedAIOError(
                .systemResource, "cannot start the \(name) thread", syscall: "pthread_create",
                errno: Errno(rawValue: result))
        }
        return thread
    }
}
