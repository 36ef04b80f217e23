import Chroma

/// One HTTP request, handed to a route's handler, which answers it exactly once with
/// `respond`, now or later, from any thread.
///
/// Reading: `method`, `path` and `color` anywhere. The rest (`query`, `headers`, `body`,
/// `peer`) is read from libevent's buffers in place on the connection's color (the
/// default for handlers, and where async handlers run); for a route given another color
/// the server copies them before the hop. Either way they are readable until the request
/// is answered.
///
/// A request dropped without an answer is answered 500, so a forgotten `respond` never
/// leaves a client waiting. Answering twice does nothing the second time (`respond`
/// returns false where it can tell).
public struct HTTPRequest: Sendable {
    let exchange: HTTPExchange
    /// "GET", "POST", …
    public let method: String
    /// The target's path, still percent-encoded ("/a%20b").
    public let path: String
    private let copy: Copy?

    /// What a handler on another color reads instead of libevent's buffers.
    final class Copy: Sendable {
        let query: String?
        let headers: [(name: String, value: String)]
        let body: [UInt8]
        let peer: String

        init(_ exchange: HTTPExchange) {
            query = exchange.query
            headers = exchange.headers
            body = exchange.body
            peer = exchange.peer
        }
    }

    init(exchange: HTTPExchange, method: String, path: String, copied: Bool) {
        self.exchange = exchange
        self.method = method
        self.path = path
        self.copy = copied ? Copy(exchange) : nil
    }

    /// The connection's color: the default color of handlers, and where answers are sent from.
    public var color: Color { exchange.color }

    /// The target's query, percent-encoded ("a=1&b=2"), or nil.
    public var query: String? { copy.map(\.query) ?? exchange.query }

    /// Every header, in order, as sent.
    public var headers: [(name: String, value: String)] { copy?.headers ?? exchange.headers }

    /// The first value of header `name` (any case), or nil.
    public func header(_ name: String) -> String? {
        guard let copy else { return exchange.header(name) }
        return copy.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// The body, read whole before the handler ran (within `HTTPLimits.maxBodyBytes`).
    public var body: [UInt8] { copy?.body ?? exchange.body }

    /// "host:port" of the client.
    public var peer: String { copy?.peer ?? exchange.peer }

    /// Answers the request. Any thread: off the connection's color the answer is queued to
    /// it. Returns false when the request was already answered or its connection is gone
    /// (known at once only on the connection's color; elsewhere true means queued).
    ///
    /// A 200 to a GET or HEAD that carries `ETag` or `Last-Modified` is checked against the
    /// request's conditional headers first (RFC 9110 §13): it goes out as 304 Not Modified
    /// (no body) when the client's copy is current, as 412 when `If-Match` or
    /// `If-Unmodified-Since` fails. Other methods check with `preconditions(_:)` before they
    /// change anything.
    @discardableResult
    public func respond(_ response: HTTPResponse) -> Bool {
        exchange.respond(status: response.status.code, headers: response.headers, body: response.body, conditional: true)
    }

    /// Answers with `text` (`text/plain; charset=utf-8`).
    @discardableResult
    public func respond(_ status: HTTPStatus, text: String) -> Bool {
        respond(HTTPResponse(status: status, text: text))
    }
}
