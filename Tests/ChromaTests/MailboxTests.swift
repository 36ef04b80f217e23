@testable import Chroma
import CChroma
import Foundation
import Synchronization
import XCTest

/// The lock-free mailbox on its own, without a loop: the test plays the loop. Order across
/// segment boundaries, the sleep/wake handshake (a lost wakeup hangs the consumer and fails
/// the test by timeout), closing, and that a closure's context is released exactly once
/// whether its job runs, is refused, or is dropped at destroy.
final class MailboxTests: XCTestCase {
    /// Running jobs here, as the loop would, sets this thread's current color: put it back,
    /// or later tests on this thread would see one.
    override func tearDown() {
        chroma_set_current_color(Color.noneRawValue)
        super.tearDown()
    }

    /// Counts its own deinit, to prove a closure context was released.
    final class Tracked: Sendable {
        let released: Counter
        init(_ released: Counter) { self.released = released }
        deinit { released.increment() }
    }

    /// A job that appends `value` to `log` (the consumer's thread only).
    private func job(_ value: Int, into log: Locked<[Int]>) -> Job {
        Job(color: 0, body: { log.withLock { $0.append(value) } })
    }

    func testOneThreadAcrossSegmentsInOrderWithBudgetedRuns() {
        let mailbox = Mailbox(holeColor: 0)
        defer { mailbox.destroy() }
        let log = Locked<[Int]>([])
        let count = Mailbox.slotsPerSegment * 3 + 17
        var wakes = 0
        for i in 0..<count {
            guard case .queued(let wake) = mailbox.push(job(i, into: log)) else { return XCTFail("refused") }
            if wake { wakes += 1 }
        }
        XCTAssertEqual(wakes, 1, "only the first post finds the (initially sleeping) consumer asleep")
        XCTAssertEqual(mailbox.run(limit: 100), 100, "a run stops at its limit")
        var ran = 100
        while ran < count {
            let n = mailbox.run(limit: 1000)
            XCTAssertGreaterThan(n, 0)
            ran += n
        }
        XCTAssertEqual(mailbox.run(limit: 10), 0, "nothing left")
        XCTAssertEqual(log.snapshot, Array(0..<count), "FIFO across segments")
        XCTAssertTrue(mailbox.sleepIfEmpty())
        guard case .queued(let wake) = mailbox.push(job(-1, into: log)) else { return XCTFail("refused") }
        XCTAssertTrue(wake, "the first post after the consumer slept must wake it")
        guard case .queued(let again) = mailbox.push(job(-2, into: log)) else { return XCTFail("refused") }
        XCTAssertFalse(again, "exactly one post wakes a sleeping consumer")
        XCTAssertFalse(mailbox.sleepIfEmpty(), "a consumer with jobs waiting may not sleep")
        XCTAssertEqual(mailbox.run(limit: 10), 2)
    }

    /// The consumer sleeps having run exactly a whole segment: the post that links the next
    /// segment carries the sleeping flag over and wakes it.
    func testSleepingAtASegmentBoundary() {
        let mailbox = Mailbox(holeColor: 0)
        defer { mailbox.destroy() }
        let log = Locked<[Int]>([])
        for i in 0..<Mailbox.slotsPerSegment { _ = mailbox.push(job(i, into: log)) }
        XCTAssertEqual(mailbox.run(limit: 10_000), Mailbox.slotsPerSegment)
        XCTAssertFalse(mailbox.awaitNext(checks: 2), "no next segment is linked yet")
        XCTAssertTrue(mailbox.sleepIfEmpty())
        guard case .queued(let wake) = mailbox.push(job(Mailbox.slotsPerSegment, into: log)) else { return XCTFail("refused") }
        XCTAssertTrue(wake, "the post that links a segment still wakes a sleeping consumer")
        XCTAssertTrue(mailbox.awaitNext(checks: 1), "the next segment is linked")
        XCTAssertEqual(mailbox.run(limit: 10), 1)
        XCTAssertEqual(log.snapshot, Array(0...Mailbox.slotsPerSegment))
        XCTAssertTrue(mailbox.sleepIfEmpty())
    }

    /// More segments in flight than the loop keeps as spares (so some are freed), then many
    /// rounds reusing spares: order holds throughout and nothing is left over.
    func testSegmentsAreFreedAndRecycledInOrder() {
        let mailbox = Mailbox(holeColor: 0)
        defer { mailbox.destroy() }
        let next = Locked(0)
        let outOfOrder = Counter()
        var posted = 0
        func post(_ n: Int) {
            for _ in 0..<n {
                let expected = posted
                posted += 1
                _ = mailbox.push(Job(color: 0, body: {
                    next.withLock { if $0 != expected { outOfOrder.increment() }; $0 += 1 }
                }))
            }
        }
        func runAll() { while mailbox.run(limit: 777) > 0 {} }
        post(Mailbox.slotsPerSegment * 20 + 3)
        runAll()
        for _ in 0..<50 {
            post(Mailbox.slotsPerSegment + 100)
            runAll()
        }
        XCTAssertEqual(next.snapshot, posted)
        XCTAssertEqual(outOfOrder.current, 0)
        XCTAssertTrue(mailbox.sleepIfEmpty())
    }

