// ThreadSanitizer cannot see Synchronization.Mutex (its futex calls are in the uninstrumented standard
// library). This shows the annotation that makes it see one: __tsan_acquire on entering the locked body,
// __tsan_release on leaving it, on one address per lock (docs/robustness.md, ThreadSanitizer).
//
//   swiftc -sanitize=thread -g tsan_mutex_annotation.swift -o t && ./t         # usually 1 data race reported
//   ./t annotate                                                               # none
import Glibc
import Synchronization

@_silgen_name("__tsan_acquire") func tsanAcquire(_ address: UnsafeMutableRawPointer)
@_silgen_name("__tsan_release") func tsanRelease(_ address: UnsafeMutableRawPointer)

final class Box: @unchecked Sendable { var n = 0 }
let lock = Mutex<Int>(0)
let box = Box()
let token = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
let annotate = CommandLine.arguments.count > 1

func work() {
    for _ in 0..<20_000 {
        lock.withLock { _ in
            if annotate { tsanAcquire(token) }
            box.n += 1  // protected by the Mutex, which TSan cannot see
            if annotate { tsanRelease(token) }
        }
    }
}
var threads: [pthread_t] = []
for _ in 0..<2 {
    var thread = pthread_t()
    pthread_create(
        &thread, nil,
        { _ in
            work()
            return nil
        }, nil)
    threads.append(thread)
}
for thread in threads { pthread_join(thread, nil) }
print("count \(box.n)")
