@testable import Chroma
import CChroma
import Foundation
import Synchronization
import XCTest

/// The diagnostics: enqueue sites and chains, the stall watchdog (stalls, its threshold,
/// its rate limit, overloaded loops), crash context, and `statistics()`.
final class DiagnosticsTests: XCTestCase {
    private static let file = "ChromaTests/DiagnosticsTests.swift"

    /// A runtime whose reports are collected (and also logged, as users would see them).
    private func watchedRuntime(loops: Int = 1, threshold: Duration = .milliseconds(25), chains: Bool = false,
                                reports: Locked<[StallReport]>, onReport: Signal? = nil) throws -> Runtime {
        let diagnostics = Diagnostics(stallThreshold: threshold, chains: chains) { report in
            reports.withLock { $0.append(report) }
            onReport?.fire()
        }
        let runtime = try Runtime(loops: loops, stealing: .off, diagnostics: diagnostics)
        try runtime.start()
        addTeardownBlock { _ = try? runtime.shutdown() }
        return runtime
    }

    /// Waits until the watchdog has made `rounds` more sampling rounds than now.
    private func waitForWatchdog(_ runtime: Runtime, rounds: Int = 3) -> Bool {
        let start = runtime.watchdog!.rounds.load(ordering: .acquiring)
        return waitUntil { runtime.watchdog!.rounds.load(ordering: .acquiring) >= start + rounds }
    }

