@_spi(Engine) import Chroma

/// An answer whose body is written in pieces as it is made (chunked in HTTP/1.1), started
/// with `HTTPRequest.startStream`. Memory stays bounded however slowly the client reads:
/// `isWritable` turns false once `highWatermark` bytes wait in the connection's output;
/// `send` then waits, and `whenWritable` calls back, once they have drained.
///
/// Colors: every member is used on the request's connection color (`request.color`, where
/// its handlers run by default); anywhere else is a programming error (trap). The last
/// reference dropped without `end()` ends the stream, so a forgotten `end` never leaves a
/// client waiting; a handler that fails midway should call `abort()` instead, so the client
/// can tell the body is cut short.
public final class HTTPResponseStream: @unchecked Sendable {
    // Safe to send: `state` is used only on its connection's loop (every member checks);
    // the rest is immutable.
    private let state: HTTPStreamState
    private let runtime: Runtime
    /// The connection's color, where the stream is used.
    public let color: Color

    init(state: HTTPStreamState, runtime: Runtime, color: Color) {
        self.state = state
        self.runtime = runtime
        self.color = color
    }

    private func checked() -> HTTPStreamState {
        state.connection.server.loop.preconditionOnLoop("an HTTP stream is used on its request's color")
        return state
    }

    /// False once ended, aborted, or the client has gone.
    public var isOpen: Bool { checked().isOpen }

    /// Open, with less than `highWatermark` bytes waiting to be sent.
    public var isWritable: Bool { checked().isWritable }

    /// Bytes of output the stream may leave waiting before `isWritable` turns false.
    public var highWatermark: Int { state.highWatermark }

    /// Most bytes seen waiting in the connection's output after a write.
    public var peakBufferedBytes: Int { checked().peakBuffered }

    /// Body bytes written so far.
    public var bytesWritten: Int { checked().bytesWritten }

    /// Queues `bytes` as the next piece, however full the output (check `isWritable`, or
    /// use `send`). Returns false once the stream is not open.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        let state = checked()
        return bytes.withUnsafeBytes { state.write($0) }
    }

    /// `write` for text, as UTF-8.
    @discardableResult
    public func write(_ text: String) -> Bool {
        var text = text
        let state = checked()
        return text.withUTF8 { state.write(UnsafeRawBufferPointer($0)) }
    }

    /// Writes `bytes`, then waits while the output is at the high watermark. Throws
    /// `ChromaError.invalidState` when the stream is not open (the client went away).
    /// From a task on the stream's color.
    public func send(_ bytes: [UInt8]) async throws(ChromaError) {
        guard write(bytes) else { throw closedError }
        guard !state.isWritable else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            state.whenWritable { continuation.resume() }
        }
        guard state.isOpen else { throw closedError }
    }

    private var closedError: ChromaError {
        .invalidState(operation: "HTTPResponseStream.send", reason: "the stream is ended or its connection closed")
    }

    /// `body` runs on the stream's color once the output has drained below the high
    /// watermark (right away when it is), or once the client has gone (`isOpen` false).
    public func whenWritable(_ body: @escaping @Sendable () -> Void) {
        checked().whenWritable(body)
    }

    /// Ends the body; the connection goes on to its next request. Idempotent.
    public func end() {
        checked().end()
    }

    /// Cuts the answer short: closes the connection without ending the body, so the
    /// client sees it incomplete. Idempotent.
    public func abort() {
        checked().abort()
    }

    deinit {
        // Queued rather than at once, even on the color: a handler that throws drops its
        // stream before the router sees the failure, which must cut the stream, not end it.
        let state = self.state
        do {
            try runtime.execute(on: color) { state.end() }
        } catch {
            if state.connection.server.loop.isCurrent { state.end() }
        }
    }
}

/// Server-sent events (the `text/event-stream` format browsers' `EventSource` reads) on a
/// streamed answer, started with `HTTPRequest.startEventStream`. The same color rules as
/// `HTTPResponseStream`, which `stream` is.
public struct HTTPEventStream: Sendable {
    /// The answer the events are written to.
    public let stream: HTTPResponseStream

    /// One event: `data` (split into `data:` lines at its newlines), with an optional
    /// `event` type and `id`. Returns false once the stream is not open.
    @discardableResult
    public func send(data: String, event: String? = nil, id: String? = nil) -> Bool {
        stream.write(HTTPEventStream.format(data: data, event: event, id: id))
    }

    /// A comment line, which clients ignore: keeps idle proxies from closing the stream.
    @discardableResult
    public func comment(_ text: String = "") -> Bool {
        stream.write(": " + HTTPEventStream.singleLine(text) + "\n\n")
    }

    static func format(data: String, event: String?, id: String?) -> String {
        var text = ""
        if let event { text += "event: " + singleLine(event) + "\n" }
        if let id { text += "id: " + singleLine(id) + "\n" }
        // The format's line breaks are CR, LF and CRLF alike: each starts a `data:` line.
        var line = String.UnicodeScalarView()
        var afterCR = false
        for scalar in data.unicodeScalars {
            defer { afterCR = scalar == "\r" }
            if scalar == "\n" && afterCR { continue }
            if scalar == "\n" || scalar == "\r" {
                text += "data: " + String(line) + "\n"
                line.removeAll()
            } else {
                line.append(scalar)
            }
        }
        return text + "data: " + String(line) + "\n\n"
    }

    /// A field that must stay on its line: each line break (CR, LF, CRLF) becomes a space.
    private static func singleLine(_ text: String) -> String {
        String(text.map { $0 == "\n" || $0 == "\r" || $0 == "\r\n" ? " " : $0 })
    }
}

extension HTTPRequest {
    /// Starts a streamed answer with `status` and `headers` (no `Content-Length`: the body
    /// is chunked in HTTP/1.1); write the body with the returned stream, then `end()` it.
    /// Nil when the request was already answered or its connection is gone. On the
    /// connection's color only (trap elsewhere): a route on another color answers with
    /// `respond`, or hops back to `color` first.
    public func startStream(_ status: HTTPStatus = .ok, headers: [(name: String, value: String)] = [],
                            highWatermark: Int = 256 * 1024) -> HTTPResponseStream? {
        precondition(highWatermark > 0, "a stream's high watermark is positive")
        guard let state = exchange.startStream(status: status.code, headers: headers, highWatermark: highWatermark) else { return nil }
        return HTTPResponseStream(state: state, runtime: exchange.server.runtime, color: exchange.color)
    }

    /// Starts a server-sent event stream: 200, `text/event-stream`, no caching. Nil as for
    /// `startStream`; the same color rule.
    public func startEventStream() -> HTTPEventStream? {
        startStream(headers: [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]).map(HTTPEventStream.init)
    }
}
