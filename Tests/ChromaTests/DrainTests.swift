@testable import Chroma
import Foundation
import Synchronization
import XCTest

/// How a loop's drain shares itself out: a mailbox backlog that producers keep ahead of the
/// loop does not starve the loop's own run queue, and a loop waiting on a producer stalled
/// between claiming a mailbox slot and filling it does not spin for it.
final class DrainTests: XCTestCase {
    /// A producer keeps thousands of slow jobs ahead of the loop; one of them queues a job
    /// on the loop's own run queue, which must run within a few budgets, not after the flood.
    func testLocalJobsRunDespiteAMailboxBacklog() throws {
        let runtime = try startedRuntime(loops: 1)
        let total = underTSan ? 60_000 : 200_000
        let marker = total / 10
        let floodRan = Atomic<Int>(0)
        let localRanAt = Atomic<Int>(-1)
        let done = Signal()
        onThreads(1) { _ in
            for i in 0..<total {
                try! runtime.execute {
                    // About a microsecond of work, so the producer stays far ahead.
                    let start = monotonicSeconds()
                    while monotonicSeconds() - start < 1e-6 {}
                    if floodRan.add(1, ordering: .relaxed).newValue == total { done.fire() }
                }
                if i == marker {
                    try! runtime.execute {  // on the loop: this one goes to the run queue
                        try! runtime.execute { localRanAt.store(floodRan.load(ordering: .relaxed), ordering: .relaxed) }
                    }
                }
            }
        }
        XCTAssertTrue(done.wait(seconds: 120), "the flood ran")
        let at = localRanAt.load(ordering: .relaxed)
        XCTAssertGreaterThanOrEqual(at, marker)
        XCTAssertLessThan(at, marker + 3 * Loop.budget,
                          "the local job waited behind \(at - marker) mailbox jobs queued after it")
    }

    /// A producer descheduled between claiming a slot and filling it (simulated: the claim is
    /// made by hand). The loop cannot sleep (a slot is claimed) and cannot run past it; it
    /// must poll, backing off, rather than spin. A repeating timer on the loop reads the loop
    /// thread's own CPU clock at each tick (timers fire whatever the mailbox holds): across
    /// `ticks` ticks the loop uses under a third of the time they span. Filling the slot then
    /// lets both jobs run.
    func testALoopWaitingOnAStalledProducerBacksOff() throws {
        let runtime = try startedRuntime(loops: 1)
        let ticks = 30
        let measuring = Atomic<Bool>(false)
        let samples = Locked<[(cpu: Double, wall: Double)]>([])
        let ticking = Signal()
        let windowEnd = Signal()
        // Scheduled before the claim: from this thread, scheduling goes through the mailbox.
        let timer = try runtime.schedule(after: .zero, repeating: .milliseconds(10)) {
            guard measuring.load(ordering: .acquiring) else { return ticking.fire() }
            let taken = samples.withLock { taken -> Int in
                taken.append((currentThreadCPUSeconds(), monotonicSeconds()))
                return taken.count
            }
            if taken == ticks + 1 { windowEnd.fire() }
        }
        defer { timer.cancel() }
        XCTAssertTrue(ticking.wait(), "the timer ticks")

        let mailbox = runtime.cores[0].mailbox
        let claimed = mailbox.tail.pointee.wrappingAdd(Mailbox.offsetUnit, ordering: .acquiringAndReleasing).oldValue
        let ran = Counter()
        let bothRan = Signal()
        try runtime.execute { if ran.increment() == 2 { bothRan.fire() } }  // wakes the loop; stuck behind the claim
        measuring.store(true, ordering: .releasing)
        let windowEnded = windowEnd.wait()
        timer.cancel()
        let window = samples.snapshot
        XCTAssertEqual(ran.current, 0, "nothing runs past an unfilled slot")

        let offset = Mailbox.offset(in: claimed)
        let segment = UnsafeMutableRawPointer(bitPattern: claimed & Mailbox.addressMask)!
        Mailbox.fill(Mailbox.slot(offset, of: segment), with: Job(color: 0, body: { if ran.increment() == 2 { bothRan.fire() } }))
        XCTAssertTrue(bothRan.wait(), "the filled slot and the job behind it ran")

        guard windowEnded, window.count > ticks else { return XCTFail("the timer stopped ticking while the loop waited") }
        let cpu = window[ticks].cpu - window[0].cpu, wall = window[ticks].wall - window[0].wall
        XCTAssertLessThan(cpu, wall / 3, "the loop spent \(cpu) s of CPU in \(wall) s waiting for one slot")
    }

    func testThePollDelayGrowsToAMillisecond() {
        XCTAssertEqual((0...4).map { Loop.pollDelay(afterStalledPolls: $0) }, [0, 0, 0, 0, 0])
        XCTAssertEqual(Loop.pollDelay(afterStalledPolls: 5), 20_000)
        XCTAssertEqual(Loop.pollDelay(afterStalledPolls: 6), 40_000)
        XCTAssertEqual(Loop.pollDelay(afterStalledPolls: 11), 1_000_000)
        XCTAssertEqual(Loop.pollDelay(afterStalledPolls: 1_000), 1_000_000)
    }
}