    func testSitesNameTheCallOfEachAPI() throws {
        let runtime = try startedRuntime(loops: 2)
        let line = Locked<[Int]>([])
        let seen = Locked<[EnqueueSite?]>([])
        let done = Signal()
        line.withLock { $0.append(#line) }; try runtime.execute(on: Color(3)) { seen.withLock { $0.append(Runtime.currentSite) }; done.fire() }
        XCTAssertTrue(done.wait())
        line.withLock { $0.append(#line) }; try runtime.schedule(after: .milliseconds(1), on: Color(4)) { seen.withLock { $0.append(Runtime.currentSite) }; done.fire() }
        XCTAssertTrue(done.wait())
        line.withLock { $0.append(#line) }; try runtime.blocking(on: Color(5)) { 1 } completion: { _ in seen.withLock { $0.append(Runtime.currentSite) }; done.fire() }
        XCTAssertTrue(done.wait())
        XCTAssertNil(Runtime.currentSite, "outside callbacks there is no site")
        let sites = seen.snapshot
        XCTAssertEqual(sites.map { $0?.fileID }, Array(repeating: DiagnosticsTests.file, count: 3))
        XCTAssertEqual(sites.map { $0?.line }, line.snapshot)
    }

    func testSpawnedTaskCarriesItsSite() throws {
        let runtime = try startedRuntime(loops: 1)
        let line = #line; let site = try waitFor { (done: @escaping @Sendable (EnqueueSite?) -> Void) in runtime.spawn(on: Color(2)) {
                await Task.yield()
                return EnqueueSite.named(chroma_current_site())
            } completion: { result in done(try? result.get() ?? nil) }
        }
        XCTAssertEqual(site?.fileID, DiagnosticsTests.file)
        XCTAssertEqual(site?.line, line)
    }

    /// A callback that spins for 100 ms is reported once, naming the line that queued it and
    /// the chain of the three callbacks before it.
    func testStallIsReportedOnceWithSiteAndChain() throws {
        let reports = Locked<[StallReport]>([])
        let reported = Signal()
        let runtime = try watchedRuntime(chains: true, reports: reports, onReport: reported)
        let lines = Locked<[Int]>([])
        let finished = Signal()
        lines.withLock { $0.append(#line) }; try runtime.execute(on: Color(1)) {
            lines.withLock { $0.append(#line) }; try? runtime.execute(on: Color(2)) {
                lines.withLock { $0.append(#line) }; try? runtime.execute(on: Color(3)) {
                    lines.withLock { $0.append(#line) }; try? runtime.execute(on: Color(4)) {
                        spin(milliseconds: 100)
                        finished.fire()
                    }
                }
            }
        }
        XCTAssertTrue(finished.wait())
        XCTAssertTrue(reported.wait(), "the stall was reported")
        XCTAssertTrue(waitForWatchdog(runtime))
        let stalls = reports.snapshot.filter { $0.kind == .stalled }
        XCTAssertEqual(stalls.count, 1, "one report for one stall: \(stalls)")
        guard let report = stalls.first else { return }
        let expected = lines.snapshot
        XCTAssertEqual(report.loop, 0)
        XCTAssertEqual(report.color, Color(4))
        XCTAssertGreaterThanOrEqual(report.duration, .milliseconds(25))
        XCTAssertEqual(report.site?.fileID, DiagnosticsTests.file)
        XCTAssertEqual(report.site?.line, expected[3])
        XCTAssertEqual(report.chain.map(\.line), [expected[2], expected[1], expected[0]], "\(report)")
        XCTAssertEqual(Set(report.chain.map(\.fileID)), [DiagnosticsTests.file])
        XCTAssertTrue(report.description.contains("\(DiagnosticsTests.file):\(expected[3])"), report.description)
    }

    func testShortCallbacksAreNotReported() throws {
        let reports = Locked<[StallReport]>([])
        let runtime = try watchedRuntime(reports: reports)
        for _ in 0..<10 {
            _ = try waitFor { (done: @escaping @Sendable (Bool) -> Void) in
                try runtime.execute { spin(milliseconds: 5); done(true) }
            }
        }
        XCTAssertTrue(waitForWatchdog(runtime))
        XCTAssertEqual(reports.snapshot.count, 0, "\(reports.snapshot)")
    }

    /// Eight loops stalling together give eight stalls; five reports go out, three are dropped.
    func testRateLimitHolds() throws {
        let reports = Locked<[StallReport]>([])
        let runtime = try watchedRuntime(loops: 8, threshold: .milliseconds(10), reports: reports)
        let finished = Signal()
        let watchdog = try XCTUnwrap(runtime.watchdog)
        for loop in 0..<8 {
            try runtime.execute(on: runtime.makeColor(onLoop: loop)) {
                // 60 ms, and long enough for the watchdog to have looked 20 times: with eight
                // loops on a loaded machine its thread may get no core for a while.
                let start = watchdog.rounds.load(ordering: .acquiring)
                let end = monotonicSeconds() + 0.06
                while monotonicSeconds() < end || watchdog.rounds.load(ordering: .acquiring) < start + 20 {}
                finished.fire()
            }
        }
        XCTAssertTrue(finished.wait(count: 8))
        XCTAssertTrue(waitForWatchdog(runtime))
        let stalls = reports.snapshot
        XCTAssertEqual(stalls.count, Watchdog.reportsPerMinute, "\(stalls.map(\.loop))")
        XCTAssertEqual(stalls.count + runtime.watchdog!.dropped.load(ordering: .relaxed), 8)
    }

    /// Many 2 ms jobs queued at once: none is long, but the last ones wait far past the
    /// threshold.
    func testQueueDelayPastTheThresholdIsOverloaded() throws {
        let reports = Locked<[StallReport]>([])
        let reported = Signal()
        let runtime = try watchedRuntime(threshold: .milliseconds(20), reports: reports, onReport: reported)
        let finished = Signal()
        try runtime.execute {
            for _ in 0..<150 { try? runtime.execute { spin(milliseconds: 2); finished.fire() } }
        }
        XCTAssertTrue(finished.wait(count: 150))
        XCTAssertTrue(reported.wait())
        let seen = reports.snapshot
        XCTAssertFalse(seen.contains { $0.kind == .stalled }, "\(seen)")
        let overloaded = seen.filter { $0.kind == .overloaded }
        XCTAssertFalse(overloaded.isEmpty)
        XCTAssertGreaterThanOrEqual(overloaded[0].duration, .milliseconds(20))
        XCTAssertGreaterThan(overloaded[0].queueDepth ?? 0, 0)
        XCTAssertNotNil(runtime.statistics().loops[0].maxQueueDelay)
    }

    /// A callback that crashes prints its color, site and chain before the process dies.
    func testCrashPrintsTheChain() throws {
        if ProcessInfo.processInfo.environment["CHROMA_TRAP_CHILD"] == "1" {
            let runtime = try Runtime(loops: 1, diagnostics: Diagnostics(chains: true))
            try runtime.start()
            let a = #line; try runtime.execute(on: Color(7)) {
                let b = #line; try? runtime.execute(on: Color(8)) {
                    let c = #line; try? runtime.execute(on: Color(9)) {
                        FileHandle.standardError.write(Data("lines \(a) \(b) \(c)\n".utf8))
                        preconditionFailure("crash inside a callback")
                    }
                }
            }
            Thread.sleep(forTimeInterval: hangTimeout)
            XCTFail("the child did not crash")
            return
        }
        let child = try runThisTestInChild("ChromaTests.DiagnosticsTests/testCrashPrintsTheChain", keepingStandardError: true)
        XCTAssertTrue(child.signaled, "the child trapped (status \(child.code))")
        let text = child.standardError
        let lines = text.split(separator: "\n").first { $0.hasPrefix("lines ") }?.split(separator: " ").dropFirst().compactMap { Int($0) } ?? []
        XCTAssertEqual(lines.count, 3, text)
        guard lines.count == 3 else { return }
        XCTAssertTrue(text.contains("chroma: fatal signal"), text)
        XCTAssertTrue(text.contains("in a callback on loop 0, color 9"), text)
        XCTAssertTrue(text.contains("queued at \(DiagnosticsTests.file):\(lines[2])\n"), text)
        XCTAssertTrue(text.contains("by a callback queued at \(DiagnosticsTests.file):\(lines[1])\n"), text)
        XCTAssertTrue(text.contains("by a callback queued at \(DiagnosticsTests.file):\(lines[0])\n"), text)
    }

    /// Counted work and the counters agree.
    func testStatisticsMatchCountedWork() throws {
        let runtime = try Runtime(loops: 2, stealing: .off, diagnostics: Diagnostics(stallThreshold: .zero))
        try runtime.start()
        addTeardownBlock { _ = try? runtime.shutdown() }
        let posts = underTSan ? 200 : 2_000
        let followUps = 3
        let finished = Signal()
        for i in 0..<posts {
            try runtime.execute(on: Color(UInt64(i % 16))) {
                for _ in 0..<followUps { try? runtime.execute(on: Color(UInt64(i % 16))) { finished.fire() } }
            }
        }
        XCTAssertTrue(finished.wait(count: posts * followUps))
        let pool = Signal()
        for _ in 0..<10 { try runtime.blocking { 1 } completion: { _ in pool.fire() } }
        XCTAssertTrue(pool.wait(count: 10))
        let stats = runtime.statistics()
        XCTAssertEqual(stats.callbacks, posts * (1 + followUps) + 10, "counted as each callback starts")
        XCTAssertLessThanOrEqual(stats.loops.reduce(0) { $0 + $1.mailboxJobs }, posts + 10)
        XCTAssertNil(stats.loops[0].busyShare, "no watchdog, no samples")
        XCTAssertEqual(stats.pool.completed, 10)
        XCTAssertEqual(stats.pool.running, 0)
        XCTAssertEqual(stats.pool.queued, 0)
        XCTAssertEqual(stats.pool.cancelled, 0)
        // A drain's mailbox and wakeup counts land when the drain ends, which may be after
        // the callback that fired the signal: after shutdown every drain has ended.
        _ = try runtime.shutdown()
        let final = runtime.statistics()
        XCTAssertEqual(final.callbacks, posts * (1 + followUps) + 10, "counts survive the loops")
        XCTAssertEqual(final.loops.reduce(0) { $0 + $1.mailboxJobs }, posts + 10, "posts and pool completions came from other threads")
        XCTAssertTrue(final.loops.allSatisfy { $0.wakeups > 0 })
    }
}

/// Busy-waits `milliseconds` on the monotonic clock: a callback that blocks its loop.
private func spin(milliseconds: Double) {
    let end = monotonicSeconds() + milliseconds / 1000
    while monotonicSeconds() < end {}
}
