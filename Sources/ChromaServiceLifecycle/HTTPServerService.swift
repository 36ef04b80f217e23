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

    /// A service that drains `server` within `drainTimeout` (default 10 s) at graceful
    /// shutdown.
    public init(_ server: HTTPServer, drainTimeout: Duration = .seconds(10)) {
        self.server = server
        self.drainTimeout = drainTimeout
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
        _ = await server.drain(timeout: drainTimeout)
    }
}
