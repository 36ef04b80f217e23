@testable import Chroma
import XCTest

final class PlacementTests: XCTestCase {
    func testEveryKindOfColorLandsOnTheLoopItWasMadeForWithAPowerOfTwoAndAnOddLoopCount() {
        for loops in [1, 2, 3, 4, 7, 16] {
            let placement = Placement(loopCount: loops)
            for index in 0..<loops {
                XCTAssertEqual(placement.loopIndex(of: placement.loopColor(index)), index, "loop color, \(loops) loops")
                for _ in 0..<5 {
                    XCTAssertEqual(placement.loopIndex(of: placement.makeColor(onLoop: index)), index, "on-loop color, \(loops) loops")
                }
            }
            for raw: UInt64 in [0, 1, 5, 1 << 33, (1 << 62) - 1] {
                XCTAssertEqual(placement.loopIndex(of: Color(raw)), Int(raw % UInt64(loops)), "the owner rule, \(loops) loops")
                XCTAssertEqual(placement.pin(Color(raw)), placement.loopIndex(of: Color(raw)), "colors stay on their owner")
            }
        }
    }

    func testFreshColorsGoRoundRobinAndNeverCollideWithOtherRanges() {
        let placement = Placement(loopCount: 3)
        var seen = Set<UInt64>()
        var owners: [Int] = []
        for _ in 0..<9 {
            let color = placement.makeColor()
            owners.append(placement.loopIndex(of: color))
            XCTAssertTrue(seen.insert(color.rawValue).inserted)
            XCTAssertGreaterThanOrEqual(color.rawValue, 1 << 32)
        }
        XCTAssertEqual(Set(owners.prefix(3)).count, 3, "three consecutive fresh colors cover three loops: \(owners)")
        for index in 0..<3 {
            for _ in 0..<9 {
                XCTAssertTrue(seen.insert(placement.makeColor(onLoop: index).rawValue).inserted)
            }
            let own = placement.loopColor(index)
            XCTAssertTrue(seen.insert(own.rawValue).inserted)
            XCTAssertGreaterThanOrEqual(own.rawValue, 1 << 60, "loop colors sit far above hand-written and fresh colors")
            XCTAssertLessThan(own.rawValue, 1 << 62, "a loop color is a valid color")
        }
    }

    func testTheRuntimeAnswersWithItsPlacement() throws {
        let runtime = try Runtime(loops: 3)
        for raw: UInt64 in [0, 1, 2, 3, 100] {
            XCTAssertEqual(runtime.loopIndex(of: Color(raw)), Int(raw % 3))
        }
        XCTAssertEqual(runtime.loopIndex(of: runtime.makeColor(onLoop: 2)), 2)
        XCTAssertNotEqual(runtime.loopColor(0), .main, "a loop's own color is not a user color")
    }
}
