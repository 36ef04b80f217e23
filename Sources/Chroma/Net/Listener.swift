import CChroma
import Glibc
import Synchronization
import SystemPackage

/// A listening TCP port: one listening socket per loop, all bound to the same port with
/// `SO_REUSEPORT`, so the kernel spreads incoming connections across the loops and each
/// connection starts on the loop that accepted it (no hand-over between threads). Close it
/// with `close()`; shutdown closes it too.
///
/// When accept fails for lack of descriptors (`EMFILE`, `ENFILE`) the loop's socket stops
/// accepting for `acceptRetryDelay` instead of spinning on the still-readable socket, then
/// tries again; connections waiting in the backlog are served once descriptors free up.
public final class Listener: @unchecked Sendable {
    // Safe to share: `port` is immutable; `perLoop` entries are created before `listen`
    // returns and afterwards touched only on their own loop's thread; `stats` is atomic.
    /// The port all the loops' sockets are bound to (the real one when 0 was asked for).
    public let port: UInt16
    let runtime: Runtime
    private let perLoop: [LoopListener]
    private let stats: AcceptStats
    /// How long a loop's socket pauses after `EMFILE`/`ENFILE` before accepting again.
    public static let acceptRetryDelay: Duration = AcceptBackoff.retryDelay

    fileprivate init(port: UInt16, runtime: Runtime, perLoop: [LoopListener], stats: AcceptStats) {
        self.port = port
        self.runtime = runtime
        self.perLoop = perLoop
        self.stats = stats
    }

    /// Accept calls that failed (each pause counts once). Any thread.
    public var acceptFailures: Int { stats.failures.load(ordering: .relaxed) }

    /// Stops accepting and closes the listening sockets (each on its own loop). Open
    /// connections stay open. Any thread; idempotent.
    public func close() {
        for entry in perLoop {
            try? runtime.execute(on: entry.loopColor) { entry.close() }
        }
    }
}

/// Counters shared by a listener's per-loop sockets.
final class AcceptStats: Sendable {
    let failures = Atomic<Int>(0)
}

/// One loop's listening socket. Its methods run on that loop's thread.
final class LoopListener: SocketOwner, @unchecked Sendable {
    // Safe to share: `socket` is set by `listen` before it returns (the loop never reads
    // it; its callbacks get the socket itself) and freed only on the loop's thread, after
    // `close` or the shutdown sweep queued there; the rest is immutable.
    let loop: Loop
    /// A color owned by this loop, for work that must run on it.
    let loopColor: Color
    let stats: AcceptStats
    var socket: SocketListener?

    init(loop: Loop, loopColor: Color, stats: AcceptStats) {
        self.loop = loop
        self.loopColor = loopColor
        self.stats = stats
    }

    func close() {
        socket?.free()
        socket = nil
        loop.sockets.unregister(self)
    }

    func closeForShutdown() { close() }
}

/// Which loops accept a listener's connections.
public enum Acceptors: Sendable, Equatable {
    /// One listening socket per loop (`SO_REUSEPORT`): the kernel spreads connections by a
    /// hash of their addresses, and each stays on the loop that accepted it. The default.
    case everyLoop
    /// One listening socket on loop 0, which hands each connection to the next loop in
    /// turn (memcached's design): an even spread, for one cross-thread hop per connection.
    case oneLoop
}

