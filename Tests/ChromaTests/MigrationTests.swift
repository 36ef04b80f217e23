@_spi(Engine) @testable import Chroma
import Foundation
import Synchronization
import XCTest

/// Colors moving between loops (`Migration`): the guarantees hold while they move, pinned
/// colors stay, shutdown loses nothing, and skewed load really spreads.
final class MigrationTests: XCTestCase {
    private func forcedRuntime(loops: Int = 3) throws -> Runtime {
        let runtime = try Runtime(loops: loops)
        runtime.testingForcedMigrations = true
        try runtime.start()
        addTeardownBlock { _ = try? runtime.shutdown() }
        return runtime
    }

    private func moves(_ runtime: Runtime) -> Int {
        runtime.loops.reduce(0) { $0 + $1.migration.moves.load(ordering: .relaxed) }
    }

    private func bucketsMoved(_ runtime: Runtime) -> Int {
        runtime.loops.reduce(0) { $0 + $1.migration.bucketsGiven.load(ordering: .relaxed) }
    }

    /// What one color's callbacks check: none overlaps another, and each producer's
    /// callbacks arrive in the order it posted them.
    private final class ColorLedger: @unchecked Sendable {
        // Safe to share: `inFlight` and the counters are atomics; `last` is touched only
        // inside callbacks of this ledger's color, which the guarantee under test
        // serializes (an overlap would show in `inFlight` first).
        let inFlight = Atomic<Int>(0)
        var last: [Int]
        init(producers: Int) { last = Array(repeating: -1, count: producers) }
    }

    func testAMillionCallbacksOnAThousandMovingColorsFromFourProducersAndTheLoopsNeverOverlapOrReorder() throws {
        let runtime = try forcedRuntime()
        let colors = 1000, producers = 4
        let perProducer = underTSan ? 25_000 : 200_000
        // Every 8th callback posts a follow-up to a color from its loop: one more producer
        // per loop thread (ids producers..producers+loops-1).
        let loopProducers = runtime.loopCount
        let ledgers = (0..<colors).map { _ in ColorLedger(producers: producers + loopProducers) }
        let loopSequences = (0..<loopProducers).map { _ in (0..<colors).map { _ in Counter() } }
        let overlaps = Counter(), reorders = Counter(), ran = Counter(), wrongColor = Counter()
        let followUps = Counter()
        let expected = Atomic<Int>(producers * perProducer)
        let done = Signal()

        @Sendable func check(_ c: Int, producer: Int, sequence: Int) {
            let ledger = ledgers[c]
            if ledger.inFlight.add(1, ordering: .sequentiallyConsistent).newValue != 1 { overlaps.increment() }
            if Color.current != Color(UInt64(c + 1)) { wrongColor.increment() }
            if ledger.last[producer] >= sequence { reorders.increment() }
            ledger.last[producer] = sequence
            ledger.inFlight.subtract(1, ordering: .sequentiallyConsistent)
        }
        @Sendable func finishOne() {
            if ran.increment() == expected.load(ordering: .sequentiallyConsistent) { done.fire() }
        }
        @Sendable func callback(_ c: Int, producer: Int, sequence: Int) {
            check(c, producer: producer, sequence: sequence)
            if producer < producers && sequence % 8 == 0, let loop = runtime.currentLoopIndex {
                let target = (c * 7 + sequence) % colors
                let next = loopSequences[loop][target].increment() - 1
                expected.add(1, ordering: .sequentiallyConsistent)
                followUps.increment()
                try! runtime.execute(on: Color(UInt64(target + 1))) {
                    callback(target, producer: producers + loop, sequence: next)
                }
            }
            finishOne()
        }
        let posted = Counter()
        onThreads(producers) { producer in
            for i in 0..<perProducer {
                // Flow control, so the loops' queues stay short and colors move every few
                // callbacks (a move scans the queues it leaves).
                while posted.increment() - ran.current > 4000 {
                    posted.increment(by: -1)
                    sched_yield()
                }
                let c = (i &* 31 &+ producer &* 17) % colors
                try! runtime.execute(on: Color(UInt64(c + 1))) { callback(c, producer: producer, sequence: i) }
            }
        }
        XCTAssertTrue(done.wait(seconds: 20), "every callback ran: \(ran.current) of \(expected.load(ordering: .relaxed)); \(runtime.migrationSnapshot())")
        XCTAssertEqual(overlaps.current, 0, "callbacks of one color overlapped")
        XCTAssertEqual(reorders.current, 0, "a producer's callbacks of one color ran out of order")
        XCTAssertEqual(wrongColor.current, 0)
        XCTAssertGreaterThan(followUps.current, 0)
        XCTAssertGreaterThan(moves(runtime), underTSan ? 50 : 200, "moves: \(moves(runtime))")
        XCTAssertGreaterThan(bucketsMoved(runtime), underTSan ? 500 : 5000, "colors moved, each many times: \(bucketsMoved(runtime))")
    }

