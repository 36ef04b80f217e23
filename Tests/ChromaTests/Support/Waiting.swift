import Foundation

/// How long a test waits for an event before it fails: far longer than any event here takes
/// on a loaded machine under ThreadSanitizer, so only a hang reaches it.
let hangTimeout: Double = 60

/// A semaphore with a deadline, so a test waits on the event itself and fails, rather
/// than hangs, when it never comes.
final class Signal: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func fire() { semaphore.signal() }
    /// Waits for `count` fires; false if they did not all come within `seconds`.
    func wait(count: Int = 1, seconds: Double = hangTimeout) -> Bool {
        let deadline = DispatchTime.now() + seconds
        for _ in 0..<count where semaphore.wait(timeout: deadline) == .timedOut { return false }
        return true
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Calls `start` with a callback and waits (at most `seconds`) for that callback to be
/// called; returns what it was called with.
func waitFor<T: Sendable>(_ what: String = "a completion", seconds: Double = hangTimeout,
                          _ start: (@escaping @Sendable (T) -> Void) throws -> Void) throws -> T {
    let box = Locked<T?>(nil)
    let done = Signal()
    try start { value in
        box.withLock { $0 = value }
        done.fire()
    }
    guard done.wait(seconds: seconds), let value = box.snapshot else { throw TimedOut(what: what) }
    return value
}

/// Polls `condition` (a state the test cannot be told about by an event, such as a worker
/// going back to sleep) until it holds or `seconds` pass.
func waitUntil(seconds: Double = hangTimeout, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while !condition() {
        if monotonicSeconds() > deadline { return false }
        sched_yield()
    }
    return true
}