extension Runtime {
    /// Listens on `port` (0: any free port; see `Listener.port`) at `host` (an IPv4 or IPv6
    /// literal; default all IPv4 interfaces), with one socket per loop. For each accepted
    /// connection, `onConnection` runs on the connection's color: by default a fresh color
    /// owned by the accepting loop, so each connection's handlers serialize and different
    /// connections run in parallel; pass `color` to put every connection on one color.
    ///
    /// Throws `ChromaError.system` naming the failed call (`EADDRINUSE` and the like),
    /// `.invalidArgument` for a bad host, `.shutDown`/`.invalidState` when not running.
    ///
    /// `acceptors` picks who accepts: every loop (the default) or loop 0 alone, handing
    /// connections round-robin to the loops (see `Acceptors`).
    @discardableResult
    public func listen(host: String = "0.0.0.0", port: UInt16, backlog: Int32 = 1024, color: Color? = nil,
                       acceptors: Acceptors = .everyLoop,
                       onConnection: @escaping @Sendable (Connection) -> Void) throws(ChromaError) -> Listener {
        try checkRunning("listen")
        guard var address = SocketAddress(host: host, port: port) else {
            throw .invalidArgument(operation: "listen", detail: "\(host) is not an IPv4 or IPv6 address")
        }
        var entries: [LoopListener] = []
        var boundPort = port
        let stats = AcceptStats()
        do throws(ChromaError) {
            for loop in acceptors == .everyLoop ? loops : [loops[0]] {
                address.port = boundPort
                let entry = LoopListener(loop: loop, loopColor: loopColor(loop.index), stats: stats)
                let runtime = self
                let socket = try address.withSockaddr { sa, length throws(ChromaError) in
                    try loop.makeListener(address: sa, length: length, backlog: backlog, onAccept: { [unowned entry] fd in
                        // One acceptor: fresh colors round-robin across all loops.
                        let handOver = acceptors == .oneLoop ? (color ?? runtime.makeColor()) : color
                        runtime.accept(fd, on: entry.loop, color: handOver, onConnection: onConnection)
                    }, onError: { [unowned entry] socket, error in
                        runtime.acceptFailed(error, socket: socket, stats: entry.stats, loopColor: entry.loopColor)
                    })
                }
                entry.socket = socket
                boundPort = socket.port
                entries.append(entry)
                guard loop.sockets.register(entry) else { throw .shutDown(operation: "listen") }
            }
        } catch {
            for entry in entries {
                try? execute(on: entry.loopColor) { entry.close() }
            }
            throw error
        }
        return Listener(port: boundPort, runtime: self, perLoop: entries, stats: stats)
    }

    /// Loop thread: an accepted socket becomes a `Connection` on `color` (or a fresh color
    /// of this loop), and the handler runs on it.
    fileprivate func accept(_ fd: Int32, on loop: Loop, color: Color?, onConnection: @escaping @Sendable (Connection) -> Void) {
        _ = chroma_tcp_nodelay(fd)
        let peer = SocketAddress.peerName(of: fd)
        let connectionColor = color ?? makeColor(onLoop: loop.index)
        // The connection's bufferevent pins its color to the loop it is created on.
        let owner = pinnedLoop(for: connectionColor)
        if owner === loop {
            startConnection(fd: fd, loop: loop, color: connectionColor, peer: peer, onConnection: onConnection)
        } else {
            // A fixed color owned by another loop: the socket moves there.
            do {
                try execute(on: connectionColor) { [self] in
                    startConnection(fd: fd, loop: owner, color: connectionColor, peer: peer, onConnection: onConnection)
                }
            } catch {
                Glibc.close(fd)
            }
        }
    }

    private func startConnection(fd: Int32, loop: Loop, color: Color, peer: String, onConnection: @Sendable (Connection) -> Void) {
        guard let socket = try? loop.makeSocketBuffer(fd: fd) else {
            Glibc.close(fd)
            return
        }
        let connection = Connection(runtime: self, loop: loop, color: color, socket: socket, peer: peer)
        guard loop.sockets.register(connection) else {
            socket.free()
            return
        }
        Callback.run(as: color) { onConnection(connection) }
        connection.start()
    }

    /// Loop thread: accept failed; see `AcceptBackoff`.
    fileprivate func acceptFailed(_ error: Int32, socket: SocketListener, stats: AcceptStats, loopColor: Color) {
        stats.failures.add(1, ordering: .relaxed)
        // The timer holds the socket object; enabling one freed meanwhile (closed listener)
        // does nothing.
        AcceptBackoff.acceptFailed(error, runtime: self, loopColor: loopColor, pause: { socket.disable() }, resume: { socket.enable() })
    }
}
