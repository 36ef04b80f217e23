@testable import ChromaHTTP
import XCTest

/// The head scanner alone: where a request's head ends and how long it is, however the
/// bytes are split into reads.
final class HTTPHeadScannerTests: XCTestCase {
    private let crlfHead = Array("GET /index.html HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n".utf8)
    private let body = Array("name=value&more=1\r\n\r\n".utf8)

    /// Scans `reads` in order with a fresh scanner.
    private func scanned(_ reads: [ArraySlice<UInt8>], limit: Int = 1 << 20) -> HTTPHeadScanner {
        var scanner = HTTPHeadScanner(limit: limit)
        for read in reads { Array(read).withUnsafeBytes { scanner.scan($0) } }
        return scanner
    }

    func testAHeadThatEndsInOneReadIsCompleteAtItsBlankLine() {
        let scanner = scanned([ArraySlice(crlfHead + body)])
        XCTAssertTrue(scanner.isComplete)
        XCTAssertEqual(scanner.length, crlfHead.count, "the body's bytes (and its own blank line) are not the head's")
        XCTAssertFalse(scanner.isTooLarge)
    }

    func testEmptyLinesBeforeTheRequestLineAreNotTheHeadsEnd() {
        for prefix in ["\r\n", "\n", "\r\n\r\n"] {
            let request = Array(prefix.utf8) + crlfHead + body
            for cut in 0...request.count {
                let scanner = scanned([request[..<cut], request[cut...]])
                XCTAssertTrue(scanner.isComplete, "prefix \(prefix.utf8.count) bytes, cut at \(cut)")
                XCTAssertEqual(scanner.length, prefix.utf8.count + crlfHead.count, "prefix \(prefix.utf8.count) bytes, cut at \(cut)")
            }
        }
        // Counted against the limit like the rest of the head.
        XCTAssertTrue(scanned([ArraySlice(Array("\r\n".utf8) + crlfHead)], limit: crlfHead.count).isTooLarge)
    }

    func testAHeadSplitInTwoReadsAtEveryByteEndsAtTheSamePlace() {
        let request = crlfHead + body
        for cut in 0...request.count {
            let scanner = scanned([request[..<cut], request[cut...]])
            XCTAssertTrue(scanner.isComplete, "cut at \(cut)")
            XCTAssertEqual(scanner.length, crlfHead.count, "cut at \(cut)")
        }
    }

    func testAHeadSplitInThreeReadsAtEveryPairOfBytesEndsAtTheSamePlace() {
        let request = crlfHead + body
        var checked = 0
        for first in 0...request.count {
            for second in first...request.count {
                let scanner = scanned([request[..<first], request[first..<second], request[second...]])
                XCTAssertEqual(scanner.length, crlfHead.count, "cuts at \(first), \(second)")
                XCTAssertTrue(scanner.isComplete, "cuts at \(first), \(second)")
                checked += 1
            }
        }
        XCTAssertEqual(checked, (request.count + 1) * (request.count + 2) / 2)
    }

    func testAHeadArrivingOneByteAtATimeEndsAtItsBlankLine() {
        let request = crlfHead + body
        let scanner = scanned(request.indices.map { request[$0...$0] })
        XCTAssertTrue(scanner.isComplete)
        XCTAssertEqual(scanner.length, crlfHead.count)
    }

    func testEachSplitOfTheFinalCarriageReturnLineFeedPairIsFound() {
        // The last four bytes are "\r\n\r\n": cut before, between and after each of them.
        let end = crlfHead.count
        for cut in (end - 4)...end {
            let scanner = scanned([crlfHead[..<cut], crlfHead[cut...]])
            XCTAssertTrue(scanner.isComplete, "cut \(end - cut) bytes before the end")
            XCTAssertEqual(scanner.length, end)
        }
        let blankLineAlone = scanned([crlfHead[..<(end - 2)], crlfHead[(end - 2)..<(end - 1)], crlfHead[(end - 1)...]])
        XCTAssertTrue(blankLineAlone.isComplete, "\"\\r\" and \"\\n\" of the blank line in reads of their own")
        XCTAssertEqual(blankLineAlone.length, end)
    }

