import Chroma

/// What an HTTP server enforces on each connection. Requests over a size limit get 413,
/// malformed ones 400 (libevent's parser decides), slow ones 408; each then closes its
/// connection, and the server goes on serving the others.
public struct HTTPLimits: Sendable {
    /// Largest request head: request line plus headers (default 16 KiB).
    public var maxHeaderBytes: Int = 16 * 1024
    /// Largest request body (default 1 MiB).
    public var maxBodyBytes: Int = 1 << 20
    /// Longest time from a request's first byte to its last (default 30 s). A client that
    /// trickles its request (slowloris) gets 408 and a close however steadily it sends.
    public var requestTimeout: Duration = .seconds(30)
    /// A connection with no request in progress, or an answer the client does not read,
    /// is closed after this long without progress (default 60 s).
    public var idleTimeout: Duration = .seconds(60)

    /// The defaults above.
    public init() {}

    /// Limits by name; any not given keeps its default.
    public init(maxHeaderBytes: Int = 16 * 1024, maxBodyBytes: Int = 1 << 20,
                requestTimeout: Duration = .seconds(30), idleTimeout: Duration = .seconds(60)) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
    }
}

/// Counters of a running server, summed over its loops. Each loop keeps its own and counts
/// on its own thread; reading sums them with relaxed loads, so a snapshot is exact per
/// counter once the server is idle, and may lag by the requests in flight while it is not.
public struct HTTPServerStats: Sendable, Equatable {
    /// Answers by the class of their status code.
    public struct StatusClasses: Sendable, Equatable {
        /// 1xx.
        public var informational = 0
        /// 2xx.
        public var successful = 0
        /// 3xx.
        public var redirection = 0
        /// 4xx, the server's own 408 and 413 included.
        public var clientError = 0
        /// 5xx, the 500 for a request whose handler dropped it unanswered included.
        public var serverError = 0
        /// All answers.
        public var total: Int { informational + successful + redirection + clientError + serverError }
    }

    /// Requests handed to a route (parse errors and limit violations are not counted).
    public var requests = 0
    /// Answers written, by status class: routes' answers and the server's own (408, 413).
    /// Not counted: the 400 libevent's parser answers for a malformed request and the
    /// 413 it answers for a body over `HTTPLimits.maxBodyBytes` without handing Chroma
    /// the request.
    public var answers = StatusClasses()
    /// Requests answered 408 by `HTTPLimits.requestTimeout`.
    public var requestTimeouts = 0
    /// Requests refused for a limit: 408 at the request deadline, 413 for a head over
    /// `HTTPLimits.maxHeaderBytes`, and connections closed for sending while not reading
    /// their answer.
    public var limitRejections = 0
    /// Connections accepted.
    public var connections = 0
    /// Connections open now.
    public var openConnections = 0
    /// Accept calls that failed (out of descriptors and the like); the socket pauses
    /// 100 ms after each instead of spinning.
    public var acceptFailures = 0
    /// Access-log lines dropped because the log's destination fell 16 MiB behind (see
    /// `HTTPAccessLog`).
    public var accessLogDropped = 0
    /// The file routes' memory caches, all routes and loops together.
    public var fileCache = FileCache()

    /// Counters of the file routes' caches (`StaticFiles`).
    public struct FileCache: Sendable, Equatable {
        /// Requests answered from memory (after a `stat` when the entry was due one).
        public var hits = 0
        /// Requests that read or opened the file: not cached, changed since, or too big to cache.
        public var misses = 0
        /// Entries dropped, least recently used first, to make room for another.
        public var evictions = 0
        /// Files cached now.
        public var entries = 0
        /// Bytes of file content cached now.
        public var bytes = 0

        /// All zero.
        public init() {}
    }

    /// All zero.
    public init() {}
}

/// A running HTTP/1.1 server: libevent's evhttp on every loop, each with its own
/// `SO_REUSEPORT` socket on one port, so a connection is accepted, parsed, handled and
/// answered on one loop with no hand-over. Keep-alive and pipelining come from evhttp
/// (pipelined requests are answered in order, one at a time).
///
/// Any thread may read `port` and `stats` and call `close()` or `drain(timeout:on:_:)`.
/// Runtime shutdown closes the server too.
public final class HTTPServer: Sendable {
    private let engine: HTTPEngine
    private let router: Router?

    init(engine: HTTPEngine, router: Router?) {
        self.engine = engine
        self.router = router
    }

