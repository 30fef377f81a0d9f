// This file owns baio's time arithmetic: a cheap monotonic clock in nanoseconds for per-read timestamps, and
// Duration to seconds for rates and printed times.
import Glibc

/// CLOCK_MONOTONIC in nanoseconds: per-read timestamps without Duration's 128-bit arithmetic, which showed
/// as about 2.5 % of a cached QD1 profile (perf record of baio bench --queue-depth 1 on a pinned file).
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// `duration` in seconds, for rates and printed times.
func secondsOf(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
