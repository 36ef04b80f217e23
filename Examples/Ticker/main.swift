// chroma-ticker: the libasync "hello world" on Chroma. A repeating timer on the default
// color, a per-worker color doing work in parallel, stdin echoed through an fd watch, and
// Ctrl-C handled as an ordinary callback.
//
//   swift run chroma-ticker          (type a line, or wait; Ctrl-C to quit)
import ArgumentParser
import Chroma
import Glibc

/// The command line (no options) and the program. `run()` runs on the main thread and
/// returns after the fifth tick or Ctrl-C stopped the runtime.
struct ChromaTicker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chroma-ticker",
        abstract: "Chroma's hello world: five ticks, two parallel workers, stdin echoed, Ctrl-C handled.",
        discussion: "Type a line to have it echoed, or wait; it stops after five ticks or on Ctrl-C."
    )

    func run() throws {
        let runtime = try Runtime()
        try runtime.start()

        // Two workers, each on its own color: they run in parallel when there are two loops.
        for worker in 0..<2 {
            let color = runtime.makeColor()
            try runtime.execute(on: color) {
                var sum = 0
                for i in 0..<5_000_000 { sum &+= i &* i }
                print("worker \(worker) on \(color), loop \(runtime.loopIndex(of: color)): \(sum)")
            }
        }

        // A tick every second on the default color; five ticks and we stop.
        let ticks = Counter()
        try runtime.schedule(after: .seconds(1), repeating: .seconds(1)) {
            let n = ticks.increment()
            print("tick \(n)")
            if n == 5 { runtime.stop() }
        }

        // Lines typed on stdin, echoed back when stdin is readable. Registered from a `.main`
        // callback, so the handle is stored before the watch's own `.main` callbacks can run:
        // the color serializes them, no lock needed. (A regular file or /dev/null on stdin
        // cannot be watched: the typed error says so, and the ticker runs without it.)
        let stdinWatch = StdinWatch()
        try runtime.execute {
            do {
                stdinWatch.watch = try runtime.watch(STDIN_FILENO, for: .readable) { _ in
                    var buffer = [UInt8](repeating: 0, count: 256)
                    let n = read(STDIN_FILENO, &buffer, buffer.count)
                    if n > 0 {
                        print("you typed: \(String(decoding: buffer[..<n], as: UTF8.self))", terminator: "")
                    } else {
                        stdinWatch.watch?.cancel()  // end of input: stop watching, or it fires forever
                    }
                }
            } catch {
                print("not echoing stdin: \(error)")
            }
        }

        try runtime.onSignal(SIGINT) {
            print("\nSIGINT: stopping")
            runtime.stop()
        }

        let report = try runtime.run()
        print("stopped; cancelled \(report.cancelledTimers) timers and \(report.cancelledWatches) watches")
    }
}

/// Only ever touched in `.main` callbacks, which never overlap; `@unchecked` states that.
final class StdinWatch: @unchecked Sendable {
    // Safe to share: read and written only by `.main` callbacks, which run one at a time.
    var watch: Watch?
}

/// Only ever touched on `.main`'s loop, so it needs no lock; `@unchecked` states that.
final class Counter: @unchecked Sendable {
    // Safe to share: incremented only by the timer's `.main` callbacks, which run one at a time.
    private var value = 0
    func increment() -> Int { value += 1; return value }
}

ChromaTicker.main()
