@_spi(Engine) import Chroma
import CLibevent
import Synchronization

/// One `HTTPEngine.drain`: counts the loops still draining and calls `done` once.
final class HTTPDrain: @unchecked Sendable {
    // Safe to share: `deadline` is only touched with `lock` held; the counts are atomic
    // and the rest is immutable.
    let forced = Atomic<Int>(0)
    private let remaining: Atomic<Int>
    private let runtime: Runtime
    private let color: Color
    private let done: @Sendable (Int) -> Void
    private let lock = EngineLock()
    private var deadline: Timer?

    init(runtime: Runtime, loops: Int, color: Color, done: @escaping @Sendable (Int) -> Void) {
        self.runtime = runtime
        self.color = color
        self.done = done
        remaining = Atomic(loops)
    }

    /// The deadline's timer, cancelled when the drain ends first.
    var timer: Timer? {
        get { lock.withLock { deadline } }
        set { lock.withLock { deadline = newValue } }
    }

    /// A loop has no connection left. True for the last one, which also reports.
    func loopEmptied() -> Bool {
        guard remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return false }
        _ = timer?.cancel()
        let forced = self.forced.load(ordering: .acquiring), done = self.done
        do {
            try runtime.execute(on: color) { done(forced) }
        } catch {
            done(forced)
        }
        return true
    }
}

// Graceful close: `HTTPEngine.drain` counts the loops down; each loop's server closes its
// listening socket and lets its connections finish their requests (loop thread).

extension HTTPLoopServer {
    /// Starts a graceful close: the listening socket closes (new connections are refused
    /// by the kernel, not left in a backlog), idle connections close now, and the others
    /// close once the request they have in progress is answered (`Connection: close`).
    /// `empty` runs once, on this loop, when no connection is left (at once if none is;
    /// also when `close()` ends the drain early). A second call only runs its `empty`
    /// with the first's.
    func beginDrain(_ empty: @escaping () -> Void) {
        if closed {
            empty()
            return
        }
        if draining {
            let first = drained
            drained = { first?(); empty() }
            return
        }
        draining = true
        drained = empty
        if let http, let boundSocket { evhttp_del_accept_socket(http, boundSocket) }
        boundSocket = nil
        listener = nil
        let idle = connections.all.filter(\.isIdle)
        for connection in idle { evhttp_connection_free(connection.raw) }
        reportIfDrained()
    }

    /// After an answer was written while draining: closes the connection if it then has
    /// no request in progress (a job, since evhttp is inside its own callback here).
    func closeWhenIdleLater(_ connection: HTTPConnectionState) {
        try? runtime.execute(on: loopColor) { [self] in
            guard !closed, connections[UnsafeMutableRawPointer(connection.raw)] === connection, connection.isIdle else { return }
            evhttp_connection_free(connection.raw)
        }
    }

    /// The connections still open (those evhttp is still setting up included).
    var openConnections: Int { connections.count + newcomers.count }

    func reportIfDrained() {
        guard draining || closed, connections.count == 0, newcomers.isEmpty, let report = drained else { return }
        drained = nil
        report()
    }
}
