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
    /// must poll, backing off, rather than spin. Its thread's CPU time over 300 ms, read by a
    /// watch callback on the loop (watches fire whatever the mailbox holds), stays low; then
    /// filling the slot lets both jobs run.
    func testALoopWaitingOnAStalledProducerBacksOff() throws {
        let runtime = try startedRuntime(loops: 1)
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let readEnd = fds[0], writeEnd = fds[1]
        let cpuSeen = Locked<[Double]>([])
        let readCPU = Signal()
        let watch = try runtime.watch(readEnd, for: .readable) { _ in
            var byte: UInt8 = 0
            _ = read(readEnd, &byte, 1)
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            cpuSeen.withLock { $0.append(Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9) }
            readCPU.fire()
        }
        defer { watch.cancel() }
        func loopCPU() -> Double? {
            var byte: UInt8 = 1
            guard write(writeEnd, &byte, 1) == 1, readCPU.wait() else { return nil }
            return cpuSeen.snapshot.last
        }

        let mailbox = runtime.cores[0].mailbox
        let claimed = mailbox.tail.pointee.wrappingAdd(Mailbox.offsetUnit, ordering: .acquiringAndReleasing).oldValue
        let ran = Counter()
        let bothRan = Signal()
        try runtime.execute { if ran.increment() == 2 { bothRan.fire() } }  // wakes the loop; stuck behind the claim
        guard let before = loopCPU() else { return XCTFail("the watch never fired") }
        usleep(300_000)  // the window the loop's CPU time is measured over
        guard let after = loopCPU() else { return XCTFail("the watch never fired") }
        XCTAssertEqual(ran.current, 0, "nothing runs past an unfilled slot")
        XCTAssertLessThan(after - before, 0.1, "the loop spent \(after - before) s of CPU in 0.3 s waiting for one slot")

        let offset = Mailbox.offset(in: claimed)
        let segment = UnsafeMutableRawPointer(bitPattern: claimed & Mailbox.addressMask)!
        Mailbox.fill(Mailbox.slot(offset, of: segment), with: Job(color: 0, body: { if ran.increment() == 2 { bothRan.fire() } }))
        XCTAssertTrue(bothRan.wait(), "the filled slot and the job behind it ran")
    }

    func testThePollDelayGrowsToAMillisecond() {
        XCTAssertEqual((0...4).map { Loop.pollDelay(afterStalledPolls: $0) }, [0, 0, 0, 0, 0])
        XCTAssertEqual(Loop.pollDelay(afterStalledPolls: 5), 20_000)
        XCTAssertEqual(Loop.pollDelay(afterStalledPolls: 6), 40_000)
        XCTAssertEqual(Loop.pollDelay(afterStalledPolls: 11), 1_000_000)
        XCTAssertEqual(Loop.pollDelay(afterStalledPolls: 1_000), 1_000_000)
    }
}
