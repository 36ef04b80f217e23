import Chroma
import Foundation
import Synchronization
import XCTest

/// Guarantees 1, 2 and 4 under load: a color's callbacks never overlap, those queued by one
/// thread run in queue order, and every queued callback runs.
final class SerializationTests: XCTestCase {
    /// Per-color bookkeeping, touched only inside that color's callbacks, except `inFlight`,
    /// which exists to catch the overlap the guarantee forbids.
    final class ColorState: @unchecked Sendable {
        // Safe to share by guarantee 1 itself: `lastSeen` is only used inside this color's
        // callbacks; if two overlapped, `inFlight` would say so (and TSan would report it).
        let inFlight = Atomic<Int>(0)
        var lastSeen: [Int: Int] = [:]  // producer -> last sequence number
    }

    /// Sequence numbers a loop thread hands to the callbacks it queues, per target color.
    final class LoopProducer: @unchecked Sendable {
        // Safe to share: each instance is used by one loop's thread only (indexed by loop).
        var next: [Int: Int] = [:]
    }

    func testOneMillionCallbacksOnAThousandColorsNeverOverlapAndKeepOrder() throws {
        let runtime = try startedRuntime(loops: 2)
        let colorCount = 1000
        let producers = 4
        let perProducer = underTSan ? 25_000 : 200_000
        let followUpEvery = 4  // every 4th callback a producer queues queues one more, from inside the runtime
        let external = producers * perProducer
        let expected = external + external / followUpEvery
        let states = (0..<colorCount).map { _ in ColorState() }
        let loopProducers = (0..<runtime.loopCount).map { _ in LoopProducer() }
        let ran = Counter()
        let overlaps = Counter()
        let outOfOrder = Counter()
        let done = expectation(description: "all \(expected) callbacks ran")

        @Sendable func body(color: Int, producer: Int, sequence: Int, followUp: Bool) {
            let state = states[color]
            if state.inFlight.add(1, ordering: .sequentiallyConsistent).newValue != 1 { overlaps.increment() }
            if let last = state.lastSeen[producer], last >= sequence { outOfOrder.increment() }
            state.lastSeen[producer] = sequence
            if followUp {
                // Queue on another color from inside a callback: producer id 1000 + loop.
                let loop = runtime.loopIndex(of: Color.current!)
                let target = (color * 7 + 1) % colorCount
                let counters = loopProducers[loop]
                let next = counters.next[target, default: 0]
                counters.next[target] = next + 1
                try! runtime.execute(on: Color(UInt64(target))) {
                    body(color: target, producer: 1000 + loop, sequence: next, followUp: false)
                }
            }
            state.inFlight.subtract(1, ordering: .sequentiallyConsistent)
            if ran.increment() == expected { done.fulfill() }
        }

        onThreads(producers) { producer in
            var sequence = [Int](repeating: 0, count: colorCount)
            for i in 0..<perProducer {
                let color = (i &* 31 &+ producer) % colorCount
                let seq = sequence[color]
                sequence[color] += 1
                try! runtime.execute(on: Color(UInt64(color))) {
                    body(color: color, producer: producer, sequence: seq, followUp: i % followUpEvery == 0)
                }
            }
        }
        wait(for: [done], timeout: 300)
        // Everything has run once `done` is fulfilled; a shutdown now would run any extra.
        try runtime.shutdown()
        XCTAssertEqual(ran.current, expected, "every queued callback ran, none twice")
        XCTAssertEqual(overlaps.current, 0, "callbacks of one color overlapped")
        XCTAssertEqual(outOfOrder.current, 0, "callbacks from one producer ran out of order")
        print("serialization stress: \(ran.current) callbacks on \(colorCount) colors from \(producers) threads and 2 loops")
    }

    func testDefaultColorCallbacksNeverOverlap() throws {
        let runtime = try startedRuntime(loops: 2)
        let inFlight = Atomic<Int>(0)
        let overlaps = Counter()
        let ran = Counter()
        let count = underTSan ? 2_000 : 20_000
        let done = expectation(description: "all ran")
        onThreads(2) { _ in
            for _ in 0..<(count / 2) {
                try! runtime.execute {
                    if inFlight.add(1, ordering: .sequentiallyConsistent).newValue != 1 { overlaps.increment() }
                    var x = 0
                    for i in 0..<200 { x &+= i }
                    precondition(x > 0)
                    inFlight.subtract(1, ordering: .sequentiallyConsistent)
                    if ran.increment() == count { done.fulfill() }
                }
            }
        }
        wait(for: [done], timeout: 60)
        XCTAssertEqual(overlaps.current, 0)
        XCTAssertEqual(ran.current, count)
    }

    func testFunctionJobsKeepOrderAndRunOnTheirColor() throws {
        let runtime = try startedRuntime(loops: 2)
        final class Box: @unchecked Sendable {
            // Safe to share: only touched in color 5's callbacks (and read after `done`).
            var seen: [Int] = []
            let done: XCTestExpectation
            init(_ done: XCTestExpectation) { self.done = done }
        }
        let box = Box(expectation(description: "function jobs ran"))
        let count = 1000
        for _ in 0..<count {
            try runtime.execute(on: Color(5), context: Unmanaged.passUnretained(box).toOpaque()) { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeUnretainedValue()
                box.seen.append(Int(Color.current!.rawValue))
                if box.seen.count == 1000 { box.done.fulfill() }
            }
        }
        wait(for: [box.done], timeout: hangTimeout)
        XCTAssertEqual(box.seen, Array(repeating: 5, count: count))
    }

    /// A queued closure owns its captures exactly once: released after it runs (no leak),
    /// and not before (no over-release), whichever path it took (local run queue or mailbox).
    func testQueuedClosuresReleaseTheirCapturesExactlyOnce() throws {
        final class Tracked: Sendable { let id: Int; init(_ id: Int) { self.id = id } }
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        var weakRefs: [() -> AnyObject?] = []
        let sum = Counter()
        let done = expectation(description: "all ran")
        done.expectedFulfillmentCount = 200
        for i in 0..<100 {
            let object = Tracked(i)
            weakRefs.append { [weak object] in object }
            // From outside (mailbox), and from inside a callback (local run queue).
            try runtime.execute(on: Color(UInt64(i % 2))) {
                sum.increment(by: object.id)
                try! runtime.execute(on: Color(UInt64(i % 2))) {
                    sum.increment(by: object.id)
                    done.fulfill()
                }
                done.fulfill()
            }
        }
        wait(for: [done], timeout: hangTimeout)
        try runtime.shutdown()
        XCTAssertEqual(sum.current, 2 * (0..<100).reduce(0, +), "every capture was alive when its closure ran")
        XCTAssertTrue(weakRefs.allSatisfy { $0() == nil }, "every capture was released once its closures ran")
    }
}
