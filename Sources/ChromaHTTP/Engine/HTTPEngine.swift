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
    let closedConnections = Atomic<Int>(0)
    let acceptFailures = Atomic<Int>(0)
    let limitRejections = Atomic<Int>(0)
    /// Answers by status class: 1xx, 2xx, 3xx, 4xx, 5xx (anything outside 100...599 is
    /// counted as 5xx).
    let informational = Atomic<Int>(0)
    let successful = Atomic<Int>(0)
    let redirection = Atomic<Int>(0)
    let clientError = Atomic<Int>(0)
    let serverError = Atomic<Int>(0)

    /// The loop thread, for every answer the server writes (routes' and its own).
    @inline(__always) func noteAnswer(status: Int) {
        switch status {
        case 200..<300: successful.add(1, ordering: .relaxed)
        case 400..<500: clientError.add(1, ordering: .relaxed)
        case 300..<400: redirection.add(1, ordering: .relaxed)
        case 100..<200: informational.add(1, ordering: .relaxed)
        default: serverError.add(1, ordering: .relaxed)
        }
    }

    /// The loop thread: the server refused a request for breaking a limit, answering
    /// `status` (0: closed without an answer).
    func noteRejection(status: Int) {
        limitRejections.add(1, ordering: .relaxed)
        if status != 0 { noteAnswer(status: status) }
    }
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
        var total = HTTPServerStats()
        for server in perLoop {
            let counters = server.counters
            total.requests += counters.requests.load(ordering: .relaxed)
            total.requestTimeouts += counters.requestTimeouts.load(ordering: .relaxed)
            // Closed before opened: a close counted after its open is read can only make
            // the sum smaller than it is, never negative.
            let closed = counters.closedConnections.load(ordering: .relaxed)
            let opened = counters.connections.load(ordering: .relaxed)
            total.connections += opened
            total.openConnections += max(0, opened - closed)
            total.acceptFailures += counters.acceptFailures.load(ordering: .relaxed)
            total.limitRejections += counters.limitRejections.load(ordering: .relaxed)
            total.answers.informational += counters.informational.load(ordering: .relaxed)
            total.answers.successful += counters.successful.load(ordering: .relaxed)
            total.answers.redirection += counters.redirection.load(ordering: .relaxed)
            total.answers.clientError += counters.clientError.load(ordering: .relaxed)
            total.answers.serverError += counters.serverError.load(ordering: .relaxed)
            total.accessLogDropped += server.accessLines?.dropped.load(ordering: .relaxed) ?? 0
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
    /// each with its own SO_REUSEPORT socket; with `tls`, every connection speaks HTTPS.
    /// `handler` runs on the loop that accepted the
    /// connection, as the connection's color (a fresh color of that loop per connection).
    /// Throws `ChromaError` naming the failed call, or `.shutDown`/`.invalidState`.
    func startHTTPEngine(host: String, port: UInt16, backlog: Int32, limits: HTTPLimits, accessLog: HTTPAccessLog? = nil,
                         tls: HTTPSConfiguration? = nil, handler: @escaping @Sendable (HTTPExchange) -> Void) throws(ChromaError) -> HTTPEngine {
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
                let server = HTTPLoopServer(runtime: self, loop: loop, limits: limits, accessLog: accessLog, tls: tls,
                                            handler: handler)
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
