import CChroma
import CLibevent
@_spi(Engine) import Chroma
import Glibc
import Synchronization

// The only file that touches evhttp handles (servers, connections, requests). Their
// `OpaquePointer`s stay private to it; the base comes from `EngineLoop.withRawBase`.
//
// This is the engine under `HTTPServer` and `HTTPRoutes`: one evhttp
// per loop, each with its own SO_REUSEPORT listening socket, so a connection is accepted,
// parsed, handled and answered on one loop thread with no hand-over. libevent's parser does
// the HTTP; this file adds what evhttp lacks: a color per connection, a whole-request
// deadline answered with 408 (evhttp's own timeout restarts on every byte, so a client
// trickling a header never trips it), EMFILE back-off on accept, and a shutdown that never
// leaves a pointer to a freed request behind.

/// What an HTTP engine enforces on every connection.
struct HTTPEngineLimits: Sendable {
    /// Largest request head (request line plus headers); larger gets 413.
    var maxHeaderBytes: Int
    /// Largest request body; larger gets 413.
    var maxBodyBytes: Int
    /// Time from a request's first byte to its last; slower gets 408 and a close.
    var requestTimeout: Duration
    /// A connection with no request in progress and nothing to write is closed after this.
    var idleTimeout: Duration

    /// The limits, as `ChromaHTTP.HTTPLimits` gives them.
    init(maxHeaderBytes: Int, maxBodyBytes: Int, requestTimeout: Duration, idleTimeout: Duration) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
    }
}