    /// A producer descheduled between claiming its slot and filling it (simulated: the
    /// claim is made by hand): later jobs wait behind it, the consumer may not sleep, and
    /// `awaitNext` answers for the next slot, not for a later one that is filled.
    func testAClaimedButUnfilledSlotHoldsLaterJobsBack() {
        let mailbox = Mailbox(holeColor: 0)
        defer { mailbox.destroy() }
        let log = Locked<[Int]>([])
        _ = mailbox.push(job(0, into: log))
        XCTAssertEqual(mailbox.run(limit: 10), 1)
        let claimed = mailbox.tail.pointee.wrappingAdd(Mailbox.offsetUnit, ordering: .acquiringAndReleasing).oldValue
        let offset = Mailbox.offset(in: claimed)
        XCTAssertEqual(offset, 1)
        let later = 2...(Mailbox.gap + 10)  // past the slot `awaitNext` watches
        for i in later { _ = mailbox.push(job(i, into: log)) }
        XCTAssertEqual(mailbox.run(limit: 10), 0, "the unfilled slot comes first")
        XCTAssertFalse(mailbox.sleepIfEmpty(), "a claimed slot keeps the consumer awake")
        XCTAssertFalse(mailbox.awaitNext(checks: 4), "a later filled slot does not count")
        let segment = UnsafeMutableRawPointer(bitPattern: claimed & Mailbox.addressMask)!
        Mailbox.fill(Mailbox.slot(offset, of: segment), with: job(1, into: log))
        XCTAssertTrue(mailbox.awaitNext(checks: 1))
        XCTAssertEqual(mailbox.run(limit: 1000), 1 + later.count)
        XCTAssertEqual(log.snapshot, Array(0...later.upperBound))
        XCTAssertTrue(mailbox.sleepIfEmpty())
    }

    func testClosingRefusesPostsAndReleasesTheirClosures() {
        let mailbox = Mailbox(holeColor: 0)
        defer { mailbox.destroy() }
        let released = Counter()
        let ranCount = Counter()
        do {
            let tracked = Tracked(released)
            _ = mailbox.push(Job(color: 0, body: { _ = tracked; ranCount.increment() }))
        }
        XCTAssertFalse(mailbox.closeIfEmpty(), "a mailbox holding a job does not close")
        XCTAssertEqual(mailbox.run(limit: 10), 1)
        XCTAssertEqual(released.current, 1, "a job that ran released its context once")
        XCTAssertTrue(mailbox.closeIfEmpty())
        for _ in 0..<(Mailbox.slotsPerSegment * 20) {  // far more than the offset field holds
            let tracked = Tracked(released)
            guard case .closed = mailbox.push(Job(color: 0, body: { _ = tracked; ranCount.increment() })) else {
                return XCTFail("a closed mailbox queued a job")
            }
        }
        XCTAssertEqual(released.current, 1 + Mailbox.slotsPerSegment * 20, "every refused job released its context")
        XCTAssertEqual(mailbox.run(limit: 10), 0)
        XCTAssertEqual(ranCount.current, 1)
        XCTAssertTrue(mailbox.closeIfEmpty(), "refusals leave no claimed slot behind")
    }

    /// A second close (a re-entered `finish`) while a refused producer's claim is still
    /// counted in the tail word (simulated by hand) must still answer "closed".
    func testClosingTwiceWithARefusalInFlight() {
        let mailbox = Mailbox(holeColor: 0)
        defer { mailbox.destroy() }
        XCTAssertTrue(mailbox.closeIfEmpty())
        mailbox.tail.pointee.wrappingAdd(Mailbox.offsetUnit, ordering: .relaxed)
        XCTAssertTrue(mailbox.closeIfEmpty(), "an already closed mailbox is closed")
        mailbox.tail.pointee.wrappingSubtract(Mailbox.offsetUnit, ordering: .relaxed)
    }

