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
