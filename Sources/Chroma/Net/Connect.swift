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
        let loop = loop(for: color)
        let socket: SocketBuffer
        do {
            socket = try loop.makeSocketBuffer(fd: -1)
        } catch {
            return completion(.failure(NetError(operation: "connect", address: name, code: .system(.init(rawValue: ENOMEM)))))
        }
        // The write timeout bounds the connect; it is cleared once connected.
        socket.setTimeouts(read: nil, write: timeout)
        socket.onEvent = { [self] event in
            loop.runAs(color.rawValue) {
                if event.connected {
                    socket.setTimeouts(read: nil, write: nil)
                    var one: Int32 = 1
                    _ = setsockopt(socket.fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    let connection = Connection(runtime: self, loop: loop, color: color, socket: socket, peer: name)
                    guard loop.sockets.register(connection) else {
                        socket.free()
                        return completion(.failure(NetError(operation: "connect", address: name, code: .system(.init(rawValue: ECANCELED)))))
                    }
                    connection.start()
                    completion(.success(connection))
                } else {
                    let code: NetError.Code = event.timeout ? .timedOut : .system(.init(rawValue: event.errno == 0 ? ECONNREFUSED : event.errno))
                    socket.free()
                    socket.onEvent = { _ in }  // drops this closure, which holds the socket
                    completion(.failure(NetError(operation: "connect", address: name, code: code)))
                }
            }
        }
        socket.enable(read: true, write: true)
        let started = address.withSockaddr { socket.connect($0, length: $1) }
        if !started {
            let code = errno
            socket.free()
            socket.onEvent = { _ in }
            completion(.failure(NetError(operation: "connect", address: name, code: .system(.init(rawValue: code == 0 ? ECONNREFUSED : code)))))
        }
    }
}
