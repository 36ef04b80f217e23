import Chroma
import ChromaHTTP
import ChromaServiceLifecycle
import Foundation
import Logging
import ServiceLifecycle
import XCTest

/// ChromaServiceLifecycle: a runtime and an HTTP server in a `ServiceGroup`.
final class ServiceLifecycleTests: XCTestCase {
    /// Graceful shutdown drains the server before the runtime stops: a request in progress
    /// when it starts is answered (with `Connection: close`), new connections are refused,
    /// and the group's run returns with the runtime stopped.
    func testGracefulShutdownDrainsWithoutLosingARequestInProgress() throws {
        // One loop: the drain's closing of the listening socket is then queued on the loop
        // before the answer, so "refused once answered" is an order, not a race (with two,
        // the other loop's listener may still be closing when the answer arrives, as
        // `HTTPServer.drain` says).
        let runtime = try Runtime(loops: 1)
        try runtime.start()
        addTeardownBlock { _ = try? runtime.shutdown() }
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        var routes = HTTPRoutes()
        routes.get("/slow") { request in
            entered.signal()
            // The handler waits off the loop, then answers on its connection's color.
            _ = try? runtime.blocking { release.wait(timeout: .now() + hangTimeout) } completion: { _ in
                _ = request.respond(.ok, text: "finished")
            }
        }
        let server = try runtime.serveHTTP(host: "127.0.0.1", port: 0, routes: routes)
        let port = server.port
        let draining = DispatchSemaphore(value: 0)
        let service = HTTPServerService(server, drainTimeout: .seconds(Int64(hangTimeout))) { draining.signal() }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [RuntimeService(runtime), service], logger: Logger(label: "test")))
        let finished = DispatchSemaphore(value: 0)
        let failure = LockedError()
        Task {
            do { try await group.run() } catch { failure.set(error) }
            finished.signal()
        }

        let client = try LoopbackHTTP(port: port)
        client.sendGET("/slow")
        XCTAssertEqual(entered.wait(timeout: .now() + hangTimeout), .success, "the handler started")
        Task { await group.triggerGracefulShutdown() }
        XCTAssertEqual(draining.wait(timeout: .now() + hangTimeout), .success, "the drain began")
        XCTAssertTrue(runtime.isRunning, "the runtime outlives the server's drain")
        // The answer is queued behind the drain's start on the connection's loop.
        release.signal()
        let answer = client.answer()
        XCTAssertEqual(answer?.status, 200)
        XCTAssertEqual(answer?.body, "finished")
        XCTAssertEqual(answer?.headers["connection"], "close")
        XCTAssertTrue(client.closedByServer())
        XCTAssertNil(try? LoopbackHTTP(port: port), "the drain closed the listening sockets")
        XCTAssertEqual(finished.wait(timeout: .now() + hangTimeout), .success, "the group's run returned")
        XCTAssertNil(failure.get())
        XCTAssertFalse(runtime.isRunning)
        XCTAssertEqual(server.stats.answers.successful, 1)
    }

    /// A runtime stopped from elsewhere ends its service, and the group with it. The
    /// service starts a runtime that was not started: here a callback queued by a service
    /// listed after it, which can run only once the loops do, stops it.
    func testStoppingTheRuntimeEndsTheGroup() throws {
        let runtime = try Runtime(loops: 1)
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [RuntimeService(runtime), StopWhenRunning(runtime: runtime)], logger: Logger(label: "test")))
        let finished = DispatchSemaphore(value: 0)
        Task {
            try? await group.run()
            finished.signal()
        }
        XCTAssertEqual(finished.wait(timeout: .now() + hangTimeout), .success)
        XCTAssertThrowsError(try runtime.execute { }, "shut down")
    }
}

/// Waits for its runtime to run (the runtime's own callback says so), then stops it.
struct StopWhenRunning: Service {
    let runtime: Runtime

    func run() async throws {
        await runtime.waitUntilStarted()
        try runtime.execute { runtime.stop() }
        await runtime.waitUntilStopped()
    }
}

/// An error set by one thread and read by another.
final class LockedError: @unchecked Sendable {
    // Safe to share: `error` is only touched with `lock` held.
    private let lock = NSLock()
    private var error: (any Error)?
    func set(_ error: any Error) { lock.withLock { self.error = error } }
    func get() -> (any Error)? { lock.withLock { error } }
}
