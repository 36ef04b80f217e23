@testable import Chroma
import CChroma
import Foundation
import XCTest

/// The blocking pool: completions on the submitting color, a bounded queue that answers
/// `overloaded`, cancellation, wake-one workers, the long-lane cap, and shutdown with
/// exactly one completion per job (guarantee 5, and 4 for pool jobs).
final class BlockingPoolTests: XCTestCase {
    private func runtime(loops: Int = 2, pool: BlockingPool.Configuration) throws -> Runtime {
        let runtime = try Runtime(loops: loops, pool: pool)
        try runtime.start()
        addTeardownBlock { _ = try? runtime.shutdown() }
        return runtime
    }

    func testWorkRunsOnAWorkerAndCompletesOnTheSubmittingColor() throws {
        let runtime = try startedRuntime(loops: 2)
        for raw in [UInt64(0), 1, 7, 1 << 40] {
            let color = Color(raw)
            let seen = try waitFor { (done: @escaping @Sendable ((Bool, Color?, Int)) -> Void) in
                try runtime.blocking(on: color) {
                    // A pool thread: no loop, no color.
                    (Runtime.current == nil && Color.current == nil) ? 42 : -1
                } completion: { result in
                    done((Runtime.current === runtime, Color.current, (try? result.get()) ?? -2))
                }
            }
            XCTAssertTrue(seen.0, "the completion runs on a loop of the runtime")
            XCTAssertEqual(seen.1, color, "the completion runs on the submitting color")
            XCTAssertEqual(seen.2, 42, "the work ran on a pool thread, outside every color")
        }
    }

    func testDefaultColorIsTheCallersColor() throws {
        let runtime = try startedRuntime(loops: 2)
        let color = Color(5)
        let seen = try waitFor { (done: @escaping @Sendable (Color?) -> Void) in
            try runtime.execute(on: color) {
                try! runtime.blocking { 1 } completion: { _ in done(Color.current) }
            }
        }
        XCTAssertEqual(seen, color)
    }

    func testErrorsThrownByWorkReachTheCompletion() throws {
        struct Boom: Error, Equatable {}
        let runtime = try startedRuntime()
        let result = try waitFor { (done: @escaping @Sendable (Result<Int, any Error>) -> Void) in
            try runtime.blocking(on: Color(1), { () throws -> Int in throw Boom() }, completion: done)
        }
        XCTAssertThrowsError(try result.get()) { XCTAssertEqual($0 as? Boom, Boom()) }
    }

    /// A full queue completes each extra job at once with `overloaded`; nothing blocks and
    /// every job gets exactly one completion.
    func testOverloadCompletesEveryJobExactlyOnce() throws {
        let capacity = 4
        let runtime = try runtime(pool: .init(workers: 1, queueCapacity: capacity))
        let gate = Signal()
        let started = Signal()
        let completions = Locked<[Int: Int]>([:])
        let overloaded = Counter()
        let succeeded = Counter()
        let allDone = Signal()
        let flood = underTSan ? 500 : 2000
        @Sendable func record(_ id: Int, _ result: Result<Int, any Error>) {
            completions.withLock { $0[id, default: 0] += 1 }
            switch result {
            case .success(let value):
                XCTAssertEqual(value, id)
                succeeded.increment()
            case .failure(let error):
                XCTAssertEqual(error as? ChromaError, .overloaded(operation: "blocking", capacity: capacity))
                overloaded.increment()
            }
            allDone.fire()
        }
        // Job 0 holds the only worker until the gate opens.
        try runtime.blocking(on: Color(0), lane: .short) {
            started.fire()
            XCTAssertTrue(gate.wait(), "the gate opened")
            return 0
        } completion: { record(0, $0) }
        XCTAssertTrue(started.wait())
        for id in 1...flood {
            try runtime.blocking(on: Color(UInt64(id % 7)), lane: .short, { id }, completion: { record(id, $0) })
        }
        // The refused jobs complete while the worker is still held: overload never waits.
        XCTAssertTrue(allDone.wait(count: flood - capacity), "every overloaded job completed at once")
        XCTAssertEqual(overloaded.current, flood - capacity)
        XCTAssertEqual(succeeded.current, 0)
        gate.fire()
        XCTAssertTrue(allDone.wait(count: capacity + 1), "the queued jobs and the blocker completed")
        XCTAssertEqual(succeeded.current, capacity + 1)
        let counts = completions.snapshot
        XCTAssertEqual(counts.count, flood + 1, "every job completed")
        XCTAssertTrue(counts.values.allSatisfy { $0 == 1 }, "no job completed twice")
    }

