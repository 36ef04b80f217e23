@_spi(Engine) import Chroma
import CChroma
import CLibevent
import Glibc

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
    let server: HTTPLoopServer
    let connection: HTTPConnectionState
    /// Which of the connection's requests this is: the connection's `request` is this
    /// exchange's only while the serials match.
    private let serial: UInt64
    @exclusivity(unchecked) private var answered = false
    /// The connection's color: handlers run on it, answers are sent from it.
    let color: Color

    init(server: HTTPLoopServer, connection: HTTPConnectionState) {
        self.server = server
        self.connection = connection
        self.serial = connection.serial
        self.color = connection.color
    }

    /// The evhttp request while this exchange may still answer it: not yet answered, not
    /// streaming, its connection open.
    func request() -> OpaquePointer? {
        server.loop.preconditionOnLoop("an HTTP request is read on its connection's loop")
        return connection.serial == serial && connection.stream == nil ? connection.request : nil
    }

    /// The connection's current request is still this exchange's (answered or not).
    var isCurrent: Bool { connection.serial == serial }

    /// A streamed answer has begun: no 500 when the exchange goes.
    func markAnswered() { answered = true }

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

    /// Which of the headers file answers look at the request carries: the
    /// `CHROMA_HTTP_HAS_IF` bit for any `If-…` header, `CHROMA_HTTP_HAS_RANGE` for `Range`
    /// (0 once it cannot be answered). One pass, no strings made: most requests have none.
    var conditions: Int32 {
        guard let raw = request() else { return 0 }
        return chroma_http_request_conditions(UnsafeRawPointer(raw))
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
        return ByteArray.make(count: length, BodyBytes(input: input))
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
    /// from elsewhere, true means queued). `conditional`: a 200 carrying `ETag` or
    /// `Last-Modified` is first checked against the request's conditional headers, and
    /// becomes a 304 or 412 when they say so.
    @discardableResult
    func respond(status: Int, headers: [(name: String, value: String)], body: [UInt8], conditional: Bool = false) -> Bool {
        if server.loop.isCurrent {
            return answer(status: status, headers: headers, body: body, conditional: conditional)
        }
        do {
            try server.runtime.execute(on: color) { [self] in
                _ = answer(status: status, headers: headers, body: body, conditional: conditional)
            }
            return true
        } catch {
            return false
        }
    }

    private func answer(status: Int, headers: [(name: String, value: String)], body: [UInt8], conditional: Bool) -> Bool {
        if conditional, status == 200, request() != nil, let answer = conditionalAnswer(headers: headers) {
            let text: [UInt8] = answer.status == 412 ? Array("Precondition Failed\n".utf8) : []
            return text.withUnsafeBytes { send(status: answer.status, headers: answer.headers, body: $0) }
        }
        return body.withUnsafeBytes { send(status: status, headers: headers, body: $0) }
    }

    /// Answers with `parts` of open file `fd` (`fileSize` bytes long), in order: slices of the file, sent with
    /// sendfile where libevent can (a file segment), and bytes between them (a multipart
    /// answer's part heads). Takes `fd` over: it is closed once sent, or at once when the
    /// exchange can no longer be answered. Loop thread only.
    @discardableResult
    func respondFile(status: Int, headers: [(name: String, value: String)], fd: Int32, fileSize: Int, parts: [HTTPFilePart]) -> Bool {
        guard let raw = request() else {
            Glibc.close(fd)
            return false
        }
        addHeaders(raw, headers)
        let output = evhttp_request_get_output_buffer(raw)
        let fileBytes = parts.reduce(0) { if case .file(_, let length) = $1 { $0 + length } else { $0 } }
        if isHead(raw) {
            Glibc.close(fd)
            addHeadLength(raw, parts.reduce(0) { $0 + $1.count })
            return finish(raw, status: status, bytes: 0)
        }
        if fileBytes == 0 {
            Glibc.close(fd)
        } else {
            // evbuffer_add_file's two steps, so the descriptor's owner is known on failure:
            // a segment that was never made leaves it to us; one that was made owns it. One
            // segment for the whole file; each part adds its slice of it.
            guard let segment = evbuffer_file_segment_new(fd, 0, Int64(fileSize), UInt32(EVBUF_FS_CLOSE_ON_FREE)) else {
                Glibc.close(fd)
                return finish(raw, status: 500, bytes: 0)
            }
            defer { evbuffer_file_segment_free(segment) }  // the buffer holds its own references
            // Marked as draining to a descriptor, the request's output takes the segment as a
            // sendfile chain (which moves into the socket's buffer as is); unmarked, libevent
            // mmaps the whole file, or reads it on the loop when mmap fails. Under TLS it
            // must stay unmarked: OpenSSL encrypts bytes in memory, and a sendfile chain has none.
            if !server.isTLS { _ = evbuffer_set_flags(output, UInt64(EVBUFFER_FLAG_DRAINS_TO_FD)) }
            for part in parts {
                switch part {
                case .bytes(let bytes):
                    evbuffer_add(output, bytes, bytes.count)
                case .file(let offset, let length):
                    guard evbuffer_add_file_segment(output, segment, Int64(offset), Int64(length)) == 0 else {
                        evbuffer_drain(output, evbuffer_get_length(output))
                        return finish(raw, status: 500, bytes: 0)
                    }
                }
            }
            return finish(raw, status: status, bytes: parts.reduce(0) { $0 + $1.count })
        }
        for case .bytes(let bytes) in parts { evbuffer_add(output, bytes, bytes.count) }
        return finish(raw, status: status, bytes: parts.reduce(0) { $0 + $1.count })
    }

    private func send(status: Int, headers: [(name: String, value: String)], body: UnsafeRawBufferPointer) -> Bool {
        guard let raw = request() else { return false }
        addHeaders(raw, headers)
        if isHead(raw) {
            addHeadLength(raw, body.count)
            return finish(raw, status: status, bytes: 0)
        }
        if body.count > 0 {
            evbuffer_add(evhttp_request_get_output_buffer(raw), body.baseAddress, body.count)
        }
        return finish(raw, status: status, bytes: body.count)
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

    func addHeaders(_ raw: OpaquePointer, _ headers: [(name: String, value: String)]) {
        guard !headers.isEmpty else { return }
        let output = evhttp_request_get_output_headers(raw)
        for header in headers {
            // evhttp refuses names and values with CR or LF (header injection): the answer
            // goes out without that header. (Explicit withCString: the implicit conversion
            // copies a small string, "Content-Type" say, to the heap.)
            _ = header.name.withCString { name in header.value.withCString { value in evhttp_add_header(output, name, value) } }
        }
    }

    /// `bytes`: of the body, for the access log.
    private func finish(_ raw: OpaquePointer, status: Int, bytes: Int) -> Bool {
        answered = true
        server.date.add(to: evhttp_request_get_output_headers(raw))
        connection.answer(raw, status: status, bytes: bytes)
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

/// A piece of a file answer's body (`HTTPExchange.respondFile`).
enum HTTPFilePart {
    /// Bytes of their own (a multipart answer's part head, its closing boundary).
    case bytes([UInt8])
    /// `length` bytes of the file from `offset`.
    case file(offset: Int, length: Int)

    var count: Int {
        switch self {
        case .bytes(let bytes): bytes.count
        case .file(_, let length): length
        }
    }
}

/// A copy of a request's buffered body, into a new array.
private struct BodyBytes: ByteArraySource {
    let input: OpaquePointer?

    func write(into start: UnsafeMutableRawPointer, count: Int) -> Int {
        max(0, Int(evbuffer_copyout(input, start, count)))
    }
}
