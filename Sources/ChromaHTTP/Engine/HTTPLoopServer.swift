import CChroma
import CLibevent
@_spi(Engine) import Chroma
import Glibc

/// One loop's evhttp and its connections. Created on any thread (like a listener: its
/// socket is enabled last, which publishes it to the loop); afterwards used only on the
/// loop's thread. Here: setup, requests, new connections, answers, closing; the deadlines
/// are in `HTTPDeadlines.swift`, the graceful close in `HTTPDrain.swift`, the C callbacks
/// in `HTTPCallbacks.swift`.
final class HTTPLoopServer: EngineSocketOwner, @unchecked Sendable {
    // Safe to send: set up completely before the listening socket is enabled (the base's
    // lock orders that before the loop's first accept); afterwards every mutable field is
    // touched only on `loop`'s thread (callbacks, jobs and timers of `loopColor`).
    let runtime: Runtime
    let loop: EngineLoop
    let loopColor: Color
    let limits: HTTPLimits
    /// The Date header's text, remade once a second.
    let date = HTTPDate()
    let counters = HTTPEngineCounters()
    /// This loop's access-log lines, when the server keeps a log.
    let accessLines: HTTPAccessLines?
    /// The certificate and key of an HTTPS server; nil for plain HTTP.
    let tls: HTTPSConfiguration?
    /// `tls != nil`: connections are OpenSSL bufferevents, whose socket carries TLS
    /// records, so nothing may write the socket directly (see `HTTPConnectionState.flush`).
    let isTLS: Bool
    private let handler: @Sendable (HTTPExchange) -> Void
    var http: OpaquePointer?
    var listener: OpaquePointer?
    /// evhttp's handle for the listening socket, to close it alone when draining.
    var boundSocket: OpaquePointer?
    @exclusivity(unchecked) private(set) var connections = PointerTable<HTTPConnectionState>()
    /// Draining (see `beginDrain`): no new connections, and each connection closes once
    /// the request it has in progress is answered.
    @exclusivity(unchecked) var draining = false
    /// Runs once when a draining server has no connection left.
    var drained: (() -> Void)?
    /// Bufferevents made for connections evhttp has not finished setting up (see `newcomer`).
    private(set) var newcomers: [OpaquePointer] = []
    private var sweepTimer: Timer?
    private(set) var closed = false
    /// Set by `startHTTPEngine` once the loop's shutdown sweep knows the server.
    var registered = false
    private(set) var port: UInt16 = 0

    init(runtime: Runtime, loop: EngineLoop, limits: HTTPLimits, accessLog: HTTPAccessLog?, tls: HTTPSConfiguration?,
         handler: @escaping @Sendable (HTTPExchange) -> Void) {
        self.tls = tls
        self.isTLS = tls != nil
        self.runtime = runtime
        self.loop = loop
        self.loopColor = loop.loopColor
        self.accessLines = accessLog.map { HTTPAccessLines(log: $0, runtime: runtime, loopColor: loop.loopColor) }
        self.limits = limits
        self.handler = handler
        super.init()
    }

