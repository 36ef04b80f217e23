import Chroma
import ChromaHTTP
import ServiceLifecycle

/// An `HTTPServer`'s graceful close as a swift-service-lifecycle `Service`: `run()` waits
/// for the group's graceful shutdown (SIGTERM, when the group's configuration says so),
/// then drains the server (`HTTPServer.drain(timeout:)`: new connections are refused,
/// every request in progress is answered, then its connection closes) and returns. On
/// cancellation it closes the server at once instead.
///
/// Put it after the `RuntimeService` of the server's runtime in the group's services, so
/// the drain runs while the loops still do.
public struct HTTPServerService: Service {
    /// The server this service drains.
    public let server: HTTPServer
    /// How long the drain waits for requests in progress before it closes what is left.
    public let drainTimeout: Duration
    private let onDrain: (@Sendable () -> Void)?

    /// A service that drains `server` within `drainTimeout` (default 10 s) at graceful
    /// shutdown. `onDrain`, if given, runs once the drain is under way (a log line, a
    /// health check turning unready): every loop has been asked to close its listening
    /// socket, behind the work already queued there.
    public init(_ server: HTTPServer, drainTimeout: Duration = .seconds(10), onDrain: (@Sendable () -> Void)? = nil) {
        self.server = server
        self.drainTimeout = drainTimeout
        self.onDrain = onDrain
    }

    /// Waits for graceful shutdown, then drains; returns when the last connection is
    /// gone. Never throws: a cancelled wait closes the server and returns.
    public func run() async throws {
        do {
            try await gracefulShutdown()
        } catch {
            server.close()
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            server.drain(timeout: drainTimeout) { _ in continuation.resume() }
            onDrain?()
        }
    }
}
