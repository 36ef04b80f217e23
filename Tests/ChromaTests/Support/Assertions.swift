import Chroma
import XCTest

extension XCTestCase {
    /// Asserts that `body` throws exactly `expected`.
    func assertThrows<T>(_ expected: ChromaError, file: StaticString = #filePath, line: UInt = #line,
                         _ body: () throws -> T) {
        do {
            _ = try body()
            XCTFail("expected \(expected), nothing was thrown", file: file, line: line)
        } catch {
            XCTAssertEqual(error as? ChromaError, expected, file: file, line: line)
        }
    }
}