    func testBareLineFeedsEndAHeadAsEvhttpAcceptsThem() {
        let bare = Array("GET / HTTP/1.1\nHost: example\n\n".utf8)
        let request = bare + body
        for cut in 0...request.count {
            let scanner = scanned([request[..<cut], request[cut...]])
            XCTAssertTrue(scanner.isComplete, "cut at \(cut)")
            XCTAssertEqual(scanner.length, bare.count, "cut at \(cut)")
        }
        let mixed = Array("GET / HTTP/1.1\r\nHost: example\n\r\n".utf8)
        XCTAssertEqual(scanned([ArraySlice(mixed + body)]).length, mixed.count, "a line feed, then a blank CRLF line")
    }

    func testACarriageReturnInsideALineDoesNotEndTheHead() {
        let odd = Array("GET / HTTP/1.1\r\nX-Odd: a\rb\r\r\n\r\n".utf8)
        for cut in 0...odd.count {
            let scanner = scanned([odd[..<cut], odd[cut...]])
            XCTAssertTrue(scanner.isComplete, "cut at \(cut)")
            XCTAssertEqual(scanner.length, odd.count, "cut at \(cut)")
        }
    }

    func testAnUnfinishedHeadIsIncompleteAndCountsEveryByte() {
        let partial = crlfHead[..<(crlfHead.count - 2)]
        let scanner = scanned([partial[..<10], partial[10...]])
        XCTAssertFalse(scanner.isComplete)
        XCTAssertEqual(scanner.length, partial.count)
    }

    func testAHeadOverTheLimitIsTooLargeBeforeItEnds() {
        let limit = 32
        let line = Array("X-Filler: 0123456789\r\n".utf8)
        var scanner = HTTPHeadScanner(limit: limit)
        var reads = 0
        while !scanner.isTooLarge {
            line.withUnsafeBytes { scanner.scan($0) }
            reads += 1
            XCTAssertLessThan(reads, 10, "a growing head must pass the limit")
        }
        XCTAssertFalse(scanner.isComplete)
        XCTAssertEqual(scanner.length, reads * line.count)
        XCTAssertGreaterThan(scanner.length, limit)
    }

    func testAHeadIsTooLargeOnlyPastTheLimit() {
        XCTAssertFalse(scanned([ArraySlice(crlfHead)], limit: crlfHead.count).isTooLarge, "exactly the limit is allowed")
        let over = scanned([ArraySlice(crlfHead + body)], limit: crlfHead.count - 1)
        XCTAssertTrue(over.isComplete, "the end is still found")
        XCTAssertTrue(over.isTooLarge)
    }

    func testBytesAfterTheEndAreIgnoredUntilTheNextRequestStarts() {
        var scanner = scanned([ArraySlice(crlfHead)])
        body.withUnsafeBytes { scanner.scan($0) }
        XCTAssertEqual(scanner.length, crlfHead.count, "a completed head takes no more bytes")
        scanner.startRequest()
        XCTAssertFalse(scanner.isComplete)
        XCTAssertEqual(scanner.length, 0)
        let next = Array("HEAD / HTTP/1.1\r\n\r\n".utf8)
        next.withUnsafeBytes { scanner.scan($0) }
        XCTAssertTrue(scanner.isComplete)
        XCTAssertEqual(scanner.length, next.count)
    }

    func testAnEmptyReadChangesNothing() {
        var scanner = HTTPHeadScanner(limit: 100)
        [UInt8]().withUnsafeBytes { scanner.scan($0) }
        XCTAssertEqual(scanner.length, 0)
        XCTAssertFalse(scanner.isComplete)
        let request = crlfHead + body
        request.withUnsafeBytes { scanner.scan($0) }
        XCTAssertEqual(scanner.length, crlfHead.count)
    }
}
