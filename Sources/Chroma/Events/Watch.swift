import CLibevent
import Synchronization

/// What a watch waits for on a file descriptor.
public struct Interest: OptionSet, Sendable, Hashable {
    /// The bits: 1 readable, 2 writable.
    public let rawValue: UInt8
    /// An interest from its bits (1 readable, 2 writable).
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The fd has data to read, or the peer closed it.
    public static let readable = Interest(rawValue: 1)
    /// The fd can take more output.
    public static let writable = Interest(rawValue: 2)

    var libeventFlags: Int16 {
        (contains(.readable) ? chroma_ev_read() : 0) | (contains(.writable) ? chroma_ev_write() : 0)
    }

    init(libeventFlags flags: Int16) {
        var interest: Interest = []
        if flags & chroma_ev_read() != 0 { interest.insert(.readable) }
        if flags & chroma_ev_write() != 0 { interest.insert(.writable) }
        self = interest
    }
}

/// A persistent watch on a file descriptor (`Runtime.watch`) or a signal
/// (`Runtime.onSignal`): its body runs on its color each time the event fires, until
/// `cancel()`.
///
/// Threading: `cancel()` may be called from any thread, also from inside the body. After it
/// returns the body will not start again; a run already in progress finishes. Close a
/// watched fd only after cancelling its watch: the kernel forgets a closed fd silently.
public final class Watch: @unchecked Sendable {
    // Safe to send: `event` is written under `HandleTable`'s lock and freed only on `loop`'s
    // thread (or after it exited); the rest is immutable or atomic.
    /// What is watched.
    public enum Target: Sendable, Equatable {
        case fd(Int32)
        case signal(Int32)
    }

    /// The watched fd or signal.
    public let target: Target
    /// The readiness this watch waits for (empty for a signal).
    public let interest: Interest
    /// The color the body runs on.
    public let color: Color
    /// The loop the event lives on (loop 0 for signals; for an fd, `Placement.pin` of the color).
    let loop: Loop
    /// Keeps the runtime (and so `loop`'s core memory) alive while a watch can still be
    /// cancelled; the handle table drops the watch when it is freed, which ends the cycle.
    private let runtime: Runtime
    let body: @Sendable (Interest) -> Void
    /// Where `watch` or `onSignal` was called (an `EnqueueSite` word).
    let site: UInt64
    var event: PersistentEvent?
    private let cancelled = Atomic<Bool>(false)

    init(target: Target, interest: Interest, color: Color, site: UInt64 = 0, loop: Loop, runtime: Runtime,
         body: @escaping @Sendable (Interest) -> Void) {
        self.site = site
        self.runtime = runtime
        self.target = target
        self.interest = interest
        self.color = color
        self.loop = loop
        self.body = body
    }

    /// True once cancelled, by `cancel()` or by shutdown.
    public var isCancelled: Bool { cancelled.load(ordering: .acquiring) }

    /// Stops the watch and frees its libevent event on its loop. Returns false if it was
    /// already cancelled.
    @discardableResult
    public func cancel() -> Bool {
        guard markCancelled() else { return false }
        loop.handles.unregister(self)
        return true
    }

    func markCancelled() -> Bool {
        !cancelled.exchange(true, ordering: .acquiringAndReleasing)
    }

    /// The libevent callback, on `loop`'s thread.
    func fire(_ flags: Int16) {
        guard !isCancelled else { return }
        switch target {
        case .fd:
            Callback.run(as: color, site: site) { body(Interest(libeventFlags: flags)) }
        case .signal:
            // Signals all arrive on loop 0; the body runs on its own color's loop.
            let body = self.body
            try? runtime.execute(on: color, site: site) { body([]) }
        }
    }
}