    func testCancelledQueuedJobsReportCancelledAndNeverRun() throws {
        let runtime = try runtime(pool: .init(workers: 1))
        let gate = Signal()
        let started = Signal()
        let ran = Locked<Set<Int>>([])
        let results = Locked<[Int: String]>([:])
        let done = Signal()
        let blocker = try runtime.blocking(on: Color(1), lane: .short) {
            started.fire()
            XCTAssertTrue(gate.wait())
            return -1
        } completion: { _ in done.fire() }
        XCTAssertTrue(started.wait())
        var jobs: [BlockingJob] = []
        for id in 0..<10 {
            jobs.append(try runtime.blocking(on: Color(UInt64(id)), lane: .short) {
                ran.withLock { _ = $0.insert(id) }
                return id
            } completion: { result in
                results.withLock {
                    switch result {
                    case .success: $0[id] = "ran"
                    case .failure(let error): $0[id] = (error as? ChromaError) == .cancelled(operation: "blocking") ? "cancelled" : "\(error)"
                    }
                }
                done.fire()
            })
        }
        XCTAssertFalse(blocker.cancel(), "a running job cannot be cancelled")
        for id in stride(from: 0, to: 10, by: 2) {
            XCTAssertTrue(jobs[id].cancel(), "job \(id) was still queued")
            XCTAssertFalse(jobs[id].cancel(), "a job is cancelled once")
        }
        // Cancelled completions arrive while the worker is still held.
        XCTAssertTrue(done.wait(count: 5))
        XCTAssertEqual(Set(results.snapshot.keys), Set(stride(from: 0, to: 10, by: 2)))
        gate.fire()
        XCTAssertTrue(done.wait(count: 6))
        let final = results.snapshot
        for id in 0..<10 {
            XCTAssertEqual(final[id], id % 2 == 0 ? "cancelled" : "ran", "job \(id)")
        }
        XCTAssertEqual(ran.snapshot, Set([1, 3, 5, 7, 9]), "cancelled jobs never ran")
        XCTAssertFalse(jobs[1].cancel(), "a finished job cannot be cancelled")
    }

    /// Wake-one: with every worker asleep, each new job wakes exactly one of them.
    func testEachJobWakesOneIdleWorkerNotAHerd() throws {
        let workers = 4
        let runtime = try runtime(pool: .init(workers: workers))
        // Start all four workers: hold each with a gate until all exist.
        let gate = Signal()
        let started = Signal()
        let done = Signal()
        for _ in 0..<workers {
            try runtime.blocking(on: Color(1), lane: .short, {
                started.fire()
                XCTAssertTrue(gate.wait())
            }, completion: { _ in done.fire() })
        }
        XCTAssertTrue(started.wait(count: workers))
        XCTAssertEqual(runtime.pool.workerCount, workers)
        for _ in 0..<workers { gate.fire() }
        XCTAssertTrue(done.wait(count: workers))
        XCTAssertTrue(waitUntil { runtime.pool.idleWorkers == workers }, "every worker went to sleep")
        let before = runtime.pool.workerWakeups
        let jobs = 50
        for _ in 0..<jobs {
            try runtime.blocking(on: Color(1), lane: .short, {}, completion: { _ in done.fire() })
            XCTAssertTrue(done.wait())
            XCTAssertTrue(waitUntil { runtime.pool.idleWorkers == workers })
        }
        XCTAssertEqual(runtime.pool.workerWakeups - before, jobs, "one wakeup per job, with \(workers) workers asleep")
        XCTAssertEqual(runtime.pool.workerCount, workers, "no extra workers were started")
    }

