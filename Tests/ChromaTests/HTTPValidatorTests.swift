@testable import ChromaHTTP
import XCTest

/// The parsing under conditional and range requests: HTTP-dates, entity tags, the RFC 9110
/// precondition order, and `Range` headers.
final class HTTPValidatorTests: XCTestCase {
    func testHTTPDatesInAllThreeForms() {
        let seconds = 784_111_777  // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example
        XCTAssertEqual(HTTPDateText.format(seconds), "Sun, 06 Nov 1994 08:49:37 GMT")
        XCTAssertEqual(HTTPDateText.parse("Sun, 06 Nov 1994 08:49:37 GMT"), seconds)
        XCTAssertEqual(HTTPDateText.parse("Sunday, 06-Nov-94 08:49:37 GMT"), seconds)
        XCTAssertEqual(HTTPDateText.parse("Sun Nov  6 08:49:37 1994"), seconds)
        XCTAssertEqual(HTTPDateText.parse(HTTPDateText.format(1_796_000_000)), 1_796_000_000)
        // The fixdate fast path against libc's calendar, leap years and centuries included.
        for seconds in stride(from: -2_000_000_000, through: 8_000_000_000, by: 7_777_777) {
            XCTAssertEqual(HTTPDateText.parse(HTTPDateText.format(seconds)), seconds, HTTPDateText.format(seconds))
        }
        XCTAssertEqual(HTTPDateText.parse("Thu, 29 Feb 2024 23:59:60 GMT"), 1_709_251_200)
        XCTAssertTrue(HTTPExchange.keptIn304("ETag") && HTTPExchange.keptIn304("last-modified") && HTTPExchange.keptIn304("Cache-Control"))
        XCTAssertFalse(HTTPExchange.keptIn304("Content-Type") || HTTPExchange.keptIn304("ETags") || HTTPExchange.keptIn304("Content-Length"))
        for bad in ["", "yesterday", "Sun, 06 Nov 1994 08:49 GMT", "Sun, 32 Nov 1994 08:49:37 GMT",
                    "Sun, 06 Nov 1994 08:49:37 PST", "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:00:00 GMT",
                    "Sun, 06 Nov 1994 08:49:3x GMT"] {
            XCTAssertNil(HTTPDateText.parse(bad), bad)
        }
    }

    func testEntityTagListsAndComparison() {
        let strong = EntityTag("\"abc\"")!, weak = EntityTag("W/\"abc\"")!
        XCTAssertTrue(strong.strongMatch(strong))
        XCTAssertFalse(strong.strongMatch(weak), "strong comparison refuses weak tags")
        XCTAssertTrue(strong.weakMatch(weak))
        XCTAssertNil(EntityTag("abc"), "unquoted")
        guard case .tags(let tags) = EntityTag.list(" \"a,b\" , W/\"c\",\"d\"") else { return XCTFail("a list") }
        XCTAssertEqual(tags.map(\.opaque), ["a,b", "c", "d"], "a comma inside quotes belongs to the tag")
        XCTAssertEqual(tags.map(\.weak), [false, true, false])
        guard case .any = EntityTag.list(" * ") else { return XCTFail("*") }
        XCTAssertNil(EntityTag.list("\"a\" \"b\""), "tags need commas between them")
        XCTAssertNil(EntityTag.list("\"unterminated"))
    }

    private func evaluate(_ headers: [String: String], method: String = "GET",
                          etag: String? = "\"v1\"", modified: Int? = 1_000_000) -> HTTPPrecondition {
        HTTPPrecondition.evaluate(method: method, validators: HTTPValidators(etag: etag, lastModified: modified)) { name in
            headers.first { $0.key.lowercased() == name.lowercased() }?.value
        }
    }

