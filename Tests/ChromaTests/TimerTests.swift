import Chroma
import Foundation
import XCTest

final class TimerTests: XCTestCase {
    func testTimersFireInDeadlineOrderAndNeverEarly() throws {
        let runtime = try startedRuntime(loops: 2)
        let fired = Locked<[Int]>([])
        let early = Locked<[String]>([])
        let done = expectation(description: "all fired")
        done.expectedFulfillmentCount = 4
        let color = Color(3)
        for ms in [30, 10, 20, 10] {
            let scheduled = monotonicSeconds()
            try runtime.schedule(after: .milliseconds(ms), on: color) {
                let waited = monotonicSeconds() - scheduled
                if waited < Double(ms) / 1000 { early.withLock { $0.append("\(ms) ms timer fired after \(waited) s") } }
                XCTAssertEqual(Color.current, color)
                fired.withLock { $0.append(ms) }
                done.fulfill()
            }
        }
        wait(for: [done], timeout: hangTimeout)
        XCTAssertEqual(fired.snapshot, [10, 10, 20, 30])
        XCTAssertEqual(early.snapshot, [])
    }

    func testEqualDeadlinesFireInScheduleOrder() throws {
        let runtime = try startedRuntime(loops: 1)
        let fired = Locked<[Int]>([])
        let done = expectation(description: "all fired")
        try runtime.execute {
            // Scheduled from the loop itself, within one callback: the same `now`.
            for i in 0..<50 {
                try! runtime.schedule(after: .zero) {
                    fired.withLock { $0.append(i) }
                    if i == 49 { done.fulfill() }
                }
            }
        }
        wait(for: [done], timeout: hangTimeout)
        XCTAssertEqual(fired.snapshot, Array(0..<50))
    }

    func testCancelFromAnotherThreadStopsTheTimer() throws {
        let runtime = try startedRuntime(loops: 2)
        let cancelledFired = Counter()
        let timer = try runtime.schedule(after: .milliseconds(50), on: Color(1)) { cancelledFired.increment() }
        let cancelled = Locked<Bool>(false)
        onThreads(1) { _ in cancelled.withLock { $0 = timer.cancel() } }
        XCTAssertTrue(cancelled.snapshot)
        XCTAssertTrue(timer.isCancelled)
        XCTAssertFalse(timer.cancel(), "a second cancel reports that nothing was pending")
        // A later timer on the same color: when it fires, the cancelled one's deadline is long past.
        let sentinel = expectation(description: "sentinel fired")
        try runtime.schedule(after: .milliseconds(150), on: Color(1)) { sentinel.fulfill() }
        wait(for: [sentinel], timeout: hangTimeout)
        XCTAssertEqual(cancelledFired.current, 0)
        XCTAssertFalse(timer.hasFired)
    }

    func testRepeatingTimerRepeatsUntilCancelledFromItsOwnBody() throws {
        let runtime = try startedRuntime(loops: 2)
        let ticks = Counter()
        let third = expectation(description: "third tick")
        let timerBox = Locked<Chroma.Timer?>(nil)
        let start = monotonicSeconds()
        let times = Locked<[Double]>([])
        let timer = try runtime.schedule(after: .milliseconds(5), repeating: .milliseconds(5), on: Color(2)) {
            times.withLock { $0.append(monotonicSeconds() - start) }
            if ticks.increment() == 3 {
                timerBox.withLock { $0 }?.cancel()
                third.fulfill()
            }
        }
        timerBox.withLock { $0 = timer }
        wait(for: [third], timeout: hangTimeout)
        let sentinel = expectation(description: "sentinel")
        try runtime.schedule(after: .milliseconds(50), on: Color(2)) { sentinel.fulfill() }
        wait(for: [sentinel], timeout: hangTimeout)
        XCTAssertEqual(ticks.current, 3, "no tick after cancel")
        let seen = times.snapshot
        for (i, t) in seen.enumerated() {
            XCTAssertGreaterThanOrEqual(t, 0.005 * Double(i + 1), "tick \(i + 1) came early")
        }
    }

    func testManyCancelledTimersAreDropped() throws {
        let runtime = try startedRuntime(loops: 1)
        let fired = Counter()
        let timers = try (0..<1000).map { _ in try runtime.schedule(after: .seconds(60)) { fired.increment() } }
        for timer in timers { XCTAssertTrue(timer.cancel()) }
        let done = expectation(description: "one more timer")
        try runtime.schedule(after: .milliseconds(1)) { done.fulfill() }
        wait(for: [done], timeout: hangTimeout)
        let report = try runtime.shutdown()
        XCTAssertEqual(report.cancelledTimers, 0, "cancelled timers are not counted again at shutdown")
        XCTAssertEqual(fired.current, 0)
    }
}
