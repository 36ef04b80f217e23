import Chroma
import Foundation
import Synchronization
import XCTest

/// `runHere(as:)`: a color on the running callback's loop runs at once, nested, with its
/// own color current; anywhere else nothing runs and the answer is false.
final class RunHereTests: XCTestCase {
    private struct Seen: Equatable {
        var ran = false
        var insideColor: Color?
        var afterColor: Color?
        var returned = false
    }

    /// Calls `runHere(as: target)` from a callback of `from` and reports what happened.
    private func attempt(_ runtime: Runtime, from: Color, target: @escaping @Sendable () -> Color) throws -> Seen {
        let result = Mutex(Seen())
        let done = expectation(description: "the callback ran")
        try runtime.execute(on: from) {
            var seen = Seen()
            seen.returned = runtime.runHere(as: target()) {
                seen.ran = true
                seen.insideColor = Color.current
            }
            seen.afterColor = Color.current
            result.withLock { $0 = seen }
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
        return result.withLock { $0 }
    }

    func testRunsAColorOfTheSameLoopAtOnce() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let caller = runtime.makeColor(onLoop: 0), here = runtime.makeColor(onLoop: 0)
        let seen = try attempt(runtime, from: caller) { here }
        XCTAssertEqual(seen, Seen(ran: true, insideColor: here, afterColor: caller, returned: true))
    }

    func testRefusesAnotherLoopsColorItsOwnAndNesting() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let caller = runtime.makeColor(onLoop: 0), there = runtime.makeColor(onLoop: 1), here = runtime.makeColor(onLoop: 0)
        XCTAssertEqual(try attempt(runtime, from: caller) { there }, Seen(afterColor: caller))
        XCTAssertEqual(try attempt(runtime, from: caller) { caller }, Seen(afterColor: caller), "a color never runs inside itself")
        XCTAssertFalse(runtime.runHere(as: here) { XCTFail("ran outside any callback") })

        let nested = Mutex<Bool?>(nil)
        let done = expectation(description: "nested attempt made")
        let other = runtime.makeColor(onLoop: 0)
        try runtime.execute(on: caller) {
            _ = runtime.runHere(as: here) {
                // `caller` is running further out: running it (or anything) here could not
                // be told apart, so nesting is refused.
                nested.withLock { $0 = runtime.runHere(as: other) {} }
            }
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
        XCTAssertEqual(nested.withLock { $0 }, false)
    }

    func testJobsQueuedAfterwardStillRunInOrder() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let caller = runtime.makeColor(onLoop: 1), shard = runtime.makeColor(onLoop: 1)
        let order = Mutex<[Int]>([])
        let done = expectation(description: "all ran")
        try runtime.execute(on: caller) {
            XCTAssertTrue(runtime.runHere(as: shard) { order.withLock { $0.append(0) } })
            try? runtime.execute(on: shard) { order.withLock { $0.append(1) } }
            try? runtime.execute(on: shard) {
                order.withLock { $0.append(2) }
                done.fulfill()
            }
        }
        wait(for: [done], timeout: 10)
        XCTAssertEqual(order.withLock { $0 }, [0, 1, 2])
    }

    func testANestedRunIsPartOfItsCallbackNotACallbackOfItsOwn() throws {
        let runtime = try Runtime(loops: 1)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let caller = runtime.makeColor(onLoop: 0), here = runtime.makeColor(onLoop: 0)
        let counts = Locked<(before: Int, after: Int, ran: Int)>((0, 0, 0))
        let done = expectation(description: "the callback ran")
        try runtime.execute(on: caller) {
            let before = runtime.statistics().loops[0].callbacks
            var ran = 0
            for _ in 0..<100 where runtime.runHere(as: here, { ran += 1 }) {}
            counts.withLock { $0 = (before, runtime.statistics().loops[0].callbacks, ran) }
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
        let (before, after, ran) = counts.snapshot
        XCTAssertEqual(ran, 100)
        XCTAssertEqual(after, before, "100 nested runs counted no callback")
    }
}
