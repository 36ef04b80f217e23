extension Runtime {
    /// Suspends the task for at least `duration`, on a Chroma timer (no thread blocks).
    /// Throws `CancellationError` as soon as the task is cancelled (the timer is cancelled
    /// with it), `ChromaError.shutDown` if the runtime shuts down first, and `ChromaError`
    /// if the runtime is not running.
    public func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        let sleep = Sleep()
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                sleep.begin(continuation)
                do {
                    let timer = try schedule(after: duration, repeating: nil, on: Color.current ?? .main, site: 0,
                                             onShutdown: { sleep.finish(ChromaError.shutDown(operation: "sleep")) }) { sleep.finish(nil) }
                    sleep.attach(timer)
                } catch {
                    sleep.finish(error)
                }
            }
        } onCancel: {
            sleep.finish(CancellationError())
        }
    }
}

/// One `sleep(for:)`: the continuation, the timer, and which of timer, cancellation or
/// error came first.
private final class Sleep: @unchecked Sendable {
    // Safe to share: every field is only touched with `lock` held.
    private let lock = Lock()
    private var continuation: UnsafeContinuation<Void, any Error>?
    private var timer: Timer?
    private var outcome: (any Error)??  // nil: not finished; .some(nil): the timer fired

    func begin(_ continuation: UnsafeContinuation<Void, any Error>) {
        lock.lock()
        if let outcome {
            lock.unlock()
            resume(continuation, outcome)
            return
        }
        self.continuation = continuation
        lock.unlock()
    }

    func attach(_ timer: Timer) {
        lock.lock()
        let finished = outcome != nil
        if !finished { self.timer = timer }
        lock.unlock()
        if finished { timer.cancel() }
    }

    /// The first call wins: the timer firing (nil) or an error (cancellation).
    func finish(_ error: (any Error)?) {
        lock.lock()
        guard outcome == nil else {
            lock.unlock()
            return
        }
        outcome = .some(error)
        let continuation = self.continuation
        self.continuation = nil
        let timer = self.timer
        self.timer = nil
        lock.unlock()
        if error != nil { timer?.cancel() }
        if let continuation { resume(continuation, error) }
    }

    private func resume(_ continuation: UnsafeContinuation<Void, any Error>, _ error: (any Error)?) {
        if let error { continuation.resume(throwing: error) } else { continuation.resume() }
    }
}
