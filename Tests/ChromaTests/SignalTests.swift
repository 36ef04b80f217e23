import Chroma
import Foundation
import XCTest

final class SignalTests: XCTestCase {
    func testSignalArrivesAsACallbackOnItsColor() throws {
        let runtime = try startedRuntime(loops: 2)
        let color = Color(1)
        let got = expectation(description: "SIGUSR1 delivered")
        let watch = try runtime.onSignal(SIGUSR1, on: color) {
            XCTAssertEqual(Color.current, color)
            got.fulfill()
        }
        XCTAssertEqual(kill(getpid(), SIGUSR1), 0)
        wait(for: [got], timeout: hangTimeout)
        XCTAssertTrue(watch.cancel())
    }
}
