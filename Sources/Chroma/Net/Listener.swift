import CChroma
import Glibc
import Synchronization
import SystemPackage

/// Why a network call failed: the operation, the address, and the reason.
public struct NetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The reason a network call failed.
    public enum Code: Equatable, Sendable {
        case system(Errno)
        /// The connect did not complete within its timeout.
        case timedOut
        /// The host name did not resolve (`getaddrinfo`'s message).
        case resolution(String)
        /// The address could not be parsed.
        case invalidAddress
    }

    /// The call that failed ("listen", "connect").
    public let operation: String
    /// "host:port".
    public let address: String
    /// What went wrong.
    public let code: Code

    /// "operation address: reason", with errno's text and number for system errors.
    public var description: String {
        let reason: String
        switch code {
        case .system(let errno): reason = "\(String(cString: strerror(errno.rawValue))) (errno \(errno.rawValue))"
        case .timedOut: reason = "timed out"
        case .resolution(let message): reason = "cannot resolve: \(message)"
        case .invalidAddress: reason = "not an address"
        }
        return "\(operation) \(address): \(reason)"
    }
}

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
                let entry = LoopListener(loop: loop, loopColor: Color(UInt64(loop.index)), stats: stats)
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
        let owner = self.loop(for: connectionColor)
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
        loop.runAs(color.rawValue) { onConnection(connection) }
        connection.start()
    }

    /// Loop thread: accept failed; see `AcceptBackoff`.
    fileprivate func acceptFailed(_ error: Int32, socket: SocketListener, stats: AcceptStats, loopColor: Color) {
        stats.failures.add(1, ordering: .relaxed)
        // The timer holds the socket object; enabling one freed meanwhile (closed listener)
        // does nothing.
        AcceptBackoff.acceptFailed(error, runtime: self, loopColor: loopColor, pause: { socket.disable() }, resume: { socket.enable() })
    }

    /// A fresh color owned by loop `index` (from 2⁴⁰ up, apart from `makeColor()`'s).
    public func makeColor(onLoop index: Int) -> Color {
        precondition(index >= 0 && index < loopCount, "makeColor(onLoop:): no loop \(index)")
        let n = loops[index].nextColor.add(1, ordering: .relaxed).oldValue
        return Color(unchecked: (1 << 40) + n * UInt64(loopCount) + UInt64(index))
    }
}

/// The port a socket is bound to (the real one after binding port 0); 0 if unknown.
/// `sin_port` and `sin6_port` share an offset, so this reads either family.
func localPort(of fd: Int32) -> UInt16 {
    var address = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
    }
    return ok ? withUnsafeBytes(of: address) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) } : 0
}

/// An IPv4 or IPv6 socket address.
struct SocketAddress: @unchecked Sendable {
    // Safe to send: a plain value (the storage is a C struct of bytes).
    private var storage = sockaddr_storage()
    private let length: socklen_t
    private let isIPv6: Bool

    init?(host: String, port: UInt16) {
        var v4 = sockaddr_in()
        if inet_pton(AF_INET, host, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: v4) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            isIPv6 = false
            return
        }
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: v6) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            isIPv6 = true
            return
        }
        return nil
    }

    init(addrinfo info: UnsafePointer<addrinfo>, port: UInt16) {
        length = info.pointee.ai_addrlen
        isIPv6 = info.pointee.ai_family == AF_INET6
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: info.pointee.ai_addr, count: Int(info.pointee.ai_addrlen)))
        }
        self.port = port
    }

    var port: UInt16 {
        get {
            withUnsafeBytes(of: storage) { raw in
                UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))  // sin_port and sin6_port share offset 2
            }
        }
        set {
            withUnsafeMutableBytes(of: &storage) { raw in raw.storeBytes(of: newValue.bigEndian, toByteOffset: 2, as: UInt16.self) }
        }
    }

    func withSockaddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        var copy = storage
        return try withUnsafePointer(to: &copy) { pointer throws(E) in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa throws(E) in try body(sa, length) }
        }
    }

    /// The NUL-terminated text in a C character buffer.
    private static func cText(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// "host:port" of a connected socket's peer, or "?".
    static func peerName(of fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
        }
        guard ok else { return "?" }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        return withUnsafePointer(to: &storage) { pointer -> String in
            if Int32(pointer.pointee.ss_family) == AF_INET6 {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                    var address = v6.pointee.sin6_addr
                    inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
                    return "[\(cText(text))]:\(UInt16(bigEndian: v6.pointee.sin6_port))"
                }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                var address = v4.pointee.sin_addr
                inet_ntop(AF_INET, &address, &text, socklen_t(text.count))
                return "\(cText(text)):\(UInt16(bigEndian: v4.pointee.sin_port))"
            }
        }
    }
}
