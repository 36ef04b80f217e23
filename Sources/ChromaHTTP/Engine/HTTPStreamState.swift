@_spi(Engine) import Chroma
import CLibevent
import CChroma

/// A streamed answer on its connection (`HTTPResponseStream`): its evhttp request, from
/// `evhttp_send_reply_start` to `evhttp_send_reply_end`. Loop thread only.
final class HTTPStreamState: @unchecked Sendable {
    // Safe to send: the public stream carries it to its connection's color, whose loop is
    // the one thread that touches it (every entry point checks).
    let connection: HTTPConnectionState
    private var request: OpaquePointer?
    /// Reused for each piece: `evhttp_send_reply_chunk` moves its contents out.
    private var scratch: OpaquePointer?
    let highWatermark: Int
    private(set) var bytesWritten = 0
    private(set) var peakBuffered = 0
    private(set) var ended = false
    /// Run once the output has drained, or the connection has gone.
    private var waiters: [() -> Void] = []

    init(connection: HTTPConnectionState, request: OpaquePointer, highWatermark: Int) {
        self.connection = connection
        self.request = request
        self.highWatermark = highWatermark
        scratch = evbuffer_new()
    }

    var isOpen: Bool { request != nil }

    private var buffered: Int {
        guard let bev = evhttp_connection_get_bufferevent(connection.raw) else { return 0 }
        return evbuffer_get_length(bufferevent_get_output(bev))
    }

    var isWritable: Bool { isOpen && buffered < highWatermark }

    /// Queues `bytes` as the next piece (a chunk in HTTP/1.1); false once ended or gone.
    /// HEAD answers take no body: the bytes are counted and dropped (evhttp sends none).
    func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let request, let scratch else { return false }
        guard bytes.count > 0 else { return true }
        evbuffer_add(scratch, bytes.baseAddress, bytes.count)
        evhttp_send_reply_chunk_with_cb(request, scratch, httpStreamDrainedCallback, Unmanaged.passUnretained(connection).toOpaque())
        evbuffer_drain(scratch, evbuffer_get_length(scratch))
        bytesWritten += bytes.count
        connection.pendingLine?.bytes = bytesWritten
        peakBuffered = max(peakBuffered, buffered)
        return true
    }

    /// `body` runs when the output has drained (at once, queued, when it already has), or
    /// when the connection has gone.
    func whenWritable(_ body: @escaping () -> Void) {
        if !isOpen || buffered < highWatermark {
            body()
        } else {
            waiters.append(body)
        }
    }

    /// The output is empty (evhttp's write callback).
    func drained() {
        let ready = waiters
        waiters.removeAll()
        for waiter in ready { waiter() }
    }

    /// Ends the answer (the last, empty chunk); evhttp then completes the request.
    func end() {
        guard let request else { return }
        ended = true
        self.request = nil
        free()
        connection.endStream()
        evhttp_send_reply_end(request)
    }

    /// Cuts the answer short: what is already queued is written if the socket takes it
    /// now, then the connection closes without the last chunk, so the client sees the body
    /// incomplete rather than an empty reply. Under TLS the queued bytes are dropped: only
    /// the OpenSSL bufferevent may write its socket, and it writes at the next poll.
    func abort() {
        guard request != nil else { return }
        if !connection.server.isTLS, let bev = evhttp_connection_get_bufferevent(connection.raw) {
            let output = bufferevent_get_output(bev)
            evbuffer_unfreeze(output, 1)
            _ = evbuffer_write(output, bufferevent_getfd(bev))
            evbuffer_freeze(output, 1)
        }
        connection.server.closeConnection(connection)
    }

    /// The connection is closing: the request is evhttp's (or `dropRequest`'s) to free.
    func gone() {
        request = nil
        free()
        drained()
    }

    private func free() {
        if let scratch { evbuffer_free(scratch) }
        scratch = nil
    }
}

func httpStreamDrainedCallback(_ evcon: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPConnectionState>.fromOpaque(context!).takeUnretainedValue().stream?.drained()
}

extension HTTPExchange {
    /// Starts a streamed answer: status and headers go out now (chunked in HTTP/1.1; an
    /// HTTP/1.0 answer ends with the connection). Nil when already answered or gone. Loop
    /// thread.
    func startStream(status: Int, headers: [(name: String, value: String)], highWatermark: Int) -> HTTPStreamState? {
        guard let raw = request() else { return nil }
        addHeaders(raw, headers)
        if chroma_http_request_version(UnsafeRawPointer(raw)) < 11 {
            // No chunks before HTTP/1.1: the body ends with the connection, which must
            // then not be kept alive.
            _ = evhttp_add_header(evhttp_request_get_output_headers(raw), "Connection", "close")
        }
        let stream = HTTPStreamState(connection: connection, request: raw, highWatermark: highWatermark)
        markAnswered()
        server.date.add(to: evhttp_request_get_output_headers(raw))
        connection.beginStream(stream, raw, status: status)
        return stream
    }
}

extension HTTPExchange {
    /// A handler that answers itself failed: 500 if it had not answered yet; a stream it
    /// started is cut short (the connection closes, so the client sees the body
    /// incomplete). Any thread.
    func fail() {
        guard server.loop.isCurrent else {
            try? server.runtime.execute(on: color) { [self] in fail() }
            return
        }
        if request() != nil {
            let text = Array("Internal Server Error\n".utf8)
            _ = respond(status: 500, headers: [("Content-Type", "text/plain; charset=utf-8")], body: text)
        } else if isCurrent, let stream = connection.stream {
            stream.abort()
        }
    }
}