/// Counters of an HTTP engine, summed over its loops.
struct HTTPEngineStats: Sendable {
    /// Requests handed to the handler.
    var requests: Int
    /// Requests answered 408 by the request deadline.
    var requestTimeouts: Int
    /// Connections accepted.
    var connections: Int
    /// Accept calls that failed (out of descriptors and the like).
    var acceptFailures: Int
}

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
    var stats: HTTPEngineStats {
        var total = HTTPEngineStats(requests: 0, requestTimeouts: 0, connections: 0, acceptFailures: 0)
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

/// One `HTTPEngine.drain`: counts the loops still draining and calls `done` once.
final class HTTPDrain: Sendable {
    let forced = Atomic<Int>(0)
    private let remaining: Atomic<Int>
    private let runtime: Runtime
    private let color: Color
    private let done: @Sendable (Int) -> Void
    private let timerBox = Mutex<Timer?>(nil)

    init(runtime: Runtime, loops: Int, color: Color, done: @escaping @Sendable (Int) -> Void) {
        self.runtime = runtime
        self.color = color
        self.done = done
        remaining = Atomic(loops)
    }

    /// The deadline's timer, cancelled when the drain ends first.
    var timer: Timer? {
        get { timerBox.withLock { $0 } }
        set { timerBox.withLock { $0 = newValue } }
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

/// One request, from the moment its head and body are read until it is answered. Created
/// and answered on its connection's loop; `respond` may be called from any thread (it hops
/// to the connection's color), everything else only on that loop's thread.
///
/// An exchange dropped without an answer answers 500 itself, so a handler bug never leaves
/// a client waiting.
final class HTTPExchange: @unchecked Sendable {
    // Safe to send: `connection` is read and written only on `server`'s loop thread (off
    // it, `respond` only queues a job to the connection's color, owned by that loop);
    // `answered` likewise, and `deinit` reads it only after every job holding the exchange
    // has released it; the rest is immutable.
    private let server: HTTPLoopServer
    private let connection: HTTPConnectionState
    /// Which of the connection's requests this is: the connection's `request` is this
    /// exchange's only while the serials match.
    private let serial: UInt64
    @exclusivity(unchecked) private var answered = false
    /// The connection's color: handlers run on it, answers are sent from it.
    let color: Color

    fileprivate init(server: HTTPLoopServer, connection: HTTPConnectionState) {
        self.server = server
        self.connection = connection
        self.serial = connection.serial
        self.color = connection.color
    }

    private func request() -> OpaquePointer? {
        server.loop.preconditionOnLoop("an HTTP request is read on its connection's loop")
        return connection.serial == serial ? connection.request : nil
    }

    /// The method's name ("GET", …).
    var method: String {
        guard let raw = request() else { return "" }
        switch evhttp_request_get_command(raw) {
        case EVHTTP_REQ_GET: return "GET"
        case EVHTTP_REQ_POST: return "POST"
        case EVHTTP_REQ_HEAD: return "HEAD"
        case EVHTTP_REQ_PUT: return "PUT"
        case EVHTTP_REQ_DELETE: return "DELETE"
        case EVHTTP_REQ_OPTIONS: return "OPTIONS"
        case EVHTTP_REQ_TRACE: return "TRACE"
        case EVHTTP_REQ_CONNECT: return "CONNECT"
        case EVHTTP_REQ_PATCH: return "PATCH"
        default: return "?"
        }
    }

    /// The target's path, still percent-encoded ("/a%20b"); "/" for an empty one.
    var path: String {
        guard let raw = request(), let parsed = evhttp_request_get_evhttp_uri(raw),
              let path = evhttp_uri_get_path(parsed), path.pointee != 0 else { return "/" }
        return String(cString: path)
    }

    /// The target's query, percent-encoded, or nil.
    var query: String? {
        guard let raw = request(), let parsed = evhttp_request_get_evhttp_uri(raw),
              let query = evhttp_uri_get_query(parsed) else { return nil }
        return String(cString: query)
    }

    /// The first value of header `name` (any case), or nil.
    func header(_ name: String) -> String? {
        guard let raw = request(), let value = evhttp_find_header(evhttp_request_get_input_headers(raw), name) else { return nil }
        return String(cString: value)
    }

    /// Every header, in order.
    var headers: [(name: String, value: String)] {
        guard let raw = request() else { return [] }
        var all: [(name: String, value: String)] = []
        var entry = chroma_evkeyval_first(evhttp_request_get_input_headers(raw))
        while let header = entry {
            all.append((String(cString: header.pointee.key), String(cString: header.pointee.value)))
            entry = chroma_evkeyval_next(header)
        }
        return all
    }

    /// The body (read whole before the handler runs, within the body limit).
    var body: [UInt8] {
        guard let raw = request(), let input = evhttp_request_get_input_buffer(raw) else { return [] }
        let length = evbuffer_get_length(input)
        guard length > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            count = max(0, Int(evbuffer_copyout(input, buffer.baseAddress, length)))
        }
    }

    /// "host:port" of the client.
    var peer: String {
        guard let raw = request(), let evcon = evhttp_request_get_connection(raw) else { return "?" }
        var address: UnsafeMutablePointer<CChar>?
        var port: UInt16 = 0
        evhttp_connection_get_peer(evcon, &address, &port)
        return "\(address.map { String(cString: $0) } ?? "?"):\(port)"
    }

    /// Answers with `status`, `headers` and `body`. Any thread: off the connection's loop
    /// it queues the answer to the connection's color. Returns false when the exchange was
    /// already answered or its connection is gone (known at once only on the loop thread;
    /// from elsewhere, true means queued).
    @discardableResult
    func respond(status: Int, headers: [(name: String, value: String)], body: [UInt8]) -> Bool {
        if server.loop.isCurrent {
            return body.withUnsafeBytes { send(status: status, headers: headers, body: $0) }
        }
        do {
            try server.runtime.execute(on: color) { [self] in
                _ = body.withUnsafeBytes { send(status: status, headers: headers, body: $0) }
            }
            return true
        } catch {
            return false
        }
    }

    /// Answers with the `length` bytes of open file `fd` from `offset`, sent with sendfile
    /// where libevent can (`evbuffer_add_file`). Takes `fd` over: it is closed once sent,
    /// or at once when the exchange can no longer be answered. Loop thread only.
    @discardableResult
    func respondFile(status: Int, headers: [(name: String, value: String)], fd: Int32, offset: Int, length: Int) -> Bool {
        guard let raw = request() else {
            Glibc.close(fd)
            return false
        }
        addHeaders(raw, headers)
        let output = evhttp_request_get_output_buffer(raw)
        if isHead(raw) {
            Glibc.close(fd)
            addHeadLength(raw, length)
        } else if length == 0 {
            Glibc.close(fd)
        } else {
            // evbuffer_add_file's two steps, so the descriptor's owner is known on failure:
            // a segment that was never made leaves it to us; one that was made owns it.
            guard let segment = evbuffer_file_segment_new(fd, Int64(offset), Int64(length), UInt32(EVBUF_FS_CLOSE_ON_FREE)) else {
                Glibc.close(fd)
                return finish(raw, status: 500)
            }
            // Marked as draining to a descriptor, the request's output takes the segment as a
            // sendfile chain (which moves into the socket's buffer as is); unmarked, libevent
            // would mmap the whole file, or read it on the loop when mmap fails.
            _ = evbuffer_set_flags(output, UInt64(EVBUFFER_FLAG_DRAINS_TO_FD))
            guard evbuffer_add_file_segment(output, segment, 0, Int64(length)) == 0 else {
                return finish(raw, status: 500)  // (the failed add freed the segment, closing fd)
            }
            evbuffer_file_segment_free(segment)  // the buffer holds its own reference
        }
        return finish(raw, status: status)
    }

    private func send(status: Int, headers: [(name: String, value: String)], body: UnsafeRawBufferPointer) -> Bool {
        guard let raw = request() else { return false }
        addHeaders(raw, headers)
        if isHead(raw) {
            addHeadLength(raw, body.count)
        } else if body.count > 0 {
            evbuffer_add(evhttp_request_get_output_buffer(raw), body.baseAddress, body.count)
        }
        return finish(raw, status: status)
    }

    private func isHead(_ raw: OpaquePointer) -> Bool {
        evhttp_request_get_command(raw) == EVHTTP_REQ_HEAD
    }

    /// HEAD: evhttp 2.1 would send a body given one (and leaves out Content-Length), so
    /// the body is dropped here and its length announced, as GET would have.
    private func addHeadLength(_ raw: OpaquePointer, _ length: Int) {
        let output = evhttp_request_get_output_headers(raw)
        if evhttp_find_header(output, "Content-Length") == nil {
            _ = evhttp_add_header(output, "Content-Length", String(length))
        }
    }

    private func addHeaders(_ raw: OpaquePointer, _ headers: [(name: String, value: String)]) {
        guard !headers.isEmpty else { return }
        let output = evhttp_request_get_output_headers(raw)
        for header in headers {
            // evhttp refuses names and values with CR or LF (header injection): the answer
            // goes out without that header. (Explicit withCString: the implicit conversion
            // copies a small string, "Content-Type" say, to the heap.)
            _ = header.name.withCString { name in header.value.withCString { value in evhttp_add_header(output, name, value) } }
        }
    }

    private func finish(_ raw: OpaquePointer, status: Int) -> Bool {
        answered = true
        server.date.add(to: evhttp_request_get_output_headers(raw))
        connection.answer(raw, status: status)
        return true
    }

    deinit {
        guard !answered else { return }
        // Never answered: answer 500 rather than leave the client waiting. The last
        // reference may drop on any thread; the answer is sent from the connection's loop,
        // and only if the connection still waits for this very request.
        if server.loop.isCurrent {
            connection.answerUnanswered(serial: serial)
        } else {
            let connection = self.connection, serial = self.serial
            try? server.runtime.execute(on: color) { connection.answerUnanswered(serial: serial) }
        }
    }
}

/// What a connection is doing, as far as the request deadline is concerned.
enum HTTPConnectionPhase {
    /// Waiting for (or reading) a request: the request deadline runs once a byte came.
    case waiting
    /// The handler has the request.
    case handling
    /// The answer is being written (evhttp's write timeout applies).
    case writing
}

/// One evhttp connection. Loop thread only.
final class HTTPConnectionState: @unchecked Sendable {
    // Safe to send: jobs carry it to its own loop, the only thread that touches it.
    // `@exclusivity(unchecked)` on the per-request fields: one thread, no overlapping
    // accesses, and the dynamic checks showed in the per-request profile.
    let color: Color
    fileprivate let raw: OpaquePointer
    /// The server outlives its connections (it frees them all before it goes), so the
    /// reference needs no count and no check: `unowned(unsafe)`, since a checked unowned
    /// reference costs a retain and a release at every use, several per request.
    fileprivate unowned(unsafe) let server: HTTPLoopServer
    /// Bytes of the current request's head seen so far, until its end is seen.
    @exclusivity(unchecked) fileprivate var headBytes = 0
    @exclusivity(unchecked) fileprivate var headDone = false
    /// The head outgrew `maxHeaderBytes`: the request is answered 413.
    @exclusivity(unchecked) fileprivate var headTooLarge = false
    @exclusivity(unchecked) fileprivate var inputCallback: OpaquePointer?
    /// The bufferevent's input buffer, whose callback is on only until a request's head
    /// is complete (libevent calls it on every add and drain, and evhttp drains line by line).
    @exclusivity(unchecked) fileprivate var input: OpaquePointer?
    /// A second persistent read event on the socket, which does nothing: while it is
    /// registered, evhttp's disabling and re-enabling of reading around each request never
    /// reaches epoll (libevent tells the backend only when the fd's read count goes to or
    /// from zero), saving an epoll_ctl per request. Taken off when it would spin: a second
    /// firing while a handler holds the request (so evhttp is not reading) means input is
    /// waiting unread; it comes back when the answer is written.
    fileprivate var readAnchor: OpaquePointer?
    fileprivate var anchorFires = 0
    fileprivate var anchorParked = false
    /// Reading is off while a large answer is written (see `flush`).
    @exclusivity(unchecked) fileprivate var readPausedForAnswer = false
    /// The request the handler holds, until it is answered or the connection goes.
    @exclusivity(unchecked) fileprivate var request: OpaquePointer?
    /// Counts the connection's requests, so an exchange can tell `request` is its own.
    @exclusivity(unchecked) fileprivate var serial: UInt64 = 0
    @exclusivity(unchecked) var phase = HTTPConnectionPhase.waiting
    /// Set when the first byte of a request arrives; the deadline counts from then.
    @exclusivity(unchecked) var requestStarted = false
    /// When the current phase began (or, once `requestStarted`, when the request did).
    @exclusivity(unchecked) var requestStartedAt: UInt64
    /// While `.writing`: the output length the sweep last saw, and when it last changed.
    @exclusivity(unchecked) var lastOutputLength = -1
    @exclusivity(unchecked) var lastProgressAt: UInt64 = 0

    fileprivate init(color: Color, raw: OpaquePointer, server: HTTPLoopServer, now: UInt64) {
        self.color = color
        self.raw = raw
        self.server = server
        self.requestStartedAt = now
    }

    fileprivate func handOver(_ request: OpaquePointer) {
        self.request = request
        serial &+= 1
        phase = .handling
        anchorFires = 0
        // A pipelined request parsed from bytes already buffered never ran the input
        // callback, which would otherwise stay on through the handler.
        setInputCallback(enabled: false)
    }

    fileprivate func answer(_ request: OpaquePointer, status: Int) {
        self.request = nil
        phase = .writing
        lastOutputLength = -1
        if server.draining {
            // evhttp closes the connection once an answer with this header is written.
            let headers = evhttp_request_get_output_headers(request)
            if evhttp_find_header(headers, "Connection") == nil { _ = evhttp_add_header(headers, "Connection", "close") }
        }
        evhttp_send_reply(request, Int32(status), nil, nil)
        server.flushLater(self)
    }

    /// Writes the answer before the loop polls again, instead of after: evhttp only asks
    /// the bufferevent to write once the socket reports writable, which costs one more poll
    /// and two epoll interest changes per request. The loop's server collects the answers
    /// given in one loop iteration and flushes them together at its end (`flushAnswers`),
    /// so the client side is woken once per batch, not once per answer. If an answer leaves
    /// whole, the bufferevent's write callback is run at once, so evhttp finishes the
    /// request and starts reading the next (its read/write interest changes then cancel
    /// out in the changelist); if not, the bufferevent writes the rest when the socket is
    /// writable, as before. This is what the bufferevent's own write callback does, one
    /// poll earlier (the output's start is frozen except while the bufferevent writes).
    fileprivate func flush(serial: UInt64) {
        // Only the answer this flush was queued for, still unsent by the bufferevent.
        guard phase == .writing, serial == self.serial, let bev = evhttp_connection_get_bufferevent(raw) else { return }
        let output = bufferevent_get_output(bev)
        guard evbuffer_get_length(output) > 0 else { return }
        evbuffer_unfreeze(output, 1)
        _ = evbuffer_write(output, bufferevent_getfd(bev))
        evbuffer_freeze(output, 1)
        if evbuffer_get_length(output) == 0 {
            // Runs evhttp's write callback now: it completes the request (our completion
            // callback, maybe the connection's close) before this returns.
            bufferevent_trigger(bev, Int16(EV_WRITE), Int32(BEV_TRIG_IGNORE_WATERMARKS.rawValue))
        } else {
            // The rest goes out as the socket drains. evhttp keeps reading meanwhile, only
            // to notice a close, and takes the FIN of a client that half-closed after its
            // request for a failure: it would free the connection mid-answer. Reading
            // pauses instead until the answer is out (evhttp turns it back on to read the
            // next request, and the FIN is then an orderly end). Input the client sends
            // meanwhile waits in the kernel, which also bounds it.
            bufferevent_disable(bev, chroma_ev_read())
            readPausedForAnswer = true
        }
    }

    /// An exchange died unanswered: answer 500 if the connection still waits for it.
    fileprivate func answerUnanswered(serial: UInt64) {
        guard serial == self.serial, let request else { return }
        answer(request, status: 500)
    }

    /// The connection is closing: forgets the request a handler holds. libevent frees it
    /// with the connection, except after a network failure (`evhttp_connection_fail_` on
    /// EOF or a timeout, which can strike while a handler holds the request only if the
    /// `100 Continue` evhttp queued before the body fails to write): it then detaches the
    /// request, leaving it for the reply that would free it, which can no longer come
    /// from here. Such a request is freed now.
    fileprivate func dropRequest() {
        if let request, evhttp_request_get_connection(request) == nil { evhttp_request_free(request) }
        request = nil
    }

    /// The input buffer's callback: `added` bytes just arrived (libevent parses them right
    /// after). Starts the request deadline, and measures the request's head: evhttp 2.1
    /// answers an oversized head with 400, so Chroma finds the head's end itself and
    /// answers 413 first (evhttp's own limit is set well above, as a backstop).
    fileprivate func bytesArrived(_ input: OpaquePointer, added: Int) {
        guard phase == .waiting else { return }
        if !requestStarted {
            requestStarted = true
            requestStartedAt = coarseMonotonicNanoseconds()
        }
        guard !headDone && !headTooLarge else { return }
        let length = evbuffer_get_length(input)
        let newStart = length - added
        if let end = HTTPConnectionState.headEnd(input, from: newStart, length: length) {
            headDone = true
            headBytes += end - newStart
        } else {
            headBytes += added
        }
        if headBytes > server.limits.maxHeaderBytes {
            headTooLarge = true
            // Not from inside libevent's read: the job runs before the loop polls again.
            if !headDone { server.answerHeadTooLarge(self) }
        }
        if headDone || headTooLarge { setInputCallback(enabled: false) }
    }

    /// The input buffer's callback exists only from the end of an answer until the next
    /// head is complete: libevent runs a buffer's callback list on every add and drain (and
    /// evhttp drains line by line), so even a disabled entry costs; removing it (libevent
    /// allows that from inside the callback) leaves evhttp's parsing as cheap as in C.
    fileprivate func setInputCallback(enabled: Bool) {
        guard let input else { return }
        if enabled {
            if inputCallback == nil {
                inputCallback = evbuffer_add_cb(input, httpInputCallback, Unmanaged.passUnretained(self).toOpaque())
            }
        } else if let entry = inputCallback {
            _ = evbuffer_remove_cb_entry(input, entry)
            inputCallback = nil
        }
    }

    /// Where the head ends (just past its blank line) if that is in the bytes from
    /// `newStart` on, else nil: one pass over the new bytes where libevent keeps them (no
    /// copy). evhttp consumes whole lines as they come, so an empty buffer before the new
    /// bytes means the last byte consumed ended a line.
    private static func headEnd(_ input: OpaquePointer, from newStart: Int, length: Int) -> Int? {
        // A blank line is "\n" then an optional "\r" then "\n".
        var state = newStart == 0 ? 1 : 0  // 0: nothing, 1: after "\n", 2: after "\n\r"
        var position = max(0, newStart - 2)
        var start = evbuffer_ptr()
        guard evbuffer_ptr_set(input, &start, position, EVBUFFER_PTR_SET) == 0 else { return nil }
        // One socket read fills at most four chains (libevent's NUM_READ_IOVEC), plus the
        // chain holding the two bytes before them: eight extents always cover the new bytes.
        return withUnsafeTemporaryAllocation(of: iovec.self, capacity: 8) { vectors -> Int? in
            let count = Int(evbuffer_peek(input, length - position, &start, vectors.baseAddress, Int32(vectors.count)))
            for index in 0..<min(count, vectors.count) {
                let extent = UnsafeRawBufferPointer(start: vectors[index].iov_base, count: vectors[index].iov_len)
                if let end = scanForBlankLine(extent, &state) { return position + end }
                position += extent.count
            }
            return nil
        }
    }

    /// Looks for "\n" ["\r"] "\n" in `bytes`, jumping between line ends with memchr;
    /// `state` carries a match begun in an earlier extent. Returns the offset just past it.
    private static func scanForBlankLine(_ bytes: UnsafeRawBufferPointer, _ state: inout Int) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        var i = 0
        while i < bytes.count {
            if state == 0 {
                guard let hit = memchr(base + i, 0x0A, bytes.count - i) else { return nil }
                i = base.distance(to: UnsafeRawPointer(hit)) + 1
                state = 1
                continue
            }
            let byte = bytes[i]
            i += 1
            if byte == 0x0A { return i }
            state = byte == 0x0D && state == 1 ? 2 : 0
        }
        return nil
    }

    fileprivate func answerWritten() {
        phase = .waiting
        readPausedForAnswer = false
        requestStarted = false
        requestStartedAt = coarseMonotonicNanoseconds()
        headBytes = 0
        headDone = false
        headTooLarge = false
        setInputCallback(enabled: true)
        // Bytes of the next request that came while this one was handled or written were
        // not measured (the callback was off): measure them now, as if just arrived.
        if let input, evbuffer_get_length(input) > 0 {
            bytesArrived(input, added: evbuffer_get_length(input))
        }
        if anchorParked, let readAnchor {
            anchorParked = false
            event_add(readAnchor, nil)
        }
        // An answer given before the drain began went out without `Connection: close`.
        if server.draining { server.closeWhenIdleLater(self) }
    }

    /// No request in progress: nothing buffered, nothing unread on the socket, no handler
    /// or answer. (A request the client sent that is still in flight on the network is
    /// the race every keep-alive close has; HTTP clients retry it.)
    fileprivate var isIdle: Bool {
        guard phase == .waiting, !requestStarted, let input, evbuffer_get_length(input) == 0 else { return false }
        guard let bev = evhttp_connection_get_bufferevent(raw) else { return true }
        var byte: UInt8 = 0
        return recv(bufferevent_getfd(bev), &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) <= 0
    }

    fileprivate func anchorFired() {
        if phase == .writing {
            if readPausedForAnswer {
                // Input (or the FIN) waits while the answer is written: park the anchor
                // rather than let it fire at every poll; the answer's end brings it back.
                if let readAnchor {
                    event_del(readAnchor)
                    anchorParked = true
                }
                return
            }
            // evhttp reads (and buffers) everything while it writes an answer, with no
            // callback to consume it: a client that sends without reading would grow the
            // input without bound. More than a whole next request could be: close.
            if let input, evbuffer_get_length(input) > server.inputLimitWhileWriting { server.closeFlooding(self) }
            return
        }
        guard phase == .handling else { return }
        anchorFires += 1
        // The first firing comes with the request itself; another one while evhttp is not
        // reading means input waits (pipelined bytes, or the peer's FIN): park the anchor.
        if anchorFires > 1, let readAnchor {
            event_del(readAnchor)
            anchorParked = true
        }
    }

    fileprivate func freeAnchor() {
        if let readAnchor { event_free(readAnchor) }
        readAnchor = nil
    }
}

/// One loop's evhttp and its connections. Created on any thread (like a listener: its
/// socket is enabled last, which publishes it to the loop); afterwards used only on the
/// loop's thread.
final class HTTPLoopServer: EngineSocketOwner, @unchecked Sendable {
    // Safe to send: set up completely before the listening socket is enabled (the base's
    // lock orders that before the loop's first accept); afterwards every mutable field is
    // touched only on `loop`'s thread (callbacks, jobs and timers of `loopColor`).
    let runtime: Runtime
    let loop: EngineLoop
    let loopColor: Color
    let limits: HTTPEngineLimits
    /// The Date header's text, remade once a second.
    let date = HTTPDate()
    let counters = HTTPEngineCounters()
    private let handler: @Sendable (HTTPExchange) -> Void
    private var http: OpaquePointer?
    private var listener: OpaquePointer?
    /// evhttp's handle for the listening socket, to close it alone when draining.
    private var boundSocket: OpaquePointer?
    @exclusivity(unchecked) private var connections = PointerTable<HTTPConnectionState>()
    /// Draining (see `beginDrain`): no new connections, and each connection closes once
    /// the request it has in progress is answered.
    @exclusivity(unchecked) private(set) var draining = false
    /// Runs once when a draining server has no connection left.
    private var drained: (() -> Void)?
    /// Bufferevents made for connections evhttp has not finished setting up (see `newcomer`).
    private var newcomers: [OpaquePointer] = []
    private var sweepTimer: Timer?
    private var closed = false
    /// Set by `startHTTPEngine` once the loop's shutdown sweep knows the server.
    var registered = false
    private(set) var port: UInt16 = 0

    init(runtime: Runtime, loop: EngineLoop, limits: HTTPEngineLimits,
         handler: @escaping @Sendable (HTTPExchange) -> Void) {
        self.runtime = runtime
        self.loop = loop
        self.loopColor = Color(UInt64(loop.index))
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

    fileprivate func handle(_ raw: OpaquePointer) {
        guard let evcon = evhttp_request_get_connection(raw) else { return }
        let connection = state(of: evcon)
        if connection.headTooLarge {
            // The whole oversized head came in one read, and evhttp parsed it under its
            // backstop limit: answer 413 (evhttp_send_error closes after writing).
            connection.phase = .writing
            evhttp_send_error(raw, 413, nil)
            return
        }
        connection.handOver(raw)
        counters.requests.add(1, ordering: .relaxed)
        evhttp_request_set_on_complete_cb(raw, httpRequestCompleteCallback, Unmanaged.passUnretained(connection).toOpaque())
        let exchange = HTTPExchange(server: self, connection: connection)
        loop.runAs(connection.color.rawValue) { handler(exchange) }
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
    fileprivate func newcomer(base: OpaquePointer) -> OpaquePointer? {
        guard let bev = bufferevent_socket_new(base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else { return nil }
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

    fileprivate func connectionClosed(_ evcon: OpaquePointer) {
        if let bev = evhttp_connection_get_bufferevent(evcon) { drainForClose(bufferevent_getfd(bev)) }
        guard let connection = connections.remove(UnsafeMutableRawPointer(evcon)) else { return }
        connection.setInputCallback(enabled: false)
        connection.freeAnchor()
        connection.dropRequest()
        reportIfDrained()
    }

    /// Just before evhttp closes a socket: end our side and read away what the client
    /// already sent (up to 64 KiB). Closing with unread input makes the kernel send a
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
    fileprivate func flushLater(_ connection: HTTPConnectionState) {
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

    // MARK: Deadlines (loop thread)

    /// Deadlines, every sweep: a request not whole `requestTimeout` after its first byte
    /// gets 408 and a close; a connection waiting for a request with nothing sent for
    /// `idleTimeout`, or whose answer made no progress for that long (a client that does
    /// not read), is closed quietly. Handlers have no deadline here.
    private func sweep() {
        guard !closed else { return }
        let now = coarseMonotonicNanoseconds()
        let requestLimit = limits.requestTimeout.nanosecondsOrMax
        let idleLimit = limits.idleTimeout.nanosecondsOrMax
        var late: [HTTPConnectionState] = []
        var idle: [HTTPConnectionState] = []
        for connection in connections.all {
            switch connection.phase {
            case .waiting:
                if connection.requestStarted || inputLength(connection.raw) > 0 {
                    if now &- connection.requestStartedAt >= requestLimit { late.append(connection) }
                } else if now &- connection.requestStartedAt >= idleLimit {
                    idle.append(connection)
                }
            case .writing:
                let length = outputLength(connection.raw)
                if length != connection.lastOutputLength {
                    connection.lastOutputLength = length
                    connection.lastProgressAt = now
                } else if now &- connection.lastProgressAt >= idleLimit {
                    idle.append(connection)
                }
            case .handling:
                break
            }
        }
        for connection in late { timeOut(connection) }
        for connection in idle { evhttp_connection_free(connection.raw) }
    }

    private func outputLength(_ evcon: OpaquePointer) -> Int {
        guard let bev = evhttp_connection_get_bufferevent(evcon) else { return 0 }
        return evbuffer_get_length(bufferevent_get_output(bev))
    }

    private func inputLength(_ evcon: OpaquePointer) -> Int {
        guard let bev = evhttp_connection_get_bufferevent(evcon) else { return 0 }
        return evbuffer_get_length(bufferevent_get_input(bev))
    }

    private func timeOut(_ connection: HTTPConnectionState) {
        counters.requestTimeouts.add(1, ordering: .relaxed)
        answerAndClose(connection, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    }

    /// The most input a connection may buffer while its answer is written: a whole next
    /// request (head and body) and some slack.
    var inputLimitWhileWriting: Int {
        let (sum, overflow) = limits.maxHeaderBytes.addingReportingOverflow(limits.maxBodyBytes)
        return overflow ? Int.max : sum &+ 64 * 1024
    }

    /// A client that kept sending while not reading its answer (loop thread, from the
    /// connection's read anchor, outside evhttp's callbacks).
    fileprivate func closeFlooding(_ connection: HTTPConnectionState) {
        guard connections[UnsafeMutableRawPointer(connection.raw)] === connection else { return }
        evhttp_connection_free(connection.raw)
    }

    /// Queues the 413 for a head that outgrew the limit before it ended.
    fileprivate func answerHeadTooLarge(_ connection: HTTPConnectionState) {
        try? runtime.execute(on: loopColor) { [self] in
            guard !closed, connections[UnsafeMutableRawPointer(connection.raw)] === connection,
                  connection.phase == .waiting, connection.headTooLarge else { return }
            answerAndClose(connection, "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        }
    }

    /// Writes `answer` straight to the socket and frees the connection. Only for a
    /// connection in `.waiting`: nothing else is being written then, so the short answer
    /// fits the empty socket buffer.
    private func answerAndClose(_ connection: HTTPConnectionState, _ answer: StaticString) {
        if let bev = evhttp_connection_get_bufferevent(connection.raw) {
            let fd = bufferevent_getfd(bev)
            if fd >= 0 {
                _ = Glibc.send(fd, answer.utf8Start, answer.utf8CodeUnitCount, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
        }
        evhttp_connection_free(connection.raw)  // calls `connectionClosed`, which drains
    }

    // MARK: Accept errors (loop thread)

    /// Out of descriptors: pause accepting instead of spinning on the readable socket.
    fileprivate func acceptFailed(_ error: Int32) {
        counters.acceptFailures.add(1, ordering: .relaxed)
        guard error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM, let listener else { return }
        evconnlistener_disable(listener)
        _ = try? runtime.schedule(after: Listener.acceptRetryDelay, on: loopColor) { [self] in
            if !closed, let listener = self.listener { evconnlistener_enable(listener) }
        }
    }

    /// Servers by their evhttp, for the accept-error callback (whose argument is evhttp's).
    fileprivate static let registry = HTTPServerRegistry()

    // MARK: Draining (loop thread)

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
    fileprivate func closeWhenIdleLater(_ connection: HTTPConnectionState) {
        try? runtime.execute(on: loopColor) { [self] in
            guard !closed, connections[UnsafeMutableRawPointer(connection.raw)] === connection, connection.isIdle else { return }
            evhttp_connection_free(connection.raw)
        }
    }

    /// The connections still open (those evhttp is still setting up included).
    var openConnections: Int { connections.count + newcomers.count }

    private func reportIfDrained() {
        guard draining || closed, connections.count == 0, newcomers.isEmpty, let report = drained else { return }
        drained = nil
        report()
    }

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
            connections.removeAll()
            for bev in newcomers { _ = bufferevent_decref(bev) }
            newcomers.removeAll()
            boundSocket = nil
        }
        loop.unregister(self)
        reportIfDrained()
    }

    override func closeForShutdown() { close() }
}

/// The `Date` header for one loop's answers, formatted once a second. evhttp formats it
/// for every answer that lacks one (gmtime and a printf: 3,300 instructions per request in
/// callgrind, a tenth of evhttp's whole cost for `/hello`), as nginx does not. Loop thread.
final class HTTPDate {
    private var second = -1
    private var text = [CChar](repeating: 0, count: 40)

    fileprivate func add(to headers: UnsafeMutablePointer<evkeyvalq>?) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        if now.tv_sec != second {
            second = now.tv_sec
            var seconds = now.tv_sec
            var parts = tm()
            gmtime_r(&seconds, &parts)
            // strftime's names come from the C locale, which Chroma never changes.
            _ = strftime(&text, text.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        }
        _ = evhttp_add_header(headers, "Date", text)
    }
}

/// Loop servers by their evhttp's address.
final class HTTPServerRegistry: @unchecked Sendable {
    // Safe to share: `servers` is only touched with `lock` held.
    private let lock = EngineLock()
    private var servers: [UInt: HTTPLoopServer] = [:]

    fileprivate func insert(_ server: HTTPLoopServer, for http: OpaquePointer) {
        lock.withLock { servers[UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(http)))] = server }
    }

    fileprivate func remove(_ http: OpaquePointer) {
        lock.withLock { _ = servers.removeValue(forKey: UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(http)))) }
    }

    fileprivate func server(for http: OpaquePointer) -> HTTPLoopServer? {
        lock.withLock { servers[UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(http)))] }
    }
}

/// CLOCK_MONOTONIC_COARSE: a few milliseconds of resolution, plenty for request
/// deadlines, at a fraction of the precise clock's cost (it is read twice per request).
/// (Also the file cache's clock.)
func coarseMonotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

extension Duration {
    /// Whole nanoseconds; `UInt64.max` for a negative duration or one beyond it.
    var nanosecondsOrMax: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0, attoseconds >= 0 else { return .max }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let (total, overflow2) = whole.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return overflow || overflow2 ? .max : total
    }
}

// MARK: C entry points (loop thread)

private func httpRequestCallback(_ request: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPLoopServer>.fromOpaque(context!).takeUnretainedValue().handle(request!)
}

private func httpNewConnectionCallback(_ base: OpaquePointer?, _ context: UnsafeMutableRawPointer?) -> OpaquePointer? {
    Unmanaged<HTTPLoopServer>.fromOpaque(context!).takeUnretainedValue().newcomer(base: base!)
}

private func httpConnectionClosedCallback(_ evcon: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPLoopServer>.fromOpaque(context!).takeUnretainedValue().connectionClosed(evcon!)
}

private func httpRequestCompleteCallback(_ request: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPConnectionState>.fromOpaque(context!).takeUnretainedValue().answerWritten()
}

private func httpInputCallback(_ buffer: OpaquePointer?, _ info: UnsafePointer<evbuffer_cb_info>?, _ context: UnsafeMutableRawPointer?) {
    guard let info, info.pointee.n_added > 0 else { return }
    Unmanaged<HTTPConnectionState>.fromOpaque(context!).takeUnretainedValue().bytesArrived(buffer!, added: info.pointee.n_added)
}

private func httpReadAnchorCallback(_ fd: Int32, _ what: Int16, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPConnectionState>.fromOpaque(context!).takeUnretainedValue().anchorFired()
}

private func httpAcceptErrorCallback(_ listener: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    let error = errno
    guard let context else { return }
    HTTPLoopServer.registry.server(for: OpaquePointer(context))?.acceptFailed(error)
}

// MARK: Starting

extension Runtime {
    /// Starts an HTTP engine on `port` (0: any free port) at `host`: one evhttp per loop,
    /// each with its own SO_REUSEPORT socket. `handler` runs on the loop that accepted the
    /// connection, as the connection's color (a fresh color of that loop per connection).
    /// Throws `ChromaError` naming the failed call, or `.shutDown`/`.invalidState`.
    func startHTTPEngine(host: String, port: UInt16, backlog: Int32, limits: HTTPEngineLimits,
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
