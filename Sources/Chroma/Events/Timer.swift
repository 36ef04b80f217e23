import Glibc
import Synchronization

/// A timer from `Runtime.schedule(after:repeating:on:_:)`: a handle to cancel it.
///
/// Threading: `cancel()` and the properties may be used from any thread. After `cancel()`
/// returns the body will not start again; a run already in progress on the loop finishes.
public final class Timer: Sendable {
    /// The color the body runs on.
    public let color: Color
    /// The period of a repeating timer, in nanoseconds; nil for a one-shot timer.
    public let intervalNanoseconds: UInt64?
    let body: @Sendable () -> Void
    /// Where `schedule` was called (an `EnqueueSite` word).
    let site: UInt64
    /// Runs (on the loop) if the runtime shuts down with the timer still pending, for
    /// internal waiters such as `sleep(for:)` that must hear about it.
    let onShutdown: (@Sendable () -> Void)?
    private let state = Atomic<UInt8>(State.pending.rawValue)
    /// The queue of the loop the timer was scheduled on; a fire whose color has moved since
    /// is forwarded to the color's owner (`Loop.runOrForward`).
    private let queue: TimerQueue

    enum State: UInt8 { case pending, fired, cancelled }

    init(color: Color, site: UInt64 = 0, intervalNanoseconds: UInt64?, queue: TimerQueue, onShutdown: (@Sendable () -> Void)? = nil,
         body: @escaping @Sendable () -> Void) {
        self.color = color
        self.site = site
        self.intervalNanoseconds = intervalNanoseconds
        self.queue = queue
        self.onShutdown = onShutdown
        self.body = body
    }

    /// Stops the timer. Returns true if it was still pending (a one-shot timer that already
    /// fired, or a timer already cancelled, returns false).
    @discardableResult
    public func cancel() -> Bool {
        let (won, _) = state.compareExchange(
            expected: State.pending.rawValue, desired: State.cancelled.rawValue, ordering: .acquiringAndReleasing)
        if won { queue.noteCancelled() }
        return won
    }

    /// True once `cancel()` won, or the runtime shut down with the timer still pending.
    public var isCancelled: Bool { state.load(ordering: .acquiring) == State.cancelled.rawValue }

    /// True once a one-shot timer's body has started.
    public var hasFired: Bool { state.load(ordering: .acquiring) == State.fired.rawValue }

    var isPending: Bool { state.load(ordering: .acquiring) == State.pending.rawValue }

    /// Loop thread: claims a one-shot timer for firing; false if it was cancelled first.
    func claimForFiring() -> Bool {
        state.compareExchange(expected: State.pending.rawValue, desired: State.fired.rawValue,
                              ordering: .acquiringAndReleasing).exchanged
    }

    /// Loop thread, at shutdown: cancels a pending timer; true if it was pending.
    func cancelForShutdown() -> Bool {
        state.compareExchange(expected: State.pending.rawValue, desired: State.cancelled.rawValue,
                              ordering: .acquiringAndReleasing).exchanged
    }
}
