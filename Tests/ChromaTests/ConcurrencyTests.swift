@testable import Chroma
import Foundation
import Synchronization
import SystemPackage
import XCTest

/// Colors as executors: actors and tasks on colors, the adaptors both ways, async files,
/// sleep, cancellation.
final class ConcurrencyTests: XCTestCase {
    /// An actor on color X, hammered by tasks from many colors while plain callbacks of X
    /// are posted from many threads: nothing of X ever overlaps, every call and callback
    /// ran, each caller's calls arrived in order, and everything ran as X.
    func testActorAndCallbacksOfOneColorNeverOverlap() async throws {
        let runtime = try startedRuntime(loops: 2)
        let color = Color(1)
        let probe = OverlapProbe()
        let actor = ColorActor(executor: runtime.executor(for: color), probe: probe)
        let callers = 20
        let callsEach = underTSan ? 500 : 5000
        let callbacksEach = underTSan ? 2000 : 20_000
        let callbacksRan = Counter()
        let callbackOrderErrors = Counter()
        let callbacksDone = Signal()
        onThreads(4) { thread in
            let last = Locked(-1)
            for i in 0..<callbacksEach {
                try! runtime.execute(on: color) {
                    probe.enter()
                    let previous = last.withLock { value -> Int in defer { value = i }; return value }
                    if previous != i - 1 { callbackOrderErrors.increment() }
                    if Color.current != color { probe.wrongColor.add(1, ordering: .relaxed) }
                    probe.leave()
                    if callbacksRan.increment() == 4 * callbacksEach { callbacksDone.fire() }
                }
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for caller in 0..<callers {
                let callerColor = Color(UInt64(100 + caller))
                group.addTask(executorPreference: runtime.taskExecutor(for: callerColor)) {
                    for sequence in 0..<callsEach { await actor.call(from: caller, sequence: sequence) }
                }
            }
        }
        XCTAssertTrue(callbacksDone.wait())
        let calls = await actor.calls
        let outOfOrder = await actor.outOfOrder
        XCTAssertEqual(calls, callers * callsEach, "every actor call ran")
        XCTAssertEqual(callbacksRan.current, 4 * callbacksEach, "every callback ran")
        XCTAssertEqual(probe.overlaps.load(ordering: .relaxed), 0, "no two pieces of work of the color overlapped")
        XCTAssertEqual(probe.wrongColor.load(ordering: .relaxed), 0, "everything ran as the color")
        XCTAssertEqual(outOfOrder, 0, "each caller's calls arrived in order")
        XCTAssertEqual(callbackOrderErrors.current, 0, "each thread's callbacks ran in order")
    }

    /// 1,000,000 calls across 100 color-pinned actors, from 100 tasks on other colors.
    func testAMillionActorCallsAcrossAHundredActors() async throws {
        let runtime = try startedRuntime(loops: 2)
        let total = underTSan ? 100_000 : 1_000_000
        let actors = (0..<100).map { ColorActor(executor: runtime.executor(for: Color(UInt64($0))), probe: OverlapProbe()) }
        await withTaskGroup(of: Void.self) { group in
            for caller in 0..<100 {
                group.addTask(executorPreference: runtime.taskExecutor(for: Color(UInt64(1000 + caller)))) {
                    for i in 0..<(total / 100) { _ = await actors[(caller + i) % 100].increment() }
                }
            }
        }
        var sum = 0
        for actor in actors { sum += await actor.calls }
        XCTAssertEqual(sum, total)
    }

    /// The short circuit: a result already available returns without suspending. A
    /// callback queued on the task's own color before the call has not run when the call
    /// returns (the task never gave up the loop), and the task is still on its color. A
    /// result that comes later does suspend: then that callback runs first.
    func testAvailableResultDoesNotSuspend() async throws {
        let runtime = try startedRuntime(loops: 2)
        let color = Color(3)
        let (immediate, later) = try await runtime.spawnAndWait(on: color) { () async throws -> (Bool, Bool) in
            let ranBetween = Counter()
            try runtime.execute(on: color) { ranBetween.increment() }
            let value = await withCompletion { done in done(7) }
            XCTAssertEqual(value, 7)
            XCTAssertEqual(Color.current, color)
            let immediate = ranBetween.current == 0
            // A completion that can only come after the task yields: a callback of the
            // task's own color, which runs after the callback queued earlier (FIFO).
            let value2: Int = await withCompletion { done in
                try! runtime.execute(on: color) { done(8) }
            }
            XCTAssertEqual(value2, 8)
            XCTAssertEqual(Color.current, color, "resumed on its own color after the hop")
            return (immediate, ranBetween.current == 1)
        }
        XCTAssertTrue(immediate, "no suspension, no hop: the queued callback had not run")
        XCTAssertTrue(later, "a suspension let the queued callback run")
    }

    /// An actor calling an actor of its own color runs the call inline: no hop there and
    /// none back. A callback queued on the color before the calls has still not run after
    /// them, because the caller never gave up the loop.
    func testSameColorCallsDoNotHop() async throws {
        let runtime = try startedRuntime(loops: 2)
        let color = Color(5)
        let target = ColorActor(executor: runtime.executor(for: color), probe: OverlapProbe())
        let caller = CallerActor(executor: runtime.executor(for: color), runtime: runtime)
        let noHop = await caller.callWithoutHop(target, times: 100)
        XCTAssertTrue(noHop, "calls to an actor of the caller's own color ran inline")
        let calls = await target.calls
        XCTAssertEqual(calls, 100)
    }

    func testAssumeIsolatedInACallbackOfTheActorsColor() throws {
        let runtime = try startedRuntime(loops: 2)
        let actor = ColorActor(executor: runtime.executor(for: Color(6)), probe: OverlapProbe())
        let calls = try waitFor { (done: @escaping @Sendable (Int) -> Void) in
            try runtime.execute(on: Color(6)) {
                done(actor.assumeIsolated { $0.increment() })
            }
        }
        XCTAssertEqual(calls, 1)
        XCTAssertTrue(runtime.executor(for: Color(6)).isSameExclusiveExecutionContext(other: actor.executor))
        XCTAssertFalse(runtime.executor(for: Color(8)).isSameExclusiveExecutionContext(other: actor.executor))
    }

    /// On another color (here on the same loop, so only the color check can catch it),
    /// `assumeIsolated` traps. Checked in a child process running this one test.
    func testAssumeIsolatedTrapsOnAnotherColor() throws {
        if ProcessInfo.processInfo.environment["CHROMA_TRAP_CHILD"] == "1" {
            let runtime = try startedRuntime(loops: 2)
            let actor = ColorActor(executor: runtime.executor(for: Color(6)), probe: OverlapProbe())
            _ = try waitFor { (done: @escaping @Sendable (Int) -> Void) in
                try runtime.execute(on: Color(8)) {  // 8 % 2 == 6 % 2: same loop, other color
                    done(actor.assumeIsolated { $0.increment() })
                }
            }
            XCTFail("assumeIsolated returned on the wrong color")
            return
        }
        let status = try runThisTestInChild("ChromaTests.ConcurrencyTests/testAssumeIsolatedTrapsOnAnotherColor")
        XCTAssertTrue(status.signaled, "the child trapped (status \(status))")
    }

    func testTaskExecutorPreferenceRunsOnTheColor() async throws {
        let runtime = try startedRuntime(loops: 2)
        let color = Color(9)
        let seen = await Task(executorPreference: runtime.taskExecutor(for: color)) { () async -> (Color?, Bool) in
            let first = Color.current
            await Task.yield()
            return (first, Color.current == color)
        }.value
        XCTAssertEqual(seen.0, color)
        XCTAssertTrue(seen.1)
        let inside = await withTaskExecutorPreference(runtime.taskExecutor(for: color)) { () async -> Color? in
            await Task.yield()
            return Color.current
        }
        XCTAssertEqual(inside, color)
    }

    func testSpawnRunsAsyncCodeAndCompletesOnTheColor() throws {
        let runtime = try startedRuntime(loops: 2)
        let color = Color(11)
        let (value, ranOn) = try waitFor { (done: @escaping @Sendable ((Int?, Color?)) -> Void) in
            try runtime.execute(on: color) {
                runtime.spawn {
                    try await runtime.sleep(for: .milliseconds(1))
                    return 42
                } completion: { result in done(((try? result.get()), Color.current)) }
            }
        }
        XCTAssertEqual(value, 42)
        XCTAssertEqual(ranOn, color, "spawn defaults to the caller's color and completes there")
    }

    func testSleepWaitsAndCancels() async throws {
        let runtime = try startedRuntime(loops: 2)
        let start = monotonicSeconds()
        try await runtime.sleep(for: .milliseconds(50))
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.049, "never early")
        let task = Task { try await runtime.sleep(for: .seconds(2 * hangTimeout)) }
        task.cancel()
        let began = monotonicSeconds()
        do {
            try await task.value
            XCTFail("a cancelled sleep returned normally")
        } catch {
            XCTAssertTrue(error is CancellationError, "\(error)")
        }
        XCTAssertLessThan(monotonicSeconds() - began, hangTimeout, "cancellation ended the sleep, long before its time")
    }

