import Chroma
import Foundation
import Synchronization
import XCTest

/// True when the suite runs under ThreadSanitizer (`make tsan` sets CHROMA_TSAN=1): stress
/// tests then run fewer operations, still far from trivial.
let underTSan = ProcessInfo.processInfo.environment["CHROMA_TSAN"] == "1"

/// A thread-safe counter for assertions made from callbacks.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    @discardableResult func increment(by n: Int = 1) -> Int { value.add(n, ordering: .sequentiallyConsistent).newValue }
    var current: Int { value.load(ordering: .sequentiallyConsistent) }
}

/// A lock-protected value, for recording what callbacks saw.
final class Locked<Value>: @unchecked Sendable {
    // Safe to share: `value` is only touched with `lock` held.
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
    var snapshot: Value { withLock { $0 } }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs `body` on `count` plain threads at once and waits for them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<count {
        group.enter()
        Thread.detachNewThread {
            body(i)
            group.leave()
        }
    }
    group.wait()
}

extension XCTestCase {
    /// A started runtime that the test shuts down when it ends.
    func startedRuntime(loops: Int = 2) throws -> Runtime {
        let runtime = try Runtime(loops: loops)
        try runtime.start()
        addTeardownBlock { _ = try? runtime.shutdown() }
        return runtime
    }

    /// Asserts that `body` throws exactly `expected`.
    func assertThrows<T>(_ expected: ChromaError, file: StaticString = #filePath, line: UInt = #line,
                         _ body: () throws -> T) {
        do {
            _ = try body()
            XCTFail("expected \(expected), nothing was thrown", file: file, line: line)
        } catch {
            XCTAssertEqual(error as? ChromaError, expected, file: file, line: line)
        }
    }
}

/// A semaphore with a deadline, so a test waits on the event itself and fails, rather
/// than hangs, when it never comes.
final class Signal: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func fire() { semaphore.signal() }
    /// Waits for `count` fires; false if they did not all come within `seconds`.
    func wait(count: Int = 1, seconds: Double = 20) -> Bool {
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
func waitFor<T: Sendable>(_ what: String = "a completion", seconds: Double = 20,
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

/// Calls `runtime.shutdown()` on a plain thread, so the test can wait for it with a
/// deadline; the signal fires when it returned, with its report stored.
func shutdownInBackground(_ runtime: Runtime) -> (finished: Signal, report: Locked<ShutdownReport?>) {
    let finished = Signal()
    let report = Locked<ShutdownReport?>(nil)
    Thread.detachNewThread {
        let r = try? runtime.shutdown()
        report.withLock { $0 = r }
        finished.fire()
    }
    return (finished, report)
}
