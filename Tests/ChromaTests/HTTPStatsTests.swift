@testable import Chroma
@testable import ChromaHTTP
import Foundation
import XCTest

/// `HTTPServer.stats`: answers by status class, open connections and limit rejections
/// agree with the work a test did.
final class HTTPStatsTests: XCTestCase {
    func testCountersMatchServedWork() throws {
        let runtime = try startedRuntime()
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(.ok, text: "Hello, World!") }
        routes.get("/moved") { request in request.respond(301, text: "") }
        routes.get("/broken") { request in request.respond(.internalServerError, text: "no") }
        routes.get("/dropped") { _ in }  // never answered: the server answers 500
        let server = try runtime.serveHTTP(host: "127.0.0.1", port: 0, limits: HTTPLimits(maxHeaderBytes: 1024), routes: routes)

        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        for _ in 0..<5 { XCTAssertEqual(client.get("/hello")?.status, 200) }
        XCTAssertEqual(client.get("/moved")?.status, 301)
        XCTAssertEqual(client.get("/missing")?.status, 404)
        XCTAssertEqual(client.get("/broken")?.status, 500)
        XCTAssertEqual(client.get("/dropped")?.status, 500)

        let second = try HTTPTestClient(port: server.port)
        XCTAssertEqual(second.get("/hello")?.status, 200)
        XCTAssertEqual(server.stats.openConnections, 2, "both keep-alive connections are open")

        // A head over the limit: 413 and a close, counted as a rejection.
        let big = try HTTPTestClient(port: server.port)
        big.send("GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: \(String(repeating: "a", count: 2048))\r\n\r\n")
        XCTAssertEqual(big.response()?.status, 413)
        XCTAssertTrue(big.waitForClose())
        big.close()

        second.close()
        XCTAssertTrue(waitUntil { server.stats.openConnections == 1 }, "closed connections leave the count: \(server.stats)")
        let stats = server.stats
        XCTAssertEqual(stats.requests, 10, "routed requests; the 413 never reached a route")
        XCTAssertEqual(stats.answers.successful, 6)
        XCTAssertEqual(stats.answers.redirection, 1)
        XCTAssertEqual(stats.answers.clientError, 2, "the 404 and the 413")
        XCTAssertEqual(stats.answers.serverError, 2, "the handler's 500 and the dropped request's")
        XCTAssertEqual(stats.answers.informational, 0)
        XCTAssertEqual(stats.answers.total, 11)
        XCTAssertEqual(stats.limitRejections, 1)
        XCTAssertEqual(stats.connections, 3)
        XCTAssertEqual(stats.requestTimeouts, 0)

        server.close()
        XCTAssertTrue(waitUntil { server.stats.openConnections == 0 }, "close ends every connection: \(server.stats)")
    }

    func testRequestDeadlineCountsAsARejection() throws {
        let runtime = try startedRuntime(loops: 1)
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(.ok, text: "Hello, World!") }
        let server = try runtime.serveHTTP(host: "127.0.0.1", port: 0, limits: HTTPLimits(requestTimeout: .milliseconds(200)), routes: routes)
        let slow = try HTTPTestClient(port: server.port)
        defer { slow.close() }
        slow.send("GET /hello HTTP/1.1\r\nHost: t\r\n")  // the head never ends
        XCTAssertEqual(slow.response()?.status, 408)
        XCTAssertTrue(slow.waitForClose())
        let stats = server.stats
        XCTAssertEqual(stats.requestTimeouts, 1)
        XCTAssertEqual(stats.limitRejections, 1)
        XCTAssertEqual(stats.answers.clientError, 1)
        XCTAssertEqual(stats.requests, 0)
    }
}