    /// Cancelling a task cancels its pool job while it still waits in the queue: the task
    /// sees CancellationError and the call never runs.
    func testCancellationReachesAQueuedPoolJob() async throws {
        let runtime = try Runtime(loops: 1, pool: .init(workers: 1))
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let gate = Signal()
        let started = Signal()
        try runtime.blocking(on: .main, lane: .short, { started.fire(); _ = gate.wait() }, completion: { _ in })
        XCTAssertTrue(started.wait())
        var template = Array("/tmp/chroma-cancel-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = FilePath(dir).appending("never")
        let task = Task { try await runtime.files.write([1, 2, 3], to: target) }
        // Wait until the write is queued behind the held worker, then cancel.
        XCTAssertTrue(waitUntil { runtime.pool.queuedCount == 1 })
        task.cancel()
        do {
            try await task.value
            XCTFail("the cancelled write completed")
        } catch {
            XCTAssertTrue(error is CancellationError, "\(error)")
        }
        gate.fire()
        let after = try await runtime.files.stat(FilePath(dir))
        XCTAssertEqual(after.kind, .directory)
        XCTAssertFalse(FileManager.default.fileExists(atPath: target.string), "the cancelled write never ran")
        let blockingTask = Task { try await runtime.blocking { 1 } }
        let one = try await blockingTask.value
        XCTAssertEqual(one, 1)
    }

    func testAsyncFilesRoundTripOnAColor() async throws {
        let runtime = try startedRuntime(loops: 2)
        var template = Array("/tmp/chroma-async-XXXXXX".utf8CString)
        let dir = FilePath(template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) })
        defer { try? FileManager.default.removeItem(atPath: dir.string) }
        let color = Color(12)
        let files = runtime.files
        let ok = try await runtime.spawnAndWait(on: color) { () async throws -> Bool in
            let p = dir.appending("a.txt")
            try await files.write(Array("hello".utf8), to: p, atomic: true)
            XCTAssertEqual(Color.current, color)
            let fd = try await files.open(p, .readWrite)
            try await files.write(Array("J".utf8), to: fd, at: 0)
            let head = try await files.read(from: fd, at: 0, count: 5)
            try await files.fsync(fd)
            try await files.fdatasync(fd)
            try await files.truncate(fd, to: 4)
            let size = try await files.stat(fd).size
            XCTAssertEqual(size, 4)
            try await files.close(fd)
            XCTAssertEqual(head, Array("Jello".utf8))
            let whole = try await files.read(p)
            XCTAssertEqual(whole, Array("Jell".utf8))
            try await files.makeDirectory(dir.appending("x/y"), withIntermediates: true)
            try await files.rename(p, to: dir.appending("x/b.txt"))
            let names = try await files.list(dir.appending("x")).map(\.name).sorted()
            XCTAssertEqual(names, ["b.txt", "y"])
            let kind = try await files.lstat(dir.appending("x/b.txt")).kind
            XCTAssertEqual(kind, .regular)
            try await files.truncate(dir.appending("x/b.txt"), to: 0)
            let emptied = try await files.stat(dir.appending("x/b.txt")).size
            XCTAssertEqual(emptied, 0)
            try await files.remove(dir.appending("x/b.txt"))
            do {
                _ = try await files.read(dir.appending("missing"))
                XCTFail("read of a missing file succeeded")
            } catch let error as FileError {
                XCTAssertEqual(error.errno, .noSuchFileOrDirectory)
            }
            return Color.current == color
        }
        XCTAssertTrue(ok, "the task stayed on its color across every await")
    }

    func testExecutorJobsOutsideARunningRuntimeStillRun() async throws {
        let runtime = try Runtime(loops: 1)
        try runtime.start()
        let actor = ColorActor(executor: runtime.executor(for: Color(2)), probe: OverlapProbe())
        let first = await actor.increment()
        XCTAssertEqual(first, 1)
        try runtime.shutdown()
        // The runtime is gone; the actor's jobs run on the fallback thread instead of hanging.
        let second = await actor.increment()
        XCTAssertEqual(second, 2)
    }

    /// A task preferring color A's task executor calls an actor on color B and comes back:
    /// its nonisolated code runs as A again (on A's loop), never inline on B's loop.
    func testReturningFromAnActorGoesBackToTheTasksColor() async throws {
        let runtime = try startedRuntime(loops: 2)
        let target = ColorActor(executor: runtime.executor(for: Color(0)), probe: OverlapProbe())
        let wrong = try await Task(executorPreference: runtime.taskExecutor(for: Color(1))) { () async -> Int in
            var wrong = 0
            for _ in 0..<1000 {
                _ = await target.increment()
                if Color.current != Color(1) { wrong += 1 }
            }
            return wrong
        }.value
        XCTAssertEqual(wrong, 0, "after each call the task ran as its own color again")
    }
}
