@_spi(Engine) import Chroma
import XCTest

/// `ByteArray.make`: the bytes its source writes, exactly those (its one allocation is
/// counted in `AllocationTests`).
final class ByteArrayTests: XCTestCase {
    /// Writes `wanted` bytes of a pattern (at most the count offered) and counts its calls.
    final class Pattern: ByteArraySource {
        let wanted: Int
        var calls = 0
        var offered = 0
        init(wanted: Int) { self.wanted = wanted }
        func write(into start: UnsafeMutableRawPointer, count: Int) -> Int {
            calls += 1
            offered = count
            let n = min(wanted, count)
            for i in 0..<n { start.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ 7), toByteOffset: i, as: UInt8.self) }
            return n
        }
    }

    private func pattern(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) } }

    func testTheArrayHoldsExactlyTheBytesWritten() {
        for (count, wanted) in [(1, 1), (13, 13), (4096, 4096), (4096, 1000), (100_000, 99_999), (64, 0)] {
            let source = Pattern(wanted: wanted)
            let bytes = ByteArray.make(count: count, source)
            XCTAssertEqual(source.calls, 1, "the source runs once (count \(count))")
            XCTAssertEqual(source.offered, count, "the source is offered the count asked for")
            XCTAssertEqual(bytes, pattern(wanted), "count \(count), \(wanted) written")
            XCTAssertGreaterThanOrEqual(bytes.capacity, count)
        }
    }

    /// The made array is an ordinary one: appending to it and copying it behave.
    func testTheArrayGrowsAndCopiesLikeAnyOther() {
        var bytes = ByteArray.make(count: 8, Pattern(wanted: 8))
        let copy = bytes
        bytes.append(contentsOf: [1, 2, 3])
        XCTAssertEqual(bytes, pattern(8) + [1, 2, 3])
        XCTAssertEqual(copy, pattern(8), "the copy kept its own bytes")
    }
}