    func testPreconditionsFollowTheRFCOrder() {
        let before = HTTPDateText.format(999_999), at = HTTPDateText.format(1_000_000), after = HTTPDateText.format(1_000_001)
        XCTAssertEqual(evaluate([:]), .proceed)
        XCTAssertEqual(evaluate(["If-None-Match": "\"v1\""]), .notModified)
        XCTAssertEqual(evaluate(["If-None-Match": "W/\"v1\""]), .notModified, "If-None-Match compares weakly")
        XCTAssertEqual(evaluate(["If-None-Match": "\"v0\", \"v2\""]), .proceed)
        XCTAssertEqual(evaluate(["If-None-Match": "*"]), .notModified)
        XCTAssertEqual(evaluate(["If-None-Match": "\"v1\""], method: "PUT"), .failed, "unsafe methods get 412, not 304")
        XCTAssertEqual(evaluate(["If-Modified-Since": at]), .notModified)
        XCTAssertEqual(evaluate(["If-Modified-Since": before]), .proceed)
        XCTAssertEqual(evaluate(["If-Modified-Since": "garbage"]), .proceed, "an invalid date is ignored")
        XCTAssertEqual(evaluate(["If-None-Match": "\"v0\"", "If-Modified-Since": after]), .proceed,
                       "If-Modified-Since is ignored when If-None-Match is present")
        XCTAssertEqual(evaluate(["If-Modified-Since": after], method: "POST"), .proceed, "only GET and HEAD use If-Modified-Since")
        XCTAssertEqual(evaluate(["If-Match": "\"v1\""]), .proceed)
        XCTAssertEqual(evaluate(["If-Match": "W/\"v1\""]), .failed, "If-Match compares strongly")
        XCTAssertEqual(evaluate(["If-Match": "\"v2\""]), .failed)
        XCTAssertEqual(evaluate(["If-Match": "*"]), .proceed)
        XCTAssertEqual(evaluate(["If-Match": "\"v1\""], etag: nil), .failed, "no tag to match")
        XCTAssertEqual(evaluate(["If-Unmodified-Since": before]), .failed)
        XCTAssertEqual(evaluate(["If-Unmodified-Since": at]), .proceed)
        XCTAssertEqual(evaluate(["If-Match": "\"v1\"", "If-Unmodified-Since": before]), .proceed,
                       "If-Unmodified-Since is ignored when If-Match is present")
        XCTAssertEqual(evaluate(["If-Match": "\"v2\"", "If-None-Match": "\"v1\""]), .failed, "If-Match comes first")
    }

    func testIfRange() {
        let validators = HTTPValidators(etag: "\"v1\"", lastModified: 1_000_000)
        XCTAssertTrue(HTTPPrecondition.rangeApplies(ifRange: nil, validators: validators))
        XCTAssertTrue(HTTPPrecondition.rangeApplies(ifRange: "\"v1\"", validators: validators))
        XCTAssertFalse(HTTPPrecondition.rangeApplies(ifRange: "\"v0\"", validators: validators))
        XCTAssertFalse(HTTPPrecondition.rangeApplies(ifRange: "W/\"v1\"", validators: validators), "weak tags never match")
        XCTAssertTrue(HTTPPrecondition.rangeApplies(ifRange: HTTPDateText.format(1_000_000), validators: validators))
        XCTAssertFalse(HTTPPrecondition.rangeApplies(ifRange: HTTPDateText.format(1_000_001), validators: validators),
                       "a date must be exactly the last modification")
    }

    func testRangeHeaders() {
        typealias Span = ByteRanges.Span
        XCTAssertEqual(ByteRanges.parse("bytes=0-99", size: 1000), .ranges([Span(offset: 0, length: 100)]))
        XCTAssertEqual(ByteRanges.parse("bytes=900-", size: 1000), .ranges([Span(offset: 900, length: 100)]))
        XCTAssertEqual(ByteRanges.parse("bytes=-100", size: 1000), .ranges([Span(offset: 900, length: 100)]))
        XCTAssertEqual(ByteRanges.parse("bytes=-5000", size: 1000), .ranges([Span(offset: 0, length: 1000)]))
        XCTAssertEqual(ByteRanges.parse("bytes=990-2000", size: 1000), .ranges([Span(offset: 990, length: 10)]), "cut at the end")
        XCTAssertEqual(ByteRanges.parse("Bytes= 0-0 , -1", size: 1000), .ranges([Span(offset: 0, length: 1), Span(offset: 999, length: 1)]))
        XCTAssertEqual(ByteRanges.parse("bytes=1000-", size: 1000), .unsatisfiable)
        XCTAssertEqual(ByteRanges.parse("bytes=-0", size: 1000), .unsatisfiable)
        XCTAssertEqual(ByteRanges.parse("bytes=0-", size: 0), .unsatisfiable)
        XCTAssertEqual(ByteRanges.parse("bytes=2000-3000,0-9", size: 1000), .ranges([Span(offset: 0, length: 10)]),
                       "an unsatisfiable range beside a good one is left out")
        for ignored in ["items=0-1", "bytes=", "bytes=a-b", "bytes=5-1", "bytes=1-2-3", "bytes=+1-2", "bytes=0-9,5-20"] {
            XCTAssertEqual(ByteRanges.parse(ignored, size: 1000), .whole, ignored)
        }
        let many = "bytes=" + (0..<17).map { "\($0 * 10)-\($0 * 10 + 1)" }.joined(separator: ",")
        XCTAssertEqual(ByteRanges.parse(many, size: 1000), .whole, "more than 16 ranges")
    }
}
