import Chroma
import Foundation
import Synchronization
import XCTest

/// Guarantee 3: callbacks of different colors run in parallel on different loops.
final class ParallelismTests: XCTestCase {
    func testTwoColorsOnTwoLoopsOverlapInTime() throws {
        let runtime = try startedRuntime(loops: 2)
        let a = Color(0), b = Color(1)
        XCTAssertNotEqual(runtime.loopIndex(of: a), runtime.loopIndex(of: b))
        let started = Counter()
        let sawOther = Counter()
        let intervals = Locked<[(Double, Double)]>([])
        let done = expectation(description: "both ran")
        done.expectedFulfillmentCount = 2
        for color in [a, b] {
            try runtime.execute(on: color) {
                let begin = monotonicSeconds()
                started.increment()
                // Fixed work, and then keep working until the other callback has started
                // too (or the hang deadline passes): only possible if the two run at the same
                // time.
                var x: UInt64 = 0
                for i in 0..<2_000_000 { x &+= UInt64(i) &* 31 }
                let deadline = begin + hangTimeout
                while started.current < 2 && monotonicSeconds() < deadline { x &+= 1 }
                if started.current == 2 { sawOther.increment() }
                let end = monotonicSeconds()
                precondition(x != 42)
                intervals.withLock { $0.append((begin, end)) }
                done.fulfill()
            }
        }
        wait(for: [done], timeout: 2 * hangTimeout)
        XCTAssertEqual(sawOther.current, 2, "each callback saw the other one running")
        let spans = intervals.snapshot
        XCTAssertEqual(spans.count, 2)
        if spans.count == 2 {
            let overlap = min(spans[0].1, spans[1].1) - max(spans[0].0, spans[1].0)
            XCTAssertGreaterThan(overlap, 0, "the two callbacks' time intervals overlap")
        }
    }

    func testMadeColorsSpreadAcrossLoops() throws {
        let runtime = try Runtime(loops: 4)
        let colors = (0..<8).map { _ in runtime.makeColor() }
        XCTAssertEqual(Set(colors).count, 8, "fresh colors are distinct")
        XCTAssertEqual(colors.map { runtime.loopIndex(of: $0) }.sorted(), [0, 0, 1, 1, 2, 2, 3, 3])
        XCTAssertTrue(colors.allSatisfy { $0.rawValue >= 1 << 32 }, "fresh colors never collide with small hand-made ones")
        let three = try Runtime(loops: 3)
        XCTAssertEqual(three.loopIndex(of: Color(7)), 1)
        XCTAssertEqual(three.loopIndex(of: .main), 0)
    }

    func testCurrentColorAndRuntimeInsideCallbacks() throws {
        let runtime = try startedRuntime(loops: 2)
        XCTAssertNil(Color.current)
        XCTAssertNil(Runtime.current)
        let color = runtime.makeColor()
        let done = expectation(description: "ran")
        try runtime.execute(on: color) {
            XCTAssertEqual(Color.current, color)
            XCTAssertTrue(Runtime.current === runtime)
            done.fulfill()
        }
        wait(for: [done], timeout: hangTimeout)
    }
}