    /// The port the server listens on (the real one when 0 was asked for).
    public var port: UInt16 { engine.port }

    /// The counters so far, summed over the loops (each read without stopping them).
    public var stats: HTTPServerStats {
        var stats = engine.stats
        if let router { stats.fileCache = router.fileCacheStats }
        return stats
    }

    /// Stops accepting and closes every connection (on each loop); requests still being
    /// handled get no answer. Idempotent. `drain(timeout:on:_:)` closes without losing them.
    public func close() {
        engine.close()
    }

    /// Closes gracefully, for a restart or a deploy: no request in progress is lost.
    ///
    /// At once, each loop is told to close its listening socket (new connections are
    /// refused once it has; with several loops that happens on each loop's thread, so an
    /// answer sent meanwhile can come before another loop's socket is closed) and idle
    /// keep-alive connections close. Every request in progress (being read, handled or
    /// written) finishes: its answer carries `Connection: close` and its connection closes
    /// after it. (Requests a client pipelined behind it are not read; HTTP clients retry
    /// those when a connection closes.) Whatever is still open after `timeout` is closed as
    /// by `close()`.
    ///
    /// `done` runs once, on `color`, when the last connection is gone, with the number of
    /// connections `timeout` had to close (0 when everything finished in time). Any thread;
    /// calling it again, or after `close()`, is harmless. If the runtime shuts down first,
    /// its shutdown closes the server, and `done` runs on the thread that saw it finish.
    public func drain(timeout: Duration, on color: Color = .main, _ done: @escaping @Sendable (_ forced: Int) -> Void) {
        engine.drain(timeout: timeout, on: color, done)
    }

    /// `drain(timeout:on:_:)` as an async call: returns the number of connections the
    /// timeout closed.
    public func drain(timeout: Duration) async -> Int {
        await withCheckedContinuation { continuation in
            engine.drain(timeout: timeout, on: .main) { forced in continuation.resume(returning: forced) }
        }
    }
}

extension Runtime {
    /// Serves HTTP/1.1 on `port` (0: any free port; see `HTTPServer.port`) at `host` (an
    /// IPv4 or IPv6 literal; default all IPv4 interfaces), answering with `routes`.
    ///
    /// Each connection gets a fresh color owned by the loop that accepted it; handlers run
    /// on it (see `HTTPRoutes`). With `accessLog`, every answer gets a line there (see
    /// `HTTPAccessLog`; default none). Throws `ChromaError.system` naming the failed call
    /// (`EADDRINUSE` and the like), `.invalidArgument` for a bad host or limits,
    /// `.shutDown`/`.invalidState` when the runtime is not running.
    @discardableResult
    public func serveHTTP(host: String = "0.0.0.0", port: UInt16, backlog: Int32 = 1024,
                          limits: HTTPLimits = HTTPLimits(), accessLog: HTTPAccessLog? = nil,
                          routes: HTTPRoutes) throws(ChromaError) -> HTTPServer {
        let router = Router(routes: routes, runtime: self)
        let engine = try startHTTPEngine(host: host, port: port, backlog: backlog, limits: limits, accessLog: accessLog,
                                         handler: { router.dispatch($0) })
        return HTTPServer(engine: engine, router: router)
    }
}

extension Runtime {
    /// Serves HTTPS (HTTP/1.1 over TLS 1.2 or later) on `port` at `host`, with the
    /// certificate and key in `tls`; everything else as `serveHTTP`, whose parameters these
    /// are. Any thread.
    ///
    /// A client that fails the handshake (plain HTTP on this port, an unknown protocol
    /// version) only loses its own connection. File answers are encrypted from memory (a
    /// mapping of the file), not sent with sendfile. Throws as `serveHTTP`.
    @discardableResult
    public func serveHTTPS(host: String = "0.0.0.0", port: UInt16, tls: HTTPSConfiguration, backlog: Int32 = 1024,
                           limits: HTTPLimits = HTTPLimits(), accessLog: HTTPAccessLog? = nil,
                           routes: HTTPRoutes) throws(ChromaError) -> HTTPServer {
        let router = Router(routes: routes, runtime: self)
        let engine = try startHTTPEngine(host: host, port: port, backlog: backlog, limits: limits, accessLog: accessLog,
                                         tls: tls, handler: { router.dispatch($0) })
        return HTTPServer(engine: engine, router: router)
    }
}
