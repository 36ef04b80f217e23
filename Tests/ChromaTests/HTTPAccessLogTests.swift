@testable import Chroma
@testable import ChromaHTTP
import Foundation
import XCTest

/// The access log: one common-log-format line per answer with its duration, batched to the
/// pool, whole lines even with several loops writing.
final class HTTPAccessLogTests: XCTestCase {
    private var scratch: ScratchDirectory!

    override func setUpWithError() throws {
        scratch = try ScratchDirectory("http-log")
    }

    override func tearDownWithError() throws {
        scratch.remove()
    }

    private func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// host - - [dd/Mon/yyyy:hh:mm:ss +0000] "request line" status bytes seconds
    private let format = try! NSRegularExpression(pattern:
        #"^127\.0\.0\.1 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "([^"]*)" (\d{3}) (\d+|-) (\d+\.\d{6})$"#)

    private func fields(_ line: String) -> (request: String, status: Int, bytes: String, seconds: Double)? {
        guard let match = format.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)) else { return nil }
        func group(_ index: Int) -> String { String(line[Range(match.range(at: index), in: line)!]) }
        return (group(1), Int(group(2))!, group(3), Double(group(4))!)
    }

    func testOneLinePerAnswerInTheCommonLogFormat() throws {
        let runtime = try startedRuntime(loops: 1)
        let path = scratch.path + "/access.log"
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(.ok, text: "Hello, World!") }
        routes.post("/echo") { request in request.respond(HTTPResponse(body: request.body)) }
        routes.get("/slow") { request in
            _ = try? runtime.schedule(after: .milliseconds(50), on: request.color) { request.respond(.ok, text: "late") }
        }
        let server = try runtime.serveHTTP(host: "127.0.0.1", port: 0, accessLog: try HTTPAccessLog(path: path), routes: routes)
        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        XCTAssertEqual(client.get("/hello")?.status, 200)
        XCTAssertEqual(client.get("/missing?x=1")?.status, 404)
        client.send("HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        XCTAssertEqual(client.response(head: true)?.status, 200)
        client.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde")
        XCTAssertEqual(client.response()?.text, "abcde")
        XCTAssertEqual(client.get("/slow")?.text, "late")
        client.send("GET /hello HTTP/1.0\r\n\r\n")
        XCTAssertEqual(client.response()?.status, 200)
        XCTAssertTrue(waitUntil { self.lines(path).count >= 6 }, "the lines reach the file within a sweep")
        let logged = lines(path).map(fields)
        XCTAssertEqual(logged.count, 6, "\(lines(path))")
        XCTAssertEqual(logged.map { $0?.request }, ["GET /hello HTTP/1.1", "GET /missing?x=1 HTTP/1.1", "HEAD /hello HTTP/1.1",
                                                    "POST /echo HTTP/1.1", "GET /slow HTTP/1.1", "GET /hello HTTP/1.0"])
        XCTAssertEqual(logged.map { $0?.status }, [200, 404, 200, 200, 200, 200])
        XCTAssertEqual(logged.map { $0?.bytes }, ["13", "10", "-", "5", "4", "13"], "body bytes; none for HEAD")
        let slow = try XCTUnwrap(logged[4]?.seconds)
        XCTAssertGreaterThanOrEqual(slow, 0.045, "the duration covers the handler's wait")
        XCTAssertLessThan(slow, 30)
        XCTAssertEqual(server.stats.accessLogDropped, 0)
    }

    func testLoopsWriteWholeLinesAndCloseWritesTheRest() throws {
        let runtime = try startedRuntime(loops: 2)
        let path = scratch.path + "/access.log"
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(.ok, text: "Hello, World!") }
        let server = try runtime.serveHTTP(host: "127.0.0.1", port: 0, accessLog: try HTTPAccessLog(path: path), routes: routes)
        let perClient = underTSan ? 100 : 500
        let clients = 8
        DispatchQueue.concurrentPerform(iterations: clients) { index in
            guard let client = try? HTTPTestClient(port: server.port) else { return XCTFail("connect") }
            defer { client.close() }
            for request in 0..<perClient {
                XCTAssertEqual(client.get("/hello?c=\(index)&r=\(request)")?.status, 200)
            }
        }
        server.close()
        XCTAssertTrue(waitUntil { self.lines(path).count >= clients * perClient }, "every line, the last ones written at close")
        let logged = lines(path)
        XCTAssertEqual(logged.count, clients * perClient)
        XCTAssertEqual(Set(logged.compactMap { fields($0)?.request }).count, clients * perClient, "every line whole and distinct")
        // Each client's lines keep its order (one connection: one loop, one batch order).
        for index in 0..<clients {
            let mine = logged.compactMap { fields($0)?.request }.filter { $0.hasPrefix("GET /hello?c=\(index)&") }
            XCTAssertEqual(mine, (0..<perClient).map { "GET /hello?c=\(index)&r=\($0) HTTP/1.1" })
        }
    }

    func testBadPathsAndEscaping() {
        XCTAssertThrowsError(try HTTPAccessLog(path: scratch.path + "/no/such/dir/log")) { error in
            XCTAssertTrue("\(error)".contains("no/such/dir/log"), "\(error)")
        }
        XCTAssertEqual(HTTPAccessLines.escaped("/a\"b\\c\u{1}d"), "/a\\x22b\\x5Cc\\x01d")
        XCTAssertEqual(HTTPAccessLines.escaped("/ünï"), "/ünï")
    }
}
