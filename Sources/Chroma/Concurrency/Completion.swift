/// Turns a callback API into an `async` call: `body` starts the operation and hands it the
/// completion; the value passed to that completion is returned.
///
/// ```swift
/// let result = await withCompletion { done in try! runtime.files.stat(path, completion: done) }
/// ```
///
/// **The short circuit.** When the completion runs before `body` returns (the result was
/// already at hand: a cache hit, an error found up front), the value is returned at once:
/// the task never suspends and never hops to another executor. Otherwise the task
/// suspends until the completion runs, on whatever thread, and resumes on its own
/// executor. The call stays on the caller's isolation throughout (`#isolation`), so an
/// actor or color calling it does not hop off to the global executor first.
///
/// The completion must be called exactly once; a second call traps.
public func withCompletion<T: Sendable>(
    isolation: isolated (any Actor)? = #isolation,
    _ body: (@escaping @Sendable (T) -> Void) throws -> Void
) async rethrows -> T {
    let box = CompletionBox<T>()
    try body { box.deliver($0) }
    if let value = box.takeIfDelivered() { return value }
    return await withUnsafeContinuation(isolation: isolation) { box.wait($0) }
}

/// The meeting point of a completion and the task waiting for it: whichever comes second
/// hands the value over.
final class CompletionBox<T: Sendable>: @unchecked Sendable {
    // Safe to share: `state` is only touched with `lock` held.
    private let lock = Lock()
    private var state = State.pending

    private enum State {
        case pending
        case delivered(T)
        case waiting(UnsafeContinuation<T, Never>)
        case finished
    }

    func deliver(_ value: T) {
        lock.lock()
        switch state {
        case .pending:
            state = .delivered(value)
            lock.unlock()
        case .waiting(let continuation):
            state = .finished
            lock.unlock()
            continuation.resume(returning: value)
        case .delivered, .finished:
            lock.unlock()
            preconditionFailure("withCompletion: the completion was called twice")
        }
    }

    /// The value, if the completion already ran (then nothing waits).
    func takeIfDelivered() -> T? {
        lock.lock()
        defer { lock.unlock() }
        if case .delivered(let value) = state {
            state = .finished
            return value
        }
        return nil
    }

    func wait(_ continuation: UnsafeContinuation<T, Never>) {
        lock.lock()
        switch state {
        case .pending:
            state = .waiting(continuation)
            lock.unlock()
        case .delivered(let value):
            state = .finished
            lock.unlock()
            continuation.resume(returning: value)
        case .waiting, .finished:
            lock.unlock()
            preconditionFailure("withCompletion: waited twice")
        }
    }
}

extension Runtime {
    /// Runs async code from callback code (the async → callback adaptor): `body` runs as a
    /// task that prefers `color`'s executor (default: the caller's color, or `.main`), so
    /// its nonisolated parts run on the color too; `completion` then runs on `color` with
    /// the result. Cancel the returned task to cancel `body` (it sees `CancellationError`
    /// from the Chroma calls it awaits, and the completion still runs, with that error).
    ///
    /// ```swift
    /// runtime.spawn(on: session) {
    ///     try await runtime.files.read("/etc/hostname")
    /// } completion: { result in … }
    /// ```
    @discardableResult
    public func spawn<T: Sendable>(on color: Color = Color.current ?? .main,
                                   _ body: @escaping @Sendable () async throws -> T,
                                   completion: @escaping @Sendable (Result<T, any Error>) -> Void) -> Task<Void, Never> {
        return Task(executorPreference: taskExecutor(for: color)) {
            let result: Result<T, any Error>
            do {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            // The task runs on its preferred executor, so this is normally already the
            // color; a stranded job (the runtime stopped) runs it on the fallback thread.
            completion(result)
        }
    }

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
                    let timer = try schedule(after: duration, repeating: nil, on: Color.current ?? .main,
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
