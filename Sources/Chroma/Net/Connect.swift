import CChroma
import Glibc

extension Runtime {
    /// Opens a TCP connection to `host:port` (a name is resolved on the blocking pool, an
    /// address literal is used as is) and calls `completion` on `color` (default: a fresh
    /// color) with the connected `Connection`, or a `NetError`: `.timedOut` when the connect
    /// did not complete within `timeout`, `.system` for a refused or unreachable peer,
    /// `.resolution` for a name that did not resolve. The connection's handlers run on the
    /// same color. Throws `ChromaError` only when the runtime is not running.
    public func connect(host: String, port: UInt16, timeout: Duration = .seconds(10), on color: Color? = nil,
                        completion: @escaping @Sendable (Result<Connection, NetError>) -> Void) throws(ChromaError) {
        try checkRunning("connect")
        let color = color ?? makeColor()
        let name = "\(host):\(port)"
        if let address = SocketAddress(host: host, port: port) {
            try execute(on: color) { [self] in startConnect(address, name: name, color: color, timeout: timeout, completion: completion) }
            return
        }
        try blocking(on: color, lane: .short, { () throws -> SocketAddress in
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_family = AF_UNSPEC
            var list: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, nil, &hints, &list)
            guard rc == 0, let first = list else {
                throw NetError(operation: "connect", address: name, code: .resolution(String(cString: gai_strerror(rc))))
            }
            defer { freeaddrinfo(list) }
            return SocketAddress(addrinfo: first, port: port)
        }, completion: { [self] resolved in
            switch resolved {
            case .success(let address):
                startConnect(address, name: name, color: color, timeout: timeout, completion: completion)
            case .failure(let error):
                completion(.failure(error as? NetError ?? NetError(operation: "connect", address: name, code: .resolution("\(error)"))))
            }
        })
    }

    /// On `color`: starts the non-blocking connect and waits for its outcome.
    private func startConnect(_ address: SocketAddress, name: String, color: Color, timeout: Duration,
                              completion: @escaping @Sendable (Result<Connection, NetError>) -> Void) {
        // Runs on `color`, so its pinned loop is this thread's; the socket pins the color there.
        let loop = pinnedLoop(for: color)
        guard let socket = try? loop.makeSocketBuffer(fd: -1) else {
            return completion(.failure(NetError(operation: "connect", address: name, code: .system(.init(rawValue: ENOMEM)))))
        }
        let pending = PendingConnect(socket: socket, loop: loop, color: color, name: name, completion: completion)
        // Registered so a shutdown during the connect completes it (ECANCELED) and frees it.
        guard loop.sockets.register(pending) else {
            return pending.fail(.system(.init(rawValue: ECANCELED)))
        }
        // The write timeout bounds the connect; it is cleared once connected.
        socket.setTimeouts(read: nil, write: timeout)
        // The closure holds `pending` (and so the socket) until the outcome replaces it: the
        // connection installs its own handlers, `fail` installs an empty one.
        socket.onEvent = { [self, pending] event in
            Callback.run(as: color) {
                guard event.connected else {
                    return pending.fail(event.timeout ? .timedOut : .system(.init(rawValue: event.errno == 0 ? ECONNREFUSED : event.errno)))
                }
                socket.setTimeouts(read: nil, write: nil)
                _ = chroma_tcp_nodelay(socket.fd)
                loop.sockets.unregister(pending)
                let connection = Connection(runtime: self, loop: loop, color: color, socket: socket, peer: name)
                guard loop.sockets.register(connection) else {
                    socket.free()
                    return pending.finish(.failure(NetError(operation: "connect", address: name, code: .system(.init(rawValue: ECANCELED)))))
                }
                connection.start()
                pending.finish(.success(connection))
            }
        }
        socket.enable(read: true, write: true)
        if !address.withSockaddr({ socket.connect($0, length: $1) }) {
            let code = errno
            pending.fail(.system(.init(rawValue: code == 0 ? ECONNREFUSED : code)))
        }
    }
}

/// A connect in progress: completes exactly once, with the connection, the failure, or
/// `ECANCELED` when the runtime shuts down first. Loop thread only.
private final class PendingConnect: SocketOwner {
    private let socket: SocketBuffer
    private let loop: Loop
    private let color: Color
    private let name: String
    private var completion: (@Sendable (Result<Connection, NetError>) -> Void)?

    init(socket: SocketBuffer, loop: Loop, color: Color, name: String,
         completion: @escaping @Sendable (Result<Connection, NetError>) -> Void) {
        self.socket = socket
        self.loop = loop
        self.color = color
        self.name = name
        self.completion = completion
    }

    /// Frees the socket and reports `code`.
    func fail(_ code: NetError.Code) {
        loop.sockets.unregister(self)
        socket.onEvent = { _ in }  // drops the closure that holds this object's socket
        socket.free()
        finish(.failure(NetError(operation: "connect", address: name, code: code)))
    }

    func finish(_ result: Result<Connection, NetError>) {
        guard let completion else { return }
        self.completion = nil
        completion(result)
    }

    func closeForShutdown() {
        Callback.run(as: color) { fail(.system(.init(rawValue: ECANCELED))) }
    }
}