    /// Long jobs cannot occupy the whole pool: with the long lane capped at one worker of
    /// two, a short job completes while long ones hold their worker and wait in the queue.
    func testShortJobsAreServedWhileLongJobsHoldTheirCap() throws {
        let runtime = try runtime(pool: .init(workers: 2, longLaneWorkers: 1))
        let gate = Signal()
        let longStarted = Signal()
        let longDone = Signal()
        for _ in 0..<3 {
            try runtime.blocking(on: Color(1), lane: .long, {
                longStarted.fire()
                XCTAssertTrue(gate.wait())
            }, completion: { _ in longDone.fire() })
        }
        XCTAssertTrue(longStarted.wait())
        for i in 0..<20 {
            let value = try waitFor("short job \(i)") { (done: @escaping @Sendable (Int) -> Void) in
                try runtime.blocking(on: Color(2), lane: .short, { i }, completion: { done((try? $0.get()) ?? -1) })
            }
            XCTAssertEqual(value, i)
        }
        XCTAssertEqual(runtime.pool.queuedCount, 2, "the other long jobs wait for the capped lane")
        for _ in 0..<3 { gate.fire() }
        XCTAssertTrue(longDone.wait(count: 3))
    }

    /// Shutdown with 10,000 jobs in flight: each gets exactly one completion (its result,
    /// or `cancelled` if it was still queued), the report counts the cancelled ones, and
    /// nothing hangs.
    func testShutdownWithTenThousandJobsInFlight() throws {
        let count = underTSan ? 3000 : 10_000
        let runtime = try Runtime(loops: 2, pool: .init(workers: 2, queueCapacity: count))
        try runtime.start()
        let completions = Locked<[Int]>(Array(repeating: 0, count: count))
        let cancelled = Counter()
        let succeeded = Counter()
        for id in 0..<count {
            try runtime.blocking(on: Color(UInt64(id % 13)), lane: id % 3 == 0 ? .long : .short, {
                var x = UInt64(id)
                for _ in 0..<200 { x = x &* 6364136223846793005 &+ 1 }
                return x
            }, completion: { result in
                completions.withLock { $0[id] += 1 }
                switch result {
                case .success: succeeded.increment()
                case .failure(let error):
                    XCTAssertEqual(error as? ChromaError, .cancelled(operation: "blocking"))
                    cancelled.increment()
                }
            })
        }
        let (finished, report) = shutdownInBackground(runtime)
        XCTAssertTrue(finished.wait(seconds: 60), "shutdown finished")
        XCTAssertTrue(completions.snapshot.allSatisfy { $0 == 1 }, "exactly one completion per job")
        XCTAssertEqual(succeeded.current + cancelled.current, count)
        XCTAssertEqual(report.snapshot?.cancelledBlockingJobs, cancelled.current)
        assertThrows(.shutDown(operation: "blocking")) {
            try runtime.blocking(on: .main, { 1 }, completion: { _ in XCTFail("a refused job never completes") })
        }
    }

    func testBadConfigurationIsRefused() {
        assertThrows(.invalidArgument(operation: "BlockingPool", detail: "workers must be in 1...4096, got 0")) {
            try Runtime(loops: 1, pool: .init(workers: 0))
        }
        assertThrows(.invalidArgument(operation: "BlockingPool", detail: "queueCapacity must be at least 1, got 0")) {
            try Runtime(loops: 1, pool: .init(queueCapacity: 0))
        }
        assertThrows(.invalidArgument(operation: "BlockingPool", detail: "longLaneWorkers must be in 1...workers (2), got 3")) {
            try Runtime(loops: 1, pool: .init(workers: 2, longLaneWorkers: 3))
        }
    }

    func testBlockingBeforeStartIsRefused() throws {
        let runtime = try Runtime(loops: 1)
        assertThrows(.invalidState(operation: "blocking", reason: "the runtime is not started; call start() first")) {
            try runtime.blocking({ 1 }, completion: { _ in })
        }
    }
}
