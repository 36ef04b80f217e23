import Chroma
import Foundation
import XCTest

extension XCTestCase {
    /// A started runtime that the test shuts down when it ends.
    func startedRuntime(loops: Int = 2, pool: BlockingPool.Configuration = .init()) throws -> Runtime {
        let runtime = try Runtime(loops: loops, pool: pool)
        try runtime.start()
        addTeardownBlock { _ = try? runtime.shutdown() }
        return runtime
    }
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

extension Runtime {
    /// Runs `body` as a task preferring `color`'s executor and waits for its value.
    func spawnAndWait<T: Sendable>(on color: Color, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await Task(executorPreference: taskExecutor(for: color)) { try await body() }.value
    }
}
