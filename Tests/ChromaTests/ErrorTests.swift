import Chroma
import Foundation
import XCTest

/// Bad input gets a typed error naming the operation and the input; never a crash or a hang.
final class ErrorTests: XCTestCase {
    func testBadDescriptors() throws {
        let runtime = try startedRuntime()
        assertThrows(.badDescriptor(operation: "watch", fd: -1, errno: EBADF)) {
            try runtime.watch(-1, for: .readable) { _ in }
        }
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        close(fds[0])
        close(fds[1])
        assertThrows(.badDescriptor(operation: "watch", fd: fds[0], errno: EBADF)) {
            try runtime.watch(fds[0], for: .readable) { _ in }
        }
        let error = ChromaError.badDescriptor(operation: "watch", fd: 9, errno: EBADF)
        XCTAssertTrue(error.description.contains("watch fd 9"), error.description)
    }

    func testRegularFileCannotBeWatchedAndSaysWhich() throws {
        let runtime = try startedRuntime()
        let path = NSTemporaryDirectory() + "chroma-unpollable-\(getpid())"
        let fd = open(path, O_CREAT | O_RDWR, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd); unlink(path) }
        assertThrows(.unpollable(operation: "watch", fd: fd, call: "epoll_ctl", errno: EPERM)) {
            try runtime.watch(fd, for: .readable) { _ in }
        }
        // The refused fd is not left half-registered: a pipe on the same color still works.
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let fired = expectation(description: "pipe readable")
        let watch = try runtime.watch(fds[0], for: .readable) { _ in fired.fulfill() }
        var byte: UInt8 = 1
        XCTAssertEqual(write(fds[1], &byte, 1), 1)
        wait(for: [fired], timeout: hangTimeout)
        watch.cancel()
    }

    func testConflictingWatches() throws {
        let runtime = try startedRuntime()
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let first = try runtime.watch(fds[0], for: .readable, on: Color(1)) { _ in }
        do {
            try runtime.watch(fds[0], for: [.readable, .writable], on: Color(1)) { _ in }
            XCTFail("watching readable twice must fail")
        } catch {
            guard case .alreadyWatched(let op, let fd, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(op, "watch")
            XCTAssertEqual(fd, fds[0])
        }
        do {
            try runtime.watch(fds[0], for: .writable, on: Color(2)) { _ in }
            XCTFail("watching one fd from two colors must fail")
        } catch {
            guard case .alreadyWatched = error else { return XCTFail("\(error)") }
        }
        first.cancel()
        let again = try runtime.watch(fds[0], for: .readable, on: Color(2)) { _ in }
        again.cancel()
    }

    func testInvalidArguments() throws {
        let runtime = try startedRuntime()
        assertThrows(.invalidArgument(operation: "watch", detail: "interest must name .readable or .writable")) {
            try runtime.watch(0, for: []) { _ in }
        }
        assertThrows(.invalidArgument(operation: "onSignal", detail: "signal \(SIGKILL) cannot be caught")) {
            try runtime.onSignal(SIGKILL) {}
        }
        assertThrows(.invalidArgument(operation: "onSignal", detail: "signal 0 cannot be caught")) {
            try runtime.onSignal(0) {}
        }
        do {
            try runtime.schedule(after: .milliseconds(-5)) {}
            XCTFail("negative delay")
        } catch {
            guard case .invalidArgument(let op, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(op, "schedule")
        }
        do {
            try runtime.schedule(after: .zero, repeating: .zero) {}
            XCTFail("zero interval")
        } catch {
            guard case .invalidArgument = error else { return XCTFail("\(error)") }
        }
        assertThrows(.invalidArgument(operation: "Runtime.init", detail: "loops must be in 1...4096, got 0")) {
            try Runtime(loops: 0)
        }
    }

    func testLifecycleMisuse() throws {
        let runtime = try Runtime(loops: 1)
        assertThrows(.invalidState(operation: "execute", reason: "the runtime is not started; call start() first")) {
            try runtime.execute {}
        }
        try runtime.start()
        assertThrows(.invalidState(operation: "Runtime.start", reason: "the runtime was already started")) {
            try runtime.start()
        }
        let sawError = Locked<ChromaError?>(nil)
        let done = expectation(description: "ran")
        try runtime.execute {
            do { try runtime.shutdown() } catch { sawError.withLock { $0 = error as? ChromaError } }
            done.fulfill()
        }
        wait(for: [done], timeout: hangTimeout)
        guard case .invalidState(let op, _)? = sawError.snapshot else { return XCTFail("shutdown on a loop must throw") }
        XCTAssertEqual(op, "Runtime.shutdown")
        try runtime.shutdown()
        assertThrows(.invalidState(operation: "Runtime.start",
                                   reason: "the runtime was stopped; a runtime runs once, create a new one")) {
            try runtime.start()
        }
        // stop() before start() also ends the runtime for good.
        let unstarted = try Runtime(loops: 1)
        unstarted.stop()
        assertThrows(.invalidState(operation: "Runtime.start",
                                   reason: "the runtime was stopped; a runtime runs once, create a new one")) {
            try unstarted.start()
        }
    }
}
