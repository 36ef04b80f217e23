import CLibevent
@_spi(Engine) import Chroma
import Synchronization

// The engine under `HTTPServer` and `HTTPRoutes`, in this folder: one evhttp per loop, each
// with its own SO_REUSEPORT listening socket, so a connection is accepted, parsed, handled
// and answered on one loop thread with no hand-over. libevent's parser does the HTTP; the
// engine adds what evhttp lacks: a color per connection, a whole-request deadline answered
// with 408 (evhttp's own timeout restarts on every byte, so a client trickling a header
// never trips it), EMFILE back-off on accept, and a shutdown that never leaves a pointer to
// a freed request behind. Only this folder's files touch evhttp handles (servers,
// connections, requests); the base comes from `EngineLoop.withRawBase`.

/// One loop's counters (relaxed atomics, statistics only). One object per loop, so counting
/// a request never touches a cache line another loop writes; `HTTPEngine.stats` sums them.
final class HTTPEngineCounters: Sendable {
    let requests = Atomic<Int>(0)
    let requestTimeouts = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
    let acceptFailures = Atomic<Int>(0)
}

/// A running HTTP engine: one evhttp per loop on one port. Any thread may read `port`,
/// `stats` and call `close()`.
final class HTTPEngine: Sendable {
    /// The port every loop's socket is bound to (the real one when 0 was asked for).
    let port: UInt16
    private let runtime: Runtime
    private let perLoop: [HTTPLoopServer]

    fileprivate init(port: UInt16, runtime: Runtime, perLoop: [HTTPLoopServer]) {
        self.port = port
        self.runtime = runtime
        self.perLoop = perLoop
    }

    /// The counters so far, summed over the loops.
    var stats: HTTPServerStats {
        var total = HTTPServerStats(requests: 0, requestTimeouts: 0, connections: 0, acceptFailures: 0)
        for server in perLoop {
            let counters = server.counters
            total.requests += counters.requests.load(ordering: .relaxed)
            total.requestTimeouts += counters.requestTimeouts.load(ordering: .relaxed)
            total.connections += counters.connections.load(ordering: .relaxed)
            total.acceptFailures += counters.acceptFailures.load(ordering: .relaxed)
        }
        return total
    }

    /// Stops accepting and closes every connection, each loop on its own thread; requests
    /// still being handled get no answer (their `respond` returns false). Idempotent.
    func close() {
        for server in perLoop {
            try? runtime.execute(on: server.loopColor) { server.close() }
        }
    }

    /// Closes gracefully (see `HTTPLoopServer.beginDrain`): every loop drains; once all are
    /// empty, or at `timeout` (which closes what is left), the servers are freed and `done`
    /// runs on `color` with the number of connections the timeout closed. Any thread.
    /// When the runtime has shut down, `done` runs on the thread that saw the last loop
    /// finish (the shutdown closes every server, which ends the drain).
    func drain(timeout: Duration, on color: Color, _ done: @escaping @Sendable (Int) -> Void) {
        let drain = HTTPDrain(runtime: runtime, loops: perLoop.count, color: color, done: done)
        drain.timer = try? runtime.schedule(after: timeout, on: color) { [perLoop, runtime] in
            for server in perLoop {
                do {
                    try runtime.execute(on: server.loopColor) {
                        drain.forced.add(server.openConnections, ordering: .relaxed)
                        server.close()
                    }
                } catch {
                    // Shut down: the loop's sweep closes the server, which ends its drain.
                }
            }
        }
        for server in perLoop {
            do {
                try runtime.execute(on: server.loopColor) {
                    server.beginDrain {
                        if drain.loopEmptied() { self.close() }  // frees every loop's evhttp
                    }
                }
            } catch {
                _ = drain.loopEmptied()  // shut down: the sweep closed (or closes) that loop's server
            }
        }
    }
}

// MARK: Starting

extension Runtime {
    /// Starts an HTTP engine on `port` (0: any free port) at `host`: one evhttp per loop,
    /// each with its own SO_REUSEPORT socket. `handler` runs on the loop that accepted the
    /// connection, as the connection's color (a fresh color of that loop per connection).
    /// Throws `ChromaError` naming the failed call, or `.shutDown`/`.invalidState`.
    func startHTTPEngine(host: String, port: UInt16, backlog: Int32, limits: HTTPLimits,
                         handler: @escaping @Sendable (HTTPExchange) -> Void) throws(ChromaError) -> HTTPEngine {
        try requireRunning("serveHTTP")
        guard var address = ListenAddress(host: host, port: port) else {
            throw .invalidArgument(operation: "serveHTTP", detail: "\(host) is not an IPv4 or IPv6 address")
        }
        guard limits.maxHeaderBytes > 0, limits.maxBodyBytes >= 0,
              limits.requestTimeout > .zero, limits.idleTimeout > .zero else {
            throw .invalidArgument(operation: "serveHTTP", detail: "limits must be positive: \(limits)")
        }
        var servers: [HTTPLoopServer] = []
        var boundPort = port
        do throws(ChromaError) {
            for loop in engineLoops {
                address.port = boundPort
                let server = HTTPLoopServer(runtime: self, loop: loop, limits: limits, handler: handler)
                servers.append(server)
                try server.bind(address: address, backlog: backlog)
                boundPort = server.port
                guard loop.register(server) else { throw .shutDown(operation: "serveHTTP") }
                server.registered = true
            }
            for server in servers { try server.enable() }
        } catch {
            for server in servers {
                // A registered server is closed on its loop (by this job, or by the
                // shutdown sweep); one never registered was never enabled, so no loop
                // has seen it and it can be freed here.
                if !server.registered {
                    server.close()
                } else {
                    try? execute(on: server.loopColor) { server.close() }
                }
            }
            throw error
        }
        return HTTPEngine(port: boundPort, runtime: self, perLoop: servers)
    }
}