    /// Producers race a consumer that closes like `Loop.finish` at a random point: every job
    /// is either run (before the close) or refused, and every context is released once.
    func testCloseRacingProducersRunsOrRefusesEveryJob() {
        for _ in 0..<(underTSan ? 5 : 30) {
            let mailbox = Mailbox(holeColor: 0)
            let released = Counter(), ranCount = Counter(), refused = Counter(), accepted = Counter()
            let producers = 3, each = 3000
            let closeAfter = Int.random(in: 0..<(producers * each))
            let closed = Signal()
            let consumer = Thread {
                var ran = 0
                while ran < closeAfter {
                    let n = mailbox.run(limit: 4096)
                    ran += n
                    if n == 0 { _ = mailbox.awaitNext(checks: 4) }
                }
                while true {
                    let n = mailbox.run(limit: .max)
                    if mailbox.closeIfEmpty() { break }
                    if n == 0 { sched_yield() }
                }
                closed.fire()
            }
            consumer.start()
            onThreads(producers) { _ in
                for _ in 0..<each {
                    let tracked = Tracked(released)
                    switch mailbox.push(Job(color: 0, body: { _ = tracked; ranCount.increment() })) {
                    case .queued: accepted.increment()
                    case .closed: refused.increment()
                    case .moved: XCTFail("an unchecked push reported a move")
                    }
                }
            }
            XCTAssertTrue(closed.wait(), "the consumer closed the mailbox")
            XCTAssertEqual(mailbox.run(limit: 10), 0, "nothing accepted is left after the close")
            mailbox.destroy()
            XCTAssertEqual(accepted.current + refused.current, producers * each)
            XCTAssertEqual(ranCount.current, accepted.current, "every accepted job ran before the close")
            XCTAssertEqual(released.current, producers * each, "every context released exactly once")
        }
    }

    func testDestroyReleasesJobsThatNeverRan() {
        let released = Counter()
        let mailbox = Mailbox(holeColor: 0)
        for _ in 0..<(Mailbox.slotsPerSegment + 5) {
            let tracked = Tracked(released)
            _ = mailbox.push(Job(color: 0, body: { _ = tracked }))
        }
        XCTAssertEqual(mailbox.run(limit: 3), 3)
        XCTAssertEqual(released.current, 3)
        mailbox.destroy()
        XCTAssertEqual(released.current, Mailbox.slotsPerSegment + 5)
    }

    /// Producers race a consumer that sleeps (on a semaphore) whenever `sleepIfEmpty` lets it
    /// and is woken only by the post that reports `wake`: a lost wakeup leaves it asleep and
    /// the test times out. Producers post in rounds and wait for each round to be consumed and
    /// the consumer to have gone to sleep, so it sleeps at least once a round, and the next
    /// round's posts race its going to sleep. Checks count and per-producer order, with segments changing
    /// hands constantly.
    func testManyProducersNeverLoseAWakeupOrReorder() {
        let mailbox = Mailbox(holeColor: 0)
        defer { mailbox.destroy() }
        let producers = 4
        let rounds = underTSan ? 50 : 200
        let perRound = underTSan ? 400 : 1500  // per producer: more than a segment per round
        let wake = DispatchSemaphore(value: 0)
        let lastSeen = Locked<[Int]>(Array(repeating: -1, count: producers))
        let outOfOrder = Counter()
        let total = producers * rounds * perRound
        let consumed = Atomic<Int>(0)
        let gaveUp = Atomic<Bool>(false)
        let asleep = Atomic<Bool>(false)
        let finished = Signal()
        let sleeps = Counter()

        let consumer = Thread {
            while consumed.load(ordering: .acquiring) < total {
                let n = mailbox.run(limit: 4096)
                if n > 0 {
                    consumed.add(n, ordering: .releasing)
                    continue
                }
                if mailbox.sleepIfEmpty() {
                    sleeps.increment()
                    asleep.store(true, ordering: .releasing)
                    if wake.wait(timeout: .now() + hangTimeout) == .timedOut {  // a lost wakeup
                        gaveUp.store(true, ordering: .releasing)
                        break
                    }
                    asleep.store(false, ordering: .releasing)
                } else {
                    _ = mailbox.awaitNext(checks: 8)
                }
            }
            finished.fire()
        }
        consumer.start()
        onThreads(producers) { p in
            for round in 0..<rounds {
                for k in 0..<perRound {
                    let i = round * perRound + k
                    let job = Job(color: 0, body: {
                        lastSeen.withLock { seen in
                            if seen[p] != i - 1 { outOfOrder.increment() }
                            seen[p] = i
                        }
                    })
                    guard case .queued(let needed) = mailbox.push(job) else { return }
                    if needed { wake.signal() }
                }
                // Wait (on the count and the flag themselves, with a deadline) for the round
                // to be consumed and the consumer to sleep. (After the last round it stops.)
                if round == rounds - 1 { break }
                let target = (round + 1) * perRound * producers
                let deadline = monotonicSeconds() + hangTimeout
                while consumed.load(ordering: .acquiring) < target || !asleep.load(ordering: .acquiring) {
                    if gaveUp.load(ordering: .acquiring) || monotonicSeconds() > deadline { return }
                    sched_yield()
                }
            }
        }
        XCTAssertTrue(finished.wait(seconds: 3 * hangTimeout), "the consumer finished")
        XCTAssertFalse(gaveUp.load(ordering: .acquiring), "the consumer slept through a post: a lost wakeup")
        XCTAssertEqual(consumed.load(ordering: .acquiring), total, "every job ran")
        XCTAssertEqual(outOfOrder.current, 0, "jobs of one producer ran in the order posted")
        XCTAssertGreaterThanOrEqual(sleeps.current, rounds, "the consumer slept at least once a round")
    }
}
