@_spi(Engine) import Chroma
import CLibevent
import Glibc

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
    let raw: OpaquePointer
    /// The server outlives its connections (it frees them all before it goes), so the
    /// reference needs no count and no check: `unowned(unsafe)`, since a checked unowned
    /// reference costs a retain and a release at every use, several per request.
    unowned(unsafe) let server: HTTPLoopServer
    /// The current request's head, measured until its end is seen; one too large (over
    /// `maxHeaderBytes`) is answered 413.
    @exclusivity(unchecked) var head: HTTPHeadScanner
    @exclusivity(unchecked) var inputCallback: OpaquePointer?
    /// The bufferevent's input buffer, whose callback is on only until a request's head
    /// is complete (libevent calls it on every add and drain, and evhttp drains line by line).
    @exclusivity(unchecked) var input: OpaquePointer?
    /// A second persistent read event on the socket, which does nothing: while it is
    /// registered, evhttp's disabling and re-enabling of reading around each request never
    /// reaches epoll (libevent tells the backend only when the fd's read count goes to or
    /// from zero), saving an epoll_ctl per request. Taken off when it would spin: a second
    /// firing while a handler holds the request (so evhttp is not reading) means input is
    /// waiting unread; it comes back when the answer is written.
    var readAnchor: OpaquePointer?
    var anchorFires = 0
    var anchorParked = false
    /// Reading is off while a large answer is written (see `flush`).
    @exclusivity(unchecked) var readPausedForAnswer = false
    /// The request the handler holds, until it is answered or the connection goes.
    @exclusivity(unchecked) var request: OpaquePointer?
    /// Counts the connection's requests, so an exchange can tell `request` is its own.
    @exclusivity(unchecked) var serial: UInt64 = 0
    @exclusivity(unchecked) var phase = HTTPConnectionPhase.waiting
    /// Set when the first byte of a request arrives; the deadline counts from then.
    @exclusivity(unchecked) var requestStarted = false
    /// When the current phase began (or, once `requestStarted`, when the request did).
    @exclusivity(unchecked) var requestStartedAt: UInt64
    /// While `.writing`: the output length the sweep last saw, and when it last changed.
    @exclusivity(unchecked) var lastOutputLength = -1
    @exclusivity(unchecked) var lastProgressAt: UInt64 = 0
    /// With an access log: when the request's first byte came (a precise clock), and its
    /// line once answered, written out when the answer has left.
    @exclusivity(unchecked) var logStartedAt: UInt64 = 0
    var pendingLine: HTTPAccessLines.Entry?
    /// The streamed answer in progress (its request is `request` meanwhile).
    var stream: HTTPStreamState?

    init(color: Color, raw: OpaquePointer, server: HTTPLoopServer, now: UInt64) {
        self.color = color
        self.raw = raw
        self.server = server
        self.requestStartedAt = now
        head = HTTPHeadScanner(limit: server.limits.maxHeaderBytes)
    }

    func handOver(_ request: OpaquePointer) {
        self.request = request
        serial &+= 1
        phase = .handling
        anchorFires = 0
        // A pipelined request parsed from bytes already buffered never ran the input
        // callback, which would otherwise stay on through the handler.
        setInputCallback(enabled: false)
    }

    func answer(_ request: OpaquePointer, status: Int, bytes: Int) {
        prepareAnswer(request, status: status, bytes: bytes)
        self.request = nil
        evhttp_send_reply(request, Int32(status), nil, nil)
        server.counters.noteAnswer(status: status)
        server.flushLater(self)
    }

    /// What every answer does before evhttp sends its head: its log line, the writing
    /// phase, and `Connection: close` while draining.
    private func prepareAnswer(_ request: OpaquePointer, status: Int, bytes: Int) {
        if let lines = server.accessLines {
            if let earlier = pendingLine { lines.append(earlier) }
            pendingLine = HTTPAccessLines.entry(request, status: status, bytes: bytes, startedAt: logStartedAt)
        }
        phase = .writing
        lastOutputLength = -1
        if server.draining {
            // evhttp closes the connection once an answer with this header is written.
            let headers = evhttp_request_get_output_headers(request)
            if evhttp_find_header(headers, "Connection") == nil { _ = evhttp_add_header(headers, "Connection", "close") }
        }
    }

    /// A streamed answer starts: its head goes out now, its pieces as they are written.
    /// The request stays `request` (so a close frees it as any other) until `endStream`.
    func beginStream(_ stream: HTTPStreamState, _ request: OpaquePointer, status: Int) {
        prepareAnswer(request, status: status, bytes: 0)
        self.stream = stream
        evhttp_send_reply_start(request, Int32(status), nil)
        server.counters.noteAnswer(status: status)
    }

    /// The stream's end is queued: evhttp owns the request from here, as after an answer.
    func endStream() {
        stream = nil
        request = nil
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
    /// Under TLS the bytes go through the session (`writeThroughSession`), never to the
    /// socket as they are.
    func flush(serial: UInt64) {
        // Only the answer this flush was queued for, still unsent by the bufferevent.
        guard phase == .writing, serial == self.serial, let bev = evhttp_connection_get_bufferevent(raw) else { return }
        let output = bufferevent_get_output(bev)
        guard evbuffer_get_length(output) > 0 else { return }
        if server.isTLS {
            // An OpenSSL bufferevent leaves its output unfrozen (it drains it as it writes).
            writeThroughSession(bev, output)
        } else {
            evbuffer_unfreeze(output, 1)
            _ = evbuffer_write(output, bufferevent_getfd(bev))
            evbuffer_freeze(output, 1)
        }
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

    /// What the OpenSSL bufferevent's own write does, one poll earlier: one session write
    /// per piece of the output's first 16 KiB (its limit for one write), in at most 8
    /// pieces, stopping at the first the session does not take whole, then the output
    /// drained by what it took. A refused piece is the start of the output afterwards, and
    /// the bufferevent's next write offers it again, at least as long: what OpenSSL needs
    /// of a retry. Called only on an answer's first flush, before the bufferevent has
    /// written any of it, so no write of its own is pending.
    ///
    /// An answer's head and body are separate pieces, and each session write is its own
    /// TLS record and its own `write(2)`; so the first 16 KiB are joined into one piece
    /// first (a copy of at most 16 KiB, cheaper than a record and a system call), and a
    /// small answer leaves in one record, as nginx sends it.
    private func writeThroughSession(_ bev: OpaquePointer, _ output: OpaquePointer?) {
        let first = min(evbuffer_get_length(output), 16 * 1024)
        if evbuffer_peek(output, first, nil, nil, 0) > 1 { evbuffer_pullup(output, first) }
        withUnsafeTemporaryAllocation(of: iovec.self, capacity: 8) { pieces in
            let count = min(Int(evbuffer_peek(output, 16 * 1024, nil, pieces.baseAddress, 8)), 8)
            var taken = 0
            for index in 0..<count where pieces[index].iov_len > 0 {
                let piece = UnsafeRawBufferPointer(start: pieces[index].iov_base, count: pieces[index].iov_len)
                let n = HTTPSConfiguration.writeNow(bev, piece)
                taken += n
                if n < piece.count { break }
            }
            if taken > 0 { evbuffer_drain(output, taken) }
        }
    }

    /// An exchange died unanswered: answer 500 if the connection still waits for it.
    func answerUnanswered(serial: UInt64) {
        guard serial == self.serial, let request else { return }
        answer(request, status: 500, bytes: 0)
    }

    /// The connection is closing: forgets the request a handler holds. libevent frees it
    /// with the connection, except after a network failure (`evhttp_connection_fail_` on
    /// EOF or a timeout, which can strike while a handler holds the request only if the
    /// `100 Continue` evhttp queued before the body fails to write): it then detaches the
    /// request, leaving it for the reply that would free it, which can no longer come
    /// from here. Such a request is freed now.
    func dropRequest() {
        if let stream {
            self.stream = nil
            stream.gone()
        }
        if let request, evhttp_request_get_connection(request) == nil { evhttp_request_free(request) }
        request = nil
    }

    /// The input buffer's callback: `added` bytes just arrived (libevent parses them right
    /// after). Starts the request deadline, and measures the request's head: evhttp 2.1
    /// answers an oversized head with 400, so Chroma finds the head's end itself and
    /// answers 413 first (evhttp's own limit is set well above, as a backstop).
    func bytesArrived(_ input: OpaquePointer, added: Int) {
        guard phase == .waiting else { return }
        if !requestStarted {
            requestStarted = true
            requestStartedAt = coarseMonotonicNanoseconds()
            if server.accessLines != nil { logStartedAt = HTTPAccessLines.preciseNow() }
        }
        guard !head.isComplete && !head.isTooLarge else { return }
        scanHead(input, added: added)
        // Not from inside libevent's read: the job runs before the loop polls again.
        if head.isTooLarge && !head.isComplete { server.answerHeadTooLarge(self) }
        if head.isComplete || head.isTooLarge { setInputCallback(enabled: false) }
    }

    /// The input buffer's callback exists only from the end of an answer until the next
    /// head is complete: libevent runs a buffer's callback list on every add and drain (and
    /// evhttp drains line by line), so even a disabled entry costs; removing it (libevent
    /// allows that from inside the callback) leaves evhttp's parsing as cheap as in C.
    func setInputCallback(enabled: Bool) {
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

    /// Feeds the last `added` bytes of `input` to the head scanner, where libevent keeps
    /// them (no copy), until the head's end.
    private func scanHead(_ input: OpaquePointer, added: Int) {
        let length = evbuffer_get_length(input)
        var remaining = added
        var start = evbuffer_ptr()
        // One socket read fills at most four chains (libevent's NUM_READ_IOVEC), so eight
        // extents take it in one peek; bytes measured all at once (`answerWritten`) may need more.
        withUnsafeTemporaryAllocation(of: iovec.self, capacity: 8) { vectors in
            while remaining > 0 && !head.isComplete {
                guard evbuffer_ptr_set(input, &start, length - remaining, EVBUFFER_PTR_SET) == 0 else { return }
                let count = min(Int(evbuffer_peek(input, remaining, &start, vectors.baseAddress, Int32(vectors.count))), vectors.count)
                guard count > 0 else { return }
                for index in 0..<count where !head.isComplete {
                    let extent = UnsafeRawBufferPointer(start: vectors[index].iov_base, count: min(vectors[index].iov_len, remaining))
                    head.scan(extent)
                    remaining -= extent.count
                }
            }
        }
    }

    func answerWritten() {
        logPendingLine()
        phase = .waiting
        readPausedForAnswer = false
        requestStarted = false
        requestStartedAt = coarseMonotonicNanoseconds()
        head.startRequest()
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
    var isIdle: Bool {
        guard phase == .waiting, !requestStarted, let input, evbuffer_get_length(input) == 0 else { return false }
        guard let bev = evhttp_connection_get_bufferevent(raw) else { return true }
        var byte: UInt8 = 0
        return recv(bufferevent_getfd(bev), &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) <= 0
    }

    func anchorFired() {
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

    /// Writes the line of the answer just sent (or cut short by a close).
    func logPendingLine() {
        guard let entry = pendingLine else { return }
        pendingLine = nil
        server.accessLines?.append(entry)
    }

    func freeAnchor() {
        if let readAnchor { event_free(readAnchor) }
        readAnchor = nil
    }
}
