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
