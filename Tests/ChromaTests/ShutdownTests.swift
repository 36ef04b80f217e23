import Chroma
import Foundation
import XCTest

/// Guarantee 4: every queued callback runs or is reported as cancelled at shutdown.
final class ShutdownTests: XCTestCase {
    func testShutdownRunsQueuedWorkAndReportsPendingTimersAndWatches() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        let ran = Counter()
        let count = underTSan ? 20_000 : 100_000
        for i in 0..<count {
            try runtime.execute(on: Color(UInt64(i % 10))) { ran.increment() }
        }
        let timerFired = Counter()
        let timer = try runtime.schedule(after: .seconds(10 * hangTimeout), on: Color(1)) { timerFired.increment() }
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let watch = try runtime.watch(fds[0], for: .readable) { _ in }
        let report = try runtime.shutdown()
        XCTAssertEqual(ran.current, count, "every callback queued before shutdown ran")
        XCTAssertEqual(report.cancelledTimers, 1)
        XCTAssertEqual(report.cancelledWatches, 1)
        XCTAssertTrue(timer.isCancelled)
        XCTAssertTrue(watch.isCancelled)
        XCTAssertEqual(timerFired.current, 0)
        XCTAssertFalse(runtime.isRunning)
        XCTAssertEqual(try runtime.shutdown(), report, "shutdown is idempotent")
    }

    func testWorkAfterStopIsRefusedNotDropped() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        // A chain that re-queues itself until the runtime refuses: each link either ran or
        // saw the refusal, so ran == queued and exactly one refusal ends the chain.
        let ran = Counter()
        let refused = Counter()
        let queued = Counter()
        @Sendable func link() {
            ran.increment()
            do {
                try runtime.execute(on: Color(3), link)
                queued.increment()
            } catch {
                XCTAssertEqual(error, .shutDown(operation: "execute"))
                refused.increment()
            }
        }
        try runtime.execute(on: Color(3), link)
        queued.increment()
        let started = expectation(description: "chain running")
        try runtime.execute(on: Color(3)) { started.fulfill() }
        wait(for: [started], timeout: hangTimeout)
        try runtime.shutdown()
        XCTAssertEqual(refused.current, 1)
        XCTAssertEqual(ran.current, queued.current)
        assertThrows(.shutDown(operation: "execute")) { try runtime.execute {} }
        assertThrows(.shutDown(operation: "schedule")) { try runtime.schedule(after: .zero) {} }
        assertThrows(.shutDown(operation: "onSignal")) { try runtime.onSignal(SIGUSR2) {} }
    }

    func testExternalProducersRacingShutdownLoseNothing() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        let ran = Counter()
        let accepted = Counter()
        let rejected = Counter()
        let go = expectation(description: "producers running")
        go.expectedFulfillmentCount = 4
        let group = DispatchGroup()
        for _ in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                var first = true
                while true {
                    do {
                        try runtime.execute(on: Color(UInt64.random(in: 0..<8))) { ran.increment() }
                        accepted.increment()
                    } catch {
                        rejected.increment()
                        break
                    }
                    if first { go.fulfill(); first = false }
                }
                group.leave()
            }
        }
        wait(for: [go], timeout: hangTimeout)
        try runtime.shutdown()
        group.wait()
        XCTAssertEqual(rejected.current, 4, "each producer was told once, then stopped")
        XCTAssertEqual(ran.current, accepted.current, "every accepted callback ran")
        XCTAssertGreaterThan(accepted.current, 0)
    }

    func testRunReturnsAfterStopFromACallback() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        try runtime.schedule(after: .milliseconds(10), on: Color(1)) { runtime.stop() }
        let pending = try runtime.schedule(after: .seconds(60)) {}
        let report = try runtime.run()
        XCTAssertEqual(report.cancelledTimers, 1)
        XCTAssertTrue(pending.isCancelled)
    }
}
