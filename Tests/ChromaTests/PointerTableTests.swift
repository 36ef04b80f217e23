@testable import ChromaHTTP
@testable import Chroma
import XCTest

/// The engine's connection table against a Dictionary, through random churn.
final class PointerTableTests: XCTestCase {
    func testMatchesADictionaryThroughChurn() {
        var table = PointerTable<Int>()
        var reference: [UInt: Int] = [:]
        var generator = SystemRandomNumberGenerator()
        // Addresses like malloc's: 16-byte aligned, clustered, reused.
        let keys = (1...3000).map { UInt(0x7f00_0000_0000) + UInt($0) * 16 }
        for step in 0..<200_000 {
            let key = keys[Int(generator.next() % UInt64(step < 100_000 ? 3000 : 300))]
            let pointer = UnsafeMutableRawPointer(bitPattern: key)!
            if generator.next() % 3 == 0 {
                XCTAssertEqual(table.remove(pointer), reference.removeValue(forKey: key))
            } else {
                table.insert(step, for: pointer)
                reference[key] = step
            }
            if step % 997 == 0 {
                XCTAssertEqual(table.count, reference.count)
                for (k, v) in reference { XCTAssertEqual(table[UnsafeMutableRawPointer(bitPattern: k)!], v) }
            }
        }
        XCTAssertEqual(table.all.sorted(), reference.values.sorted())
    }
}
