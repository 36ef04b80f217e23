@testable import Chroma
import Foundation
import XCTest

/// Shutdown and the pool: calls that would wait for themselves are refused, and pool work
/// that waits for a loop event does not deadlock shutdown.
final class BlockingPoolShutdownTests: XCTestCase {
    func testShutdownFromPoolWorkIsRefused() throws {
        let runtime = try startedRuntime()
        let error = try waitFor { (done: @escaping @Sendable (ChromaError?) -> Void) in
            try runtime.blocking(on: Color(1), { () -> ChromaError? in
                do throws(ChromaError) {
                    try runtime.shutdown()
                    return nil
                } catch {
                    return error
                }
            }, completion: { done((try? $0.get()) ?? nil) })
        }
        XCTAssertEqual(error, .invalidState(operation: "Runtime.shutdown",
                                            reason: "called from blocking-pool work, which shutdown waits for; call stop()"))
    }

    /// A job still running at shutdown that waits for a timer: the loops keep dispatching
    /// while they wait for the pool's last completions, so the timer fires, the job ends,
    /// its completion runs, and shutdown returns. (A loop that blocked while waiting would
    /// never fire the timer: the job would time out and report false.)
    func testRunningJobThatWaitsForATimerDoesNotDeadlockShutdown() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        let started = Signal()
        let timerFired = Signal()
        let outcome = Locked<Bool?>(nil)
        try runtime.schedule(after: .milliseconds(300), on: Color(0)) { timerFired.fire() }
        try runtime.blocking(on: Color(1), {
            started.fire()
            return timerFired.wait()
        }, completion: { result in outcome.withLock { $0 = try? result.get() } })
        XCTAssertTrue(started.wait())
        let (finished, report) = shutdownInBackground(runtime)
        XCTAssertTrue(finished.wait(seconds: 2 * hangTimeout), "shutdown returned")
        XCTAssertEqual(outcome.snapshot, true, "the timer fired while shutdown waited for the job, and its completion ran")
        XCTAssertEqual(report.snapshot?.cancelledTimers, 0, "the timer had fired, not been cancelled")
    }

    /// User work may wait for an earlier job's completion: the worker posts the
    /// completions it holds before running it, so this cannot deadlock on one worker.
    func testWorkMayWaitForAnEarlierCompletionOnOneWorker() throws {
        let runtime = try Runtime(loops: 1, pool: .init(workers: 1))
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let aCompleted = Signal()
        let gate = Signal()
        let started = Signal()
        // Hold the worker so A and B queue behind it, then run back to back.
        try runtime.blocking(on: Color(0), lane: .short, { started.fire(); _ = gate.wait() }, completion: { _ in })
        XCTAssertTrue(started.wait())
        try runtime.files.stat("/", on: Color(0)) { _ in aCompleted.fire() }
        let bResult = Locked<Bool?>(nil)
        let bDone = Signal()
        try runtime.blocking(on: Color(0), lane: .short, { aCompleted.wait() },
                             completion: { result in bResult.withLock { $0 = try? result.get() }; bDone.fire() })
        gate.fire()
        XCTAssertTrue(bDone.wait(seconds: 2 * hangTimeout))
        XCTAssertEqual(bResult.snapshot, true, "A's completion was posted before B ran")
    }

    /// Cancelled jobs behind a capped long lane are swept out of the queue rather than
    /// piling up.
    func testCancelledJobsDoNotPileUp() throws {
        let runtime = try Runtime(loops: 1, pool: .init(workers: 2, longLaneWorkers: 1))
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let gate = Signal()
        let started = Signal()
        try runtime.blocking(on: Color(0), lane: .long, { started.fire(); _ = gate.wait() }, completion: { _ in })
        XCTAssertTrue(started.wait())
        let cancelled = Signal()
        let rounds = 2000
        for _ in 0..<rounds {
            let job = try runtime.blocking(on: Color(0), lane: .long, { XCTFail("a cancelled job ran") }, completion: { result in
                if case .failure(let error) = result, error as? ChromaError == .cancelled(operation: "blocking") { cancelled.fire() }
            })
            XCTAssertTrue(job.cancel())
        }
        XCTAssertTrue(cancelled.wait(count: rounds))
        XCTAssertLessThanOrEqual(runtime.pool.storedJobs, 130, "tombstones were swept")
        gate.fire()
    }

    func testFilesBeforeStartAreRefused() throws {
        let runtime = try Runtime(loops: 1)
        assertThrows(.invalidState(operation: "stat", reason: "the runtime is not started; call start() first")) {
            try runtime.files.stat("/") { _ in XCTFail("never completes") }
        }
        runtime.stop()
        assertThrows(.shutDown(operation: "read")) {
            try runtime.files.read("/etc/hostname") { _ in XCTFail("never completes") }
        }
    }
}
