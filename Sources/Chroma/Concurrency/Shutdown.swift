import Glibc

/// The runtime's lifecycle for async code: waiting for a start or a stop and shutting down without
/// blocking a thread of Swift's cooperative pool (whose few threads every task shares).
extension Runtime {
    /// Returns once `start()` has finished and the loops take work, or the runtime stopped
    /// (or failed to start) first: check `isRunning`. Returns at once if that has happened.
    /// Any task, any executor.
    public func waitUntilStarted() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            startedOrStopped.onOpen { continuation.resume() }
        }
    }

    /// Returns once the runtime is stopping or stopped: `stop()` was called, by anyone, or
    /// `start()` failed. Returns at once if that has happened. It does not wait for the
    /// loops to drain; `shutdownGracefully()` does. Any task, any executor; cancelling the
    /// task does not end the wait (call `stop()` for that).
    public func waitUntilStopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            stopped.onOpen { continuation.resume() }
        }
    }

    /// `shutdown()` for async code: stops the runtime, then waits for every loop to drain
    /// and exit and for the pool's workers, on a thread of its own, so the calling task
    /// suspends instead of blocking its thread. Returns what was cancelled. Idempotent.
    /// Throws `invalidState` from a loop thread or pool work (as `shutdown()` does), and
    /// `.system` naming `pthread_create` if no thread could be started for the wait.
    public func shutdownGracefully() async throws(ChromaError) -> ShutdownReport {
        try refuseOnLoopThread("Runtime.shutdownGracefully")
        stop()
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<ShutdownReport, ChromaError>, Never>) in
            let started = startThread {
                do throws(ChromaError) {
                    continuation.resume(returning: .success(try self.shutdown()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            switch started {
            case .success(let thread):
                pthread_detach(thread)
            case .failure(let error):
                continuation.resume(returning: .failure(.system(operation: "Runtime.shutdownGracefully", call: "pthread_create", errno: error.code)))
            }
        }
        return try result.get()
    }
}
