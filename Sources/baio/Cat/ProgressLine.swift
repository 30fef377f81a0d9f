// This file owns `baio cat --progress`'s line on standard error: bytes, percentage and rate, redrawn at most
// four times a second, fitted to the terminal's width and removed before messages and at the end of a file.
import Glibc

/// The progress line on standard error: bytes copied of the file's size and the rate, refreshed in place
/// at most four times a second, and only once a copy has taken half a second (a short copy stays silent).
/// With `--progress` it is drawn at once and its final state is kept as a line of its own, for logs.
struct ProgressLine {
    let enabled: Bool
    let forced: Bool
    let terminal: Bool
    private var name = ""
    private var total: Int64?
    private var done: Int64 = 0
    private var started = ContinuousClock.now
    private var lastDrawn = ContinuousClock.now
    private var drawn = false

    init(forced: Bool?) {
        terminal = isatty(2) == 1
        self.forced = forced == true
        enabled = forced ?? terminal
    }

    mutating func begin(_ name: String, total: Int64?) {
        self.name = name
        self.total = total
        done = 0
        started = .now
        lastDrawn = started
        drawn = false
    }

    mutating func add(_ count: Int) {
        done += Int64(count)
        guard enabled else { return }
        let now = ContinuousClock.now
        guard now - lastDrawn >= .milliseconds(250), forced || now - started >= .milliseconds(500) else { return }
        draw(now)
    }

    mutating func end() {
        guard enabled else { return }
        if forced && !terminal {
            draw(.now)
            Console.writeAll(2, "\n")
            drawn = false
        } else {
            clear()
        }
    }

    /// Removes the line, before a message or at the end of a file.
    mutating func clear() {
        guard drawn else { return }
        Console.writeAll(2, terminal ? "\r\u{1B}[K" : "\n")
        drawn = false
    }

    private mutating func draw(_ now: ContinuousClock.Instant) {
        lastDrawn = now
        let seconds = secondsOf(now - started)
        var figures = Console.bytes(done)
        if let total, total > 0 {
            figures += " of \(Console.bytes(total)) (\(Int(Double(done) * 100 / Double(total)))%)"
        }
        if seconds > 0 { figures += ", \(formatted(Double(done) / seconds / 1_048_576)) MiB/s" }
        // A line wider than the terminal wraps, and \r would then redraw only its last row: shorten the name
        // (keeping its end, the file's own name), then the figures.
        var shown = name
        var line = "baio: \(shown): \(figures)"
        if terminal, let width = Console.terminalWidth, line.count >= width {
            let room = width - 1 - (line.count - shown.count)
            shown = room > 3 ? "..." + String(shown.suffix(room - 3)) : ""
            line = String("baio: \(shown): \(figures)".prefix(width - 1))
        }
        Console.writeAll(2, "\r" + line + (terminal ? "\u{1B}[K" : ""))
        drawn = true
    }
}
