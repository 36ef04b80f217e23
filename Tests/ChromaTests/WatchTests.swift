import Chroma
import Foundation
import XCTest

final class WatchTests: XCTestCase {
    private func makePipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        return (fds[0], fds[1])
    }

    private func makeSocketPair() -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        return (fds[0], fds[1])
    }

    func testPipeReadableFiresOnItsColorAndPersists() throws {
        let runtime = try startedRuntime(loops: 2)
        let (r, w) = makePipe()
        defer { close(r); close(w) }
        let color = Color(1)
        let received = Locked<[UInt8]>([])
        let two = expectation(description: "two bytes read")
        two.expectedFulfillmentCount = 2
        let watch = try runtime.watch(r, for: .readable, on: color) { readiness in
            XCTAssertEqual(readiness, .readable)
            XCTAssertEqual(Color.current, color)
            var byte: UInt8 = 0
            if read(r, &byte, 1) == 1 {
                received.withLock { $0.append(byte) }
                two.fulfill()
            }
        }
        var a: UInt8 = 7
        XCTAssertEqual(write(w, &a, 1), 1)
        // The watch is persistent: a second write fires it again.
        var b: UInt8 = 9
        XCTAssertEqual(write(w, &b, 1), 1)
        wait(for: [two], timeout: hangTimeout)
        XCTAssertEqual(received.snapshot, [7, 9])
        XCTAssertTrue(watch.cancel())
        XCTAssertFalse(watch.cancel())
    }

    func testSocketPairWritableAndReadable() throws {
        let runtime = try startedRuntime(loops: 2)
        let (x, y) = makeSocketPair()
        defer { close(x); close(y) }
        let writable = expectation(description: "writable")
        let readable = expectation(description: "readable")
        let color = runtime.makeColor()
        let wWatch = Locked<Watch?>(nil)
        let w = try runtime.watch(x, for: .writable, on: color) { readiness in
            XCTAssertTrue(readiness.contains(.writable))
            // Write once, then stop watching: a writable socket would fire forever.
            if wWatch.withLock({ $0 })?.cancel() ?? false {
                var byte: UInt8 = 42
                _ = write(x, &byte, 1)
                writable.fulfill()
            }
        }
        wWatch.withLock { $0 = w }
        try runtime.watch(y, for: .readable, on: runtime.makeColor()) { _ in
            var byte: UInt8 = 0
            if read(y, &byte, 1) == 1 && byte == 42 { readable.fulfill() }
        }
        wait(for: [writable, readable], timeout: hangTimeout)
    }

    func testCancelledWatchNeverFiresAgain() throws {
        let runtime = try startedRuntime(loops: 2)
        let (r, w) = makePipe()
        defer { close(r); close(w) }
        let color = Color(1)
        let fired = Counter()
        let watch = try runtime.watch(r, for: .readable, on: color) { _ in fired.increment() }
        let cancelled = Locked<Bool>(false)
        onThreads(1) { _ in cancelled.withLock { $0 = watch.cancel() } }  // from another thread
        XCTAssertTrue(cancelled.snapshot)
        var byte: UInt8 = 1
        XCTAssertEqual(write(w, &byte, 1), 1)
        // The same fd can be watched again once cancelled; this one sees the byte.
        let again = expectation(description: "new watch fires")
        let second = try runtime.watch(r, for: .readable, on: color) { _ in
            var b: UInt8 = 0
            if read(r, &b, 1) == 1 { again.fulfill() }
        }
        wait(for: [again], timeout: hangTimeout)
        second.cancel()
        XCTAssertEqual(fired.current, 0)
    }

    func testReadableAndWritableWatchesOnOneFdCoexist() throws {
        let runtime = try startedRuntime(loops: 2)
        let (x, y) = makeSocketPair()
        defer { close(x); close(y) }
        let color = Color(4)
        let readable = expectation(description: "readable")
        let writable = expectation(description: "writable")
        let rw = try runtime.watch(x, for: .readable, on: color) { _ in
            var b: UInt8 = 0
            if read(x, &b, 1) == 1 { readable.fulfill() }
        }
        let ww = Locked<Watch?>(nil)
        let w = try runtime.watch(x, for: .writable, on: color) { _ in
            if ww.withLock({ $0 })?.cancel() ?? false { writable.fulfill() }
        }
        ww.withLock { $0 = w }
        var byte: UInt8 = 3
        XCTAssertEqual(write(y, &byte, 1), 1)
        wait(for: [readable, writable], timeout: hangTimeout)
        rw.cancel()
    }
}
