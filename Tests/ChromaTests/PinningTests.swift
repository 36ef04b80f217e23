import Chroma
import Foundation
import XCTest

/// `pinToCPUs`: each loop's thread runs on the CPU of its own index.
final class PinningTests: XCTestCase {
    /// The CPUs this thread may run on, from the kernel's own view of it.
    private static func allowedCPUs() -> String? {
        guard let status = try? String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8) else { return nil }
        return status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
            .map { $0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces) }
    }

    func testPinnedLoopsRunOnTheirOwnCPU() throws {
        let cpus = Runtime.onlineCPUCount
        let runtime = try Runtime(loops: 2, pinToCPUs: true)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let seen = Locked<[Int: String]>([:])
        let done = expectation(description: "both loops reported")
        done.expectedFulfillmentCount = 2
        for loop in 0..<2 {
            try runtime.execute(on: Color(UInt64(loop))) {
                seen.withLock { $0[loop] = PinningTests.allowedCPUs() ?? "?" }
                done.fulfill()
            }
        }
        wait(for: [done], timeout: hangTimeout)
        XCTAssertEqual(seen.snapshot[0], "0")
        XCTAssertEqual(seen.snapshot[1], "\(1 % cpus)")
    }
}
