import Chroma
import Foundation
import XCTest

/// The per-tick budget: a flood of queued callbacks does not keep libevent from polling I/O.
final class FairnessTests: XCTestCase {
    func testReadinessIsServedInTheMiddleOfAFlood() throws {
        let runtime = try startedRuntime(loops: 1)
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let (r, w) = (fds[0], fds[1])
        defer { close(r); close(w) }
        let flood = underTSan ? 100_000 : 500_000
        let ran = Counter()
        let ranWhenReadable = Locked<Int?>(nil)
        let readable = expectation(description: "pipe readable")
        try runtime.watch(r, for: .readable) { _ in
            var byte: UInt8 = 0
            _ = read(r, &byte, 1)
            ranWhenReadable.withLock { $0 = ran.current }
            readable.fulfill()
        }
        // Hold the loop inside a callback while the flood is queued and the pipe written,
        // so both are waiting when it returns: one mailbox batch and one ready fd.
        let release = DispatchSemaphore(value: 0)
        let holding = expectation(description: "loop held")
        try runtime.execute {
            holding.fulfill()
            release.wait()
        }
        wait(for: [holding], timeout: hangTimeout)
        for _ in 0..<flood { try runtime.execute { ran.increment() } }
        var byte: UInt8 = 1
        XCTAssertEqual(write(w, &byte, 1), 1)
        release.signal()
        wait(for: [readable], timeout: hangTimeout)
        let atFire = try XCTUnwrap(ranWhenReadable.snapshot)
        // The drain budget is 4,096 callbacks per libevent callback; the fd must be served
        // within a few budgets, not after the whole flood.
        XCTAssertLessThan(atFire, 3 * 4096, "the ready fd waited for \(atFire) of \(flood) queued callbacks")
        print("fairness: the watch fired after \(atFire) of \(flood) queued callbacks")
    }
}
