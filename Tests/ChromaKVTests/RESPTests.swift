@testable import ChromaKV
import XCTest

/// chroma-kv's RESP2 parser and replies: what redis-cli and redis-benchmark send, in any
/// pieces, and Redis's own errors for what can never parse.
final class RESPTests: XCTestCase {
    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
    private func strings(_ request: [[UInt8]]?) -> [String]? {
        request.map { $0.map { String(decoding: $0, as: UTF8.self) } }
    }

    /// All complete requests in `text`, fed in one piece.
    private func parseAll(_ text: String, limits: RESPLimits = RESPLimits()) throws -> [[String]] {
        var parser = RESPParser(limits: limits)
        try parser.append(bytes(text))
        var out: [[String]] = []
        while let request = try parser.next() { out.append(strings(request)!) }
        return out
    }

    private func protocolError(_ text: String, limits: RESPLimits = RESPLimits()) -> String? {
        do {
            _ = try parseAll(text, limits: limits)
            return nil
        } catch let error as RESPProtocolError {
            return error.message
        } catch {
            return "\(error)"
        }
    }

    func testMultibulkAndPipelining() throws {
        let three = "*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
        XCTAssertEqual(try parseAll(three), [["PING"], ["SET", "key", "va\r\nl"], ["GET", "key"]])
        XCTAssertEqual(try parseAll("*2\r\n$3\r\nGET\r\n$0\r\n\r\n"), [["GET", ""]], "an empty bulk string")
        XCTAssertEqual(try parseAll("*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"), [["PING"]], "empty multibulks are skipped")
    }

    /// Every split of a pipeline into two pieces parses to the same requests.
    func testRequestsSplitAnywhere() throws {
        let text = bytes("*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\nPING\r\nSET a \"b c\"\r\n")
        for cut in 0...text.count {
            var parser = RESPParser()
            var out: [[String]] = []
            try parser.append(text[..<cut])
            while let request = try parser.next() { out.append(strings(request)!) }
            try parser.append(text[cut...])
            while let request = try parser.next() { out.append(strings(request)!) }
            XCTAssertEqual(out, [["ECHO", "hello"], ["PING"], ["SET", "a", "b c"]], "cut at \(cut)")
            XCTAssertEqual(parser.buffered, 0)
        }
    }

    func testInlineRequestsWithRedisQuoting() throws {
        XCTAssertEqual(try parseAll("PING\r\n"), [["PING"]])
        XCTAssertEqual(try parseAll("SET k v\n"), [["SET", "k", "v"]], "LF alone ends a line too")
        XCTAssertEqual(try parseAll("\r\n  \r\nGET   k  \r\n"), [["GET", "k"]], "empty lines and extra blanks")
        XCTAssertEqual(try parseAll("SET k \"a\\tb\\n\\x41\\\"\"\r\n"), [["SET", "k", "a\tb\nA\""]])
        XCTAssertEqual(try parseAll("SET k 'it\\'s'\r\n"), [["SET", "k", "it's"]])
        XCTAssertEqual(try parseAll("SET k \"\"\r\n"), [["SET", "k", ""]])
        XCTAssertEqual(protocolError("SET k \"open\r\n"), "Protocol error: unbalanced quotes in request")
        XCTAssertEqual(protocolError("SET k \"a\"b\r\n"), "Protocol error: unbalanced quotes in request")
        XCTAssertEqual(protocolError("SET k 'a\r\n"), "Protocol error: unbalanced quotes in request")
    }

    func testMalformedInputGetsRedisErrors() {
        XCTAssertEqual(protocolError("*x\r\n"), "Protocol error: invalid multibulk length")
        XCTAssertEqual(protocolError("*2\r\n$3\r\nGET\r\n:3\r\n"), "Protocol error: expected '$', got ':'")
        XCTAssertEqual(protocolError("*1\r\n$-5\r\n"), "Protocol error: invalid bulk length")
        XCTAssertEqual(protocolError("*1\r\n$99999999999999999999\r\n"), "Protocol error: invalid bulk length")
        XCTAssertEqual(protocolError("*1\r\n$abc\r\n"), "Protocol error: invalid bulk length")
        var small = RESPLimits()
        small.maxBulkLength = 10
        XCTAssertEqual(protocolError("*1\r\n$11\r\n", limits: small), "Protocol error: invalid bulk length")
        small.maxArguments = 4
        XCTAssertEqual(protocolError("*5\r\n", limits: small), "Protocol error: invalid multibulk length")
        XCTAssertEqual(protocolError("*" + String(repeating: "1", count: 40)), "Protocol error: too big mbulk count string")
        XCTAssertEqual(protocolError("*1\r\n$" + String(repeating: "1", count: 40)), "Protocol error: too big bulk count string")
    }

    func testLimitsOnLinesAndTheQueryBuffer() throws {
        var limits = RESPLimits()
        limits.maxInlineLength = 16
        XCTAssertEqual(protocolError(String(repeating: "a", count: 17), limits: limits), "Protocol error: too big inline request",
                       "an unterminated line past the limit fails at once")
        XCTAssertEqual(protocolError(String(repeating: "a", count: 20) + "\r\n", limits: limits), "Protocol error: too big inline request")
        XCTAssertEqual(try parseAll(String(repeating: "a", count: 15) + "\r\n", limits: limits), [[String(repeating: "a", count: 15)]])
        limits.maxQueryBuffer = 64
        var parser = RESPParser(limits: limits)
        XCTAssertThrowsError(try parser.append(Array(repeating: UInt8(ascii: "*"), count: 65)))
        // Parsed requests free their bytes: a long pipeline stays under the limit.
        var steady = RESPParser(limits: limits)
        for _ in 0..<1000 {
            try steady.append(bytes("*1\r\n$4\r\nPING\r\n"))
            XCTAssertEqual(strings(try steady.next()), ["PING"])
        }
    }

    func testRepliesEncodeAsRedisDoes() {
        XCTAssertEqual(RESPReply.ok.bytes, bytes("+OK\r\n"))
        XCTAssertEqual(RESPReply.error("ERR unknown command 'FOO'").bytes, bytes("-ERR unknown command 'FOO'\r\n"))
        XCTAssertEqual(RESPReply.integer(-42).bytes, bytes(":-42\r\n"))
        XCTAssertEqual(RESPReply.integer(Int.min).bytes, bytes(":\(Int.min)\r\n"))
        XCTAssertEqual(RESPReply.null.bytes, bytes("$-1\r\n"))
        XCTAssertEqual(RESPReply.array(nil).bytes, bytes("*-1\r\n"))
        XCTAssertEqual(RESPReply.bulk(bytes("a\r\nb")).bytes, bytes("$4\r\na\r\nb\r\n"))
        XCTAssertEqual(RESPReply.array([.bulk(bytes("x")), .null, .integer(0)]).bytes, bytes("*3\r\n$1\r\nx\r\n$-1\r\n:0\r\n"))
        XCTAssertEqual(RESPReply.array([]).bytes, bytes("*0\r\n"))
    }
}