    func testAnActorOnAMovingColorSerializesWithItsCallbacksAndAssumeIsolatedHolds() async throws {
        let runtime = try forcedRuntime(loops: 2)
        let color = Color(5)
        let probe = OverlapProbe()
        let actor = ColorActor(executor: runtime.executor(for: color), probe: probe)
        let callsEach = underTSan ? 200 : 2000
        let callbacksEach = underTSan ? 5000 : 50_000
        let notIsolated = Counter(), callbacksRan = Counter()
        let callbacksDone = Signal()
        let executor = runtime.executor(for: color)
        Thread.detachNewThread {
            for i in 0..<callbacksEach {
                // Other colors beside it keep the loops' queues mixed, so moves happen.
                try! runtime.execute(on: Color(UInt64(10 + i % 50))) {}
                try! runtime.execute(on: color) {
                    probe.enter()
                    if executor.isIsolatingCurrentContext() != true { notIsolated.increment() }
                    executor.checkIsolated()  // traps if the color's executor disowns its own callback
                    probe.leave()
                    if callbacksRan.increment() == callbacksEach { callbacksDone.fire() }
                }
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for caller in 0..<100 {
                group.addTask(executorPreference: runtime.taskExecutor(for: Color(UInt64(1000 + caller)))) {
                    for sequence in 0..<callsEach { await actor.call(from: caller, sequence: sequence) }
                }
            }
        }
        XCTAssertTrue(callbacksDone.wait())
        let calls = await actor.calls, outOfOrder = await actor.outOfOrder
        XCTAssertEqual(calls, 100 * callsEach)
        XCTAssertEqual(outOfOrder, 0)
        XCTAssertEqual(probe.overlaps.load(ordering: .relaxed), 0, "an actor method overlapped a callback of its color")
        XCTAssertEqual(probe.wrongColor.load(ordering: .relaxed), 0)
        XCTAssertEqual(notIsolated.current, 0)
        XCTAssertGreaterThan(moves(runtime), 0)
    }

    func testPinnedColorsNeverMoveWhileOthersDo() throws {
        let runtime = try forcedRuntime(loops: 2)
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let watched = Color(3), pinned = Color(4), free = Color(6)
        let connectionColor = runtime.makeColor(onLoop: 1)
        let watch = try runtime.watch(fds[0], for: .readable, on: watched) { _ in }
        defer { watch.cancel() }
        let pinnedAt = runtime.pin(pinned)
        let start = [watched: runtime.loopIndex(of: watched), pinned: pinnedAt,
                     connectionColor: 1, .main: 0]
        let seen = Locked<[Color: Set<Int>]>([:])
        let each = underTSan ? 5000 : 40_000
        let ran = Counter(), done = Signal()
        let all = [watched, pinned, connectionColor, .main, free]
        onThreads(2) { _ in
            for i in 0..<each {
                for color in all {
                    try! runtime.execute(on: color) {
                        let loop = runtime.currentLoopIndex!
                        if i % 64 == 0 { seen.withLock { _ = $0[color, default: []].insert(loop) } }
                        if ran.increment() == 2 * each * all.count { done.fire() }
                    }
                }
            }
        }
        XCTAssertTrue(done.wait())
        let snapshot = seen.snapshot
        for (color, loop) in start {
            XCTAssertEqual(snapshot[color], [loop], "\(color) stayed on loop \(loop)")
            XCTAssertEqual(runtime.loopIndex(of: color), loop)
        }
        XCTAssertEqual(snapshot[free]?.count, 2, "the unpinned color did move (the test can see a move)")
    }

    func testTimersOfMovingColorsFireOnTheirColorWithoutOverlap() throws {
        let runtime = try forcedRuntime(loops: 2)
        let color = Color(9)
        let probe = OverlapProbe()
        let fires = Counter(), loopsSeen = Locked<Set<Int>>([])
        let enough = Signal()
        let reached = Atomic<Bool>(false)
        let timer = try runtime.schedule(after: .zero, repeating: .microseconds(200), on: color) {
            probe.enter()
            if Color.current != color { probe.wrongColor.add(1, ordering: .relaxed) }
            let loops = loopsSeen.withLock { $0.insert(runtime.currentLoopIndex!); return $0.count }
            probe.leave()
            // Enough: 200 fires, on both loops (forced moves come at random: under
            // ThreadSanitizer 200 fires can pass before the first).
            if fires.increment() >= 200 && loops == 2 && !reached.exchange(true, ordering: .relaxed) { enough.fire() }
        }
        let stop = Atomic<Bool>(false)
        let producerDone = Signal()
        let posted = Counter(), ran = Counter()
        Thread.detachNewThread {
            var i = 0
            while !stop.load(ordering: .relaxed) {
                // Flow control on the loops' progress, so the queues stay short and moves frequent.
                while posted.current - ran.current > 2000 && !stop.load(ordering: .relaxed) { sched_yield() }
                posted.increment(by: 2)
                try? runtime.execute(on: color) { probe.enter(); probe.leave(); ran.increment() }
                try? runtime.execute(on: Color(UInt64(20 + i % 10))) { ran.increment() }
                i += 1
            }
            producerDone.fire()
        }
        XCTAssertTrue(enough.wait())
        stop.store(true, ordering: .relaxed)
        XCTAssertTrue(producerDone.wait())
        timer.cancel()
        XCTAssertEqual(probe.overlaps.load(ordering: .relaxed), 0)
        XCTAssertEqual(probe.wrongColor.load(ordering: .relaxed), 0)
        XCTAssertEqual(loopsSeen.snapshot.count, 2, "the color moved while its timer kept firing")
    }

    func testShutdownInTheMiddleOfMigrationsRunsOrRefusesEveryJob() throws {
        let runtime = try Runtime(loops: 3)
        runtime.testingForcedMigrations = true
        try runtime.start()
        let accepted = Counter(), refused = Counter(), ran = Counter()
        let started = Signal()
        let group = DispatchGroup()
        for p in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                var i = 0
                while true {
                    do {
                        try runtime.execute(on: Color(UInt64(1 + (i * 13 + p) % 500))) { ran.increment() }
                        accepted.increment()
                    } catch {
                        refused.increment()
                        break
                    }
                    i += 1
                    if i == 20_000 { started.fire() }
                }
                group.leave()
            }
        }
        XCTAssertTrue(started.wait(count: 4))
        XCTAssertGreaterThan(moves(runtime), 0, "colors were moving when the stop came")
        _ = try runtime.shutdown()
        XCTAssertEqual(group.wait(timeout: .now() + hangTimeout), .success)
        XCTAssertEqual(refused.current, 4, "each producer was refused once, then stopped")
        XCTAssertEqual(ran.current, accepted.current, "every accepted job ran; none was lost in transit")
    }

    /// All colors on loop 0 (even numbers, two loops), each callback about 20 µs of work that
    /// queues the next: with stealing on, loop 1 runs a share of them; with it off, none.
    func testSkewedColorsSpreadToTheIdleLoopOnlyWithStealingOn() throws {
        func run(_ stealing: Stealing) throws -> [Int] {
            let runtime = try Runtime(loops: 2, stealing: stealing)
            try runtime.start()
            defer { _ = try? runtime.shutdown() }
            let perLoop = (0..<2).map { _ in Counter() }
            let total = underTSan ? 4000 : 20_000
            let ran = Counter(), done = Signal()
            @Sendable func step(_ color: Color) {
                var h: UInt64 = 1469598103934665603
                let until = monotonicSeconds() + 20e-6
                while monotonicSeconds() < until { h = (h ^ 0x9E) &* 1099511628211 }
                perLoop[runtime.currentLoopIndex!].increment(by: h == 0 ? 2 : 1)
                let n = ran.increment()
                if n == total { done.fire() }
                if n < total { try? runtime.execute(on: color) { step(color) } }
            }
            for c in 0..<64 {
                let color = Color(UInt64(2 * c))
                XCTAssertEqual(runtime.loopIndex(of: color), 0)
                try runtime.execute(on: color) { step(color) }
            }
            XCTAssertTrue(done.wait())
            return perLoop.map(\.current)
        }
        let on = try run(.on)
        XCTAssertGreaterThan(on[1], on.reduce(0, +) / 10, "loop 1 ran a share of the skewed colors: \(on)")
        let off = try run(.off)
        XCTAssertEqual(off[1], 0, "without stealing every color stays on loop 0: \(off)")
    }
}