    /// Creates the evhttp and its socket (disabled). Any thread while the loop is open.
    func bind(address: ListenAddress, backlog: Int32) throws(ChromaError) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        try loop.withRawBase { base throws(ChromaError) in
            guard let http = evhttp_new(base) else {
                throw .system(operation: "serveHTTP", call: "evhttp_new", errno: errno)
            }
            self.http = http
            let lev = address.withSockaddr { sa, length in
                evconnlistener_new_bind(base, nil, nil, chroma_lev_options(), backlog, sa, Int32(length))
            }
            guard let lev else {
                throw .system(operation: "serveHTTP", call: "evconnlistener_new_bind", errno: errno)
            }
            guard let bound = evhttp_bind_listener(http, lev) else {
                evconnlistener_free(lev)
                throw .system(operation: "serveHTTP", call: "evhttp_bind_listener", errno: errno)
            }
            boundSocket = bound
            listener = lev
            evconnlistener_set_error_cb(lev, httpAcceptErrorCallback)
            HTTPLoopServer.registry.insert(self, for: http)
            evhttp_set_gencb(http, httpRequestCallback, context)
            evhttp_set_bevcb(http, httpNewConnectionCallback, context)
            // A backstop only: `HTTPConnectionState.bytesArrived` answers 413 first (one
            // socket read, at most 16 KiB, can overshoot the limit before it sees it).
            evhttp_set_max_headers_size(http, min(limits.maxHeaderBytes, Int.max - 64 * 1024) + 64 * 1024)
            evhttp_set_max_body_size(http, limits.maxBodyBytes)
            // No evhttp timeout: it is a bufferevent timeout, re-armed (an event_add with a
            // timeout, ~1,200 instructions measured with callgrind) at every read and
            // write toggle of every request. The sweep enforces idle and write timeouts
            // instead, at a few instructions per connection per sweep.
            evhttp_set_allowed_methods(http, UInt16(EVHTTP_REQ_GET.rawValue | EVHTTP_REQ_POST.rawValue | EVHTTP_REQ_HEAD.rawValue
                | EVHTTP_REQ_PUT.rawValue | EVHTTP_REQ_DELETE.rawValue | EVHTTP_REQ_OPTIONS.rawValue | EVHTTP_REQ_PATCH.rawValue))
            evhttp_set_default_content_type(http, nil)
            // No EVHTTP_SERVER_LINGERING_CLOSE: with it, evhttp reads a too-large body to
            // its declared end before answering 413, so a client that waits for the answer
            // first waits for the timeout. Instead every close drains what already arrived
            // (`drainForClose`), so an answer is not lost to a reset.
            port = ListenAddress.boundPort(of: evconnlistener_get_fd(lev))
        }
    }

    /// Starts accepting and the deadline sweep. Any thread.
    func enable() throws(ChromaError) {
        let interval = max(Duration.milliseconds(20), min(Duration.seconds(1), min(limits.requestTimeout, limits.idleTimeout) / 4))
        // Under `lifecycle`: a shutdown sweep may close this server on its loop right now
        // (it was registered before this runs); then there is nothing left to enable.
        try lifecycle.withLock { () throws(ChromaError) in
            guard !closed else { return }
            sweepTimer = try runtime.schedule(after: interval, repeating: interval, on: loopColor) { [self] in sweep() }
            if let listener { evconnlistener_enable(listener) }
        }
    }

    /// Orders `enable` (the caller's thread) against `close` (the loop's thread, or the
    /// caller's for a server never registered): the only two that can meet.
    private let lifecycle = EngineLock()

    // MARK: Requests (loop thread)

    func handle(_ raw: OpaquePointer) {
        guard let evcon = evhttp_request_get_connection(raw) else { return }
        let connection = state(of: evcon)
        if connection.head.isTooLarge {
            // The whole oversized head came in one read, and evhttp parsed it under its
            // backstop limit: answer 413 (evhttp_send_error closes after writing).
            connection.phase = .writing
            counters.noteRejection(status: 413)
            evhttp_send_error(raw, 413, nil)
            return
        }
        connection.handOver(raw)
        counters.requests.add(1, ordering: .relaxed)
        evhttp_request_set_on_complete_cb(raw, httpRequestCompleteCallback, Unmanaged.passUnretained(connection).toOpaque())
        let exchange = HTTPExchange(server: self, connection: connection)
        loop.run(as: connection.color) { handler(exchange) }
    }

    /// The state of `evcon`, made on first sight (a connection evhttp set up before the
    /// newcomer job ran, or one the job found).
    private func state(of evcon: OpaquePointer) -> HTTPConnectionState {
        let key = UnsafeMutableRawPointer(evcon)
        if let known = connections[key] { return known }
        let connection = HTTPConnectionState(color: runtime.makeColor(onLoop: loop.index), raw: evcon, server: self,
                                             now: coarseMonotonicNanoseconds())
        connections.insert(connection, for: key)
        evhttp_connection_set_closecb(evcon, httpConnectionClosedCallback, Unmanaged.passUnretained(self).toOpaque())
        if let bev = evhttp_connection_get_bufferevent(evcon) {
            _ = chroma_tcp_nodelay(bufferevent_getfd(bev))
            connection.input = bufferevent_get_input(bev)
            connection.setInputCallback(enabled: true)
            if let base = bufferevent_get_base(bev),
               let anchor = event_new(base, bufferevent_getfd(bev), chroma_ev_read() | chroma_ev_persist(), httpReadAnchorCallback,
                                      Unmanaged.passUnretained(connection).toOpaque()) {
                connection.readAnchor = anchor
                event_add(anchor, nil)
            }
        }
        counters.connections.add(1, ordering: .relaxed)
        return connection
    }

    /// evhttp asks for a bufferevent for each accepted connection before it creates the
    /// connection, and offers no hook once it exists. The bufferevent is kept alive with an
    /// extra reference until a job, queued now and run before the loop polls again, finds
    /// the connection evhttp made (the bufferevent's callback argument) and registers it;
    /// so a client that never finishes a request still gets its deadline.
    /// For HTTPS the bufferevent is OpenSSL's, accepting a handshake.
    func newcomer(base: OpaquePointer) -> OpaquePointer? {
        let made = if let tls { tls.acceptingBufferevent(base: base) } else {
            bufferevent_socket_new(base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        }
        guard let bev = made else { return nil }
        bufferevent_incref(bev)
        newcomers.append(bev)
        if newcomers.count == 1 {
            try? runtime.execute(on: loopColor) { [self] in registerNewcomers() }
        }
        return bev
    }

    private func registerNewcomers() {
        let pending = newcomers
        newcomers.removeAll(keepingCapacity: true)
        for bev in pending {
            var read: bufferevent_data_cb?
            var argument: UnsafeMutableRawPointer?
            bufferevent_getcb(bev, &read, nil, nil, &argument)
            // Callbacks cleared: evhttp already freed the connection (our reference kept
            // the memory valid to find that out).
            if !closed, read != nil, let evcon = argument {
                let connection = state(of: OpaquePointer(evcon))
                if draining && connection.isIdle { evhttp_connection_free(connection.raw) }
            }
            _ = bufferevent_decref(bev)
        }
        reportIfDrained()
    }

    func connectionClosed(_ evcon: OpaquePointer) {
        if let bev = evhttp_connection_get_bufferevent(evcon) {
            if isTLS { HTTPSConfiguration.sendCloseNotify(bev) }
            drainForClose(bufferevent_getfd(bev))
        }
        guard let connection = connections.remove(UnsafeMutableRawPointer(evcon)) else { return }
        counters.closedConnections.add(1, ordering: .relaxed)
        connection.logPendingLine()
        connection.setInputCallback(enabled: false)
        connection.freeAnchor()
        connection.dropRequest()
        reportIfDrained()
    }

    /// Just before evhttp closes a socket: end our side and read away what the client
    /// already sent (up to 64 KiB; under TLS these are records nobody will decrypt, read
    /// only so the close is not a reset). Closing with unread input makes the kernel send a
    /// reset, which can destroy an answer (a 408, a 413) the client has not read yet.
    private func drainForClose(_ fd: Int32) {
        guard fd >= 0 else { return }
        shutdown(fd, Int32(SHUT_WR))
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0),
                       UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var total = 0
        while total < 64 * 1024 {
            let n = withUnsafeMutableBytes(of: &scratch) { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { break }
            total += n
        }
    }

    // MARK: Answers (loop thread)

    /// Answers flushed together at most: batches wake the client side once per batch, but
    /// a batch that waits for the end of a long iteration (thousands of connections ready)
    /// finds its connections gone from the cache; a full batch is flushed at once.
    /// (16: at 5,000 connections 65-69k req/s, against 51-55k flushing only at the end of
    /// the iteration and 62-64k flushing each answer alone; at 64 connections all within
    /// this machine's noise.)
    static let flushBatch = 16

    /// Answers given in this loop iteration, flushed by one job at its end.
    @exclusivity(unchecked) private var unflushed: [(HTTPConnectionState, UInt64)] = []

    /// Queues `connection`'s answer for `flushAnswers`. The job is queued on this loop's
    /// run queue, whose wakeup event runs after the I/O events already active in this
    /// iteration, before the next poll.
    func flushLater(_ connection: HTTPConnectionState) {
        unflushed.append((connection, connection.serial))
        if unflushed.count >= HTTPLoopServer.flushBatch {
            flushAnswers()
        } else if unflushed.count == 1 {
            // A C function and a retained context: no closure allocated per iteration.
            let context = Unmanaged.passRetained(self).toOpaque()
            do {
                try runtime.execute(on: loopColor, context: context) { context in
                    let server = Unmanaged<HTTPLoopServer>.fromOpaque(context!).takeRetainedValue()
                    server.flushAnswers()
                }
            } catch {
                Unmanaged<HTTPLoopServer>.fromOpaque(context).release()
                unflushed.removeAll()  // shutting down: the bufferevents write as usual
            }
        }
    }

    private func flushAnswers() {
        // Swapped out, not copied (flushing can queue more answers), and its storage
        // handed back afterwards: no allocation per batch.
        var batch = spareBatch
        swap(&batch, &unflushed)
        for (connection, serial) in batch where !closed && connections[UnsafeMutableRawPointer(connection.raw)] === connection {
            connection.flush(serial: serial)
        }
        batch.removeAll(keepingCapacity: true)
        spareBatch = batch
    }

    @exclusivity(unchecked) private var spareBatch: [(HTTPConnectionState, UInt64)] = []

    // MARK: Closing (loop thread)

    /// Frees the evhttp: its socket and every connection. Exchanges still held by handlers
    /// are cut loose first, so none touches a freed request. Idempotent.
    func close() {
        lifecycle.withLock {
            guard !closed else { return }
            closed = true
            _ = sweepTimer?.cancel()
            sweepTimer = nil
            for connection in connections.all { connection.dropRequest() }
            if let http {
                HTTPLoopServer.registry.remove(http)
                // Frees every connection (each calls `connectionClosed`) and the listener.
                evhttp_free(http)
            }
            http = nil
            listener = nil
            counters.closedConnections.add(connections.count, ordering: .relaxed)
            for connection in connections.all { connection.logPendingLine() }
            connections.removeAll()
            accessLines?.close()
            for bev in newcomers { _ = bufferevent_decref(bev) }
            newcomers.removeAll()
            boundSocket = nil
        }
        loop.unregister(self)
        reportIfDrained()
    }

    override func closeForShutdown() { close() }
}
