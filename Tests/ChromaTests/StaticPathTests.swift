@testable import ChromaHTTP
import XCTest

/// Request paths to file paths: the one-pass plain case and the decoding path agree, and
/// every unsafe form is refused.
final class StaticPathTests: XCTestCase {
    func testResolution() {
        let cases: [(String, StaticPath.Resolution)] = [
            ("file4k.bin", .file("file4k.bin")),
            ("a/b/c.txt", .file("a/b/c.txt")),
            ("...", .file("...")),
            ("a/.../b", .file("a/.../b")),
            (".hidden", .file(".hidden")),
            ("", .file("index.html")),
            ("a/", .file("a/index.html")),
            ("a//b", .file("a/b")),
            ("/a", .file("a")),
            ("a/./b", .file("a/b")),
            (".", .file("index.html")),
            ("a/.", .file("a")),
            ("a%20b", .file("a b")),
            ("%2e%2e/x", .forbidden),
            ("..", .forbidden),
            ("a/../b", .forbidden),
            ("a/..", .forbidden),
            ("a%00b", .malformed),
            ("a%zz", .malformed),
            ("a%2", .malformed),
        ]
        for (path, expected) in cases {
            XCTAssertEqual(StaticPath.resolve(path), expected, path)
        }
    }
}
