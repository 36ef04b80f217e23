import Chroma
import Foundation
import Synchronization
import XCTest

/// Every kind of callback starts in one place (`Callback`): inside it `Color.current` is the
/// callback's color.
final class CallbackTests: XCTestCase {
    func testEveryKindOfCallbackSeesItsOwnColor() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let color = runtime.makeColor()
        let seen = expectation(description: "each kind saw its color")
        seen.expectedFulfillmentCount = 5
        let wrong = Atomic<Int>(0)
        @Sendable func check() {
            if Color.current != color { wrong.add(1, ordering: .relaxed) }
            seen.fulfill()
        }
        // A closure job, a function job, a timer, a watch and an executor job.
        try runtime.execute(on: color) { check() }
        let context = Unmanaged.passRetained(Box(check)).toOpaque()
        try runtime.execute(on: color, context: context) { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
        }
        try runtime.schedule(after: .milliseconds(1), on: color) { check() }
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let fired = Atomic<Bool>(false)
        let watch = try runtime.watch(fds[0], for: .readable, on: color) { _ in
            if !fired.exchange(true, ordering: .relaxed) { check() }
        }
        defer { watch.cancel() }
        XCTAssertEqual(write(fds[1], "x", 1), 1)
        let executor = runtime.executor(for: color)
        Task(executorPreference: executor.taskExecutor) { check() }
        wait(for: [seen], timeout: 10)
        XCTAssertEqual(wrong.load(ordering: .relaxed), 0, "a callback ran without its color current")

    }
}

private final class Box: @unchecked Sendable {
    // Safe to send: immutable.
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
