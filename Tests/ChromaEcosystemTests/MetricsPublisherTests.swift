import Chroma
import ChromaHTTP
import ChromaMetrics
import Foundation
import MetricsTestKit
import XCTest

/// ChromaMetrics publishes the runtime's and an HTTP server's counters to a `MetricsFactory`.
final class MetricsPublisherTests: XCTestCase {
    func testPublishesCountersAndGaugesToTheFactory() throws {
        let runtime = try Runtime(loops: 2, stealing: .off, diagnostics: Diagnostics(stallThreshold: .zero))
        try runtime.start()
        addTeardownBlock { _ = try? runtime.shutdown() }
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(.ok, text: "Hello, World!") }
        let server = try runtime.serveHTTP(host: "127.0.0.1", port: 0, routes: routes)
        let port = String(server.port)

        let ran = DispatchSemaphore(value: 0)
        for i in 0..<100 { try runtime.execute(on: Color(UInt64(i))) { ran.signal() } }
        for _ in 0..<100 { XCTAssertEqual(ran.wait(timeout: .now() + hangTimeout), .success) }
        let client = try LoopbackHTTP(port: server.port)
        for _ in 0..<5 { XCTAssertEqual(client.get("/hello")?.status, 200) }
        XCTAssertEqual(client.get("/missing")?.status, 404)

        let metrics = TestMetrics()
        let publisher = MetricsPublisher(runtime: runtime, servers: [server], factory: metrics)
        publisher.publish()
        let callbacks = metrics.counterTotal(label: "chroma_loop_callbacks_total")
        XCTAssertGreaterThanOrEqual(callbacks, 100 + 6, "the posted jobs and the requests' handlers")
        XCTAssertLessThanOrEqual(callbacks, Int64(runtime.statistics().callbacks))
        XCTAssertEqual(metrics.counters(label: "chroma_loop_callbacks_total").count, 2, "one counter per loop")
        XCTAssertEqual(metrics.counterTotal(label: "chroma_http_requests_total", dimensions: [("port", port)]), 6)
        XCTAssertEqual(metrics.counterTotal(label: "chroma_http_responses_total", dimensions: [("port", port), ("status_class", "2xx")]), 5)
        XCTAssertEqual(metrics.counterTotal(label: "chroma_http_responses_total", dimensions: [("port", port), ("status_class", "4xx")]), 1)
        XCTAssertEqual(try metrics.expectGauge("chroma_http_open_connections", [("port", port)]).lastValue, 1)
        XCTAssertEqual(try metrics.expectGauge("chroma_pool_queued").lastValue, 0)

        // A second publish adds what was counted since the first, not the totals again.
        for _ in 0..<3 { XCTAssertEqual(client.get("/hello")?.status, 200) }
        publisher.publish()
        let ok = try metrics.expectCounter("chroma_http_responses_total", [("port", port), ("status_class", "2xx")])
        XCTAssertEqual(ok.totalValue, 8)
        XCTAssertEqual(ok.values.count, 2, "two increments: 5, then 3")

        // On a timer: it keeps publishing until stopped. A check timed after three of its
        // ticks, on the same color, fires after them (one loop's timers fire in deadline
        // order; with stealing off the color stays on its loop).
        let workers = try metrics.expectGauge("chroma_pool_workers")
        let before = workers.values.count
        let color = runtime.makeColor()
        try publisher.start(every: .milliseconds(10), on: color)
        let checked = DispatchSemaphore(value: 0)
        _ = try runtime.schedule(after: .milliseconds(35), on: color) { checked.signal() }
        XCTAssertEqual(checked.wait(timeout: .now() + hangTimeout), .success)
        XCTAssertGreaterThanOrEqual(workers.values.count, before + 1 + 3, "one publish at start, then one per tick")
        publisher.stop()
        XCTAssertThrowsError(try publisher.start(every: .zero)) { error in
            guard case ChromaError.invalidArgument(let operation, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(operation, "MetricsPublisher.start")
        }
    }
}
