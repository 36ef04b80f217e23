import Chroma
import ServiceLifecycle

/// A `Runtime` as a swift-service-lifecycle `Service`: `run()` starts the runtime (unless
/// it was started already), keeps it running until the group shuts down gracefully, the
/// task is cancelled, or someone calls `runtime.stop()`, then shuts it down: work already
/// queued runs, the loops exit, and `run()` returns.
///
/// Put it before the services that use the runtime (an `HTTPServerService`, say): a
/// `ServiceGroup` shuts its services down in reverse order, so they finish with the loops
/// still running. The shutdown waits on a thread of its own (`shutdownGracefully()`), not
/// on one of Swift's cooperative pool.
public struct RuntimeService: Service {
    /// The runtime this service runs.
    public let runtime: Runtime

    /// A service for `runtime` (started or not; a runtime that already stopped makes
    /// `run()` throw `ChromaError.invalidState`).
    public init(_ runtime: Runtime) {
        self.runtime = runtime
    }

    /// Runs until graceful shutdown, cancellation or `runtime.stop()`; then shuts the
    /// runtime down. Throws what `Runtime.start()` or `shutdownGracefully()` throw.
    public func run() async throws {
        if !runtime.isRunning { try runtime.start() }
        let runtime = self.runtime
        await withTaskCancellationOrGracefulShutdownHandler {
            await runtime.waitUntilStopped()
        } onCancelOrGracefulShutdown: {
            runtime.stop()
        }
        _ = try await runtime.shutdownGracefully()
    }
}
