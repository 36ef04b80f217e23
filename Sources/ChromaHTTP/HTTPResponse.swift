/// An HTTP status code.
public struct HTTPStatus: Sendable, Hashable, ExpressibleByIntegerLiteral, CustomStringConvertible {
    /// The three-digit code; evhttp supplies the reason phrase.
    public let code: Int

    /// A status from its code. A code outside 100...999 is a programming error (trap).
    public init(_ code: Int) {
        precondition((100...999).contains(code), "an HTTP status has three digits, got \(code)")
        self.code = code
    }

    /// `let status: HTTPStatus = 418`.
    public init(integerLiteral code: Int) { self.init(code) }

    /// The code, as digits.
    public var description: String { String(code) }

    // The common codes, by their RFC 9110 names.
    /// 200 OK.
    public static let ok: HTTPStatus = 200
    /// 201 Created.
    public static let created: HTTPStatus = 201
    /// 204 No Content (sent without a body).
    public static let noContent: HTTPStatus = 204
    /// 206 Partial Content.
    public static let partialContent: HTTPStatus = 206
    /// 304 Not Modified (sent without a body).
    public static let notModified: HTTPStatus = 304
    /// 400 Bad Request.
    public static let badRequest: HTTPStatus = 400
    /// 403 Forbidden.
    public static let forbidden: HTTPStatus = 403
    /// 404 Not Found.
    public static let notFound: HTTPStatus = 404
    /// 405 Method Not Allowed.
    public static let methodNotAllowed: HTTPStatus = 405
    /// 408 Request Timeout.
    public static let requestTimeout: HTTPStatus = 408
    /// 412 Precondition Failed.
    public static let preconditionFailed: HTTPStatus = 412
    /// 413 Content Too Large.
    public static let payloadTooLarge: HTTPStatus = 413
    /// 416 Range Not Satisfiable.
    public static let rangeNotSatisfiable: HTTPStatus = 416
    /// 500 Internal Server Error.
    public static let internalServerError: HTTPStatus = 500
    /// 503 Service Unavailable.
    public static let serviceUnavailable: HTTPStatus = 503
}

/// An answer to a request: status, headers and body. A plain value: build one once and
/// send it many times (`respond` copies the body into the socket's buffer, so a shared
/// response costs no allocation per request).
///
/// `Content-Length` and `Date` are added by the server; don't set them.
public struct HTTPResponse: Sendable {
    /// The status line's code.
    public var status: HTTPStatus
    /// Header lines in order. A name or value with CR or LF is dropped (header injection).
    public var headers: [(name: String, value: String)]
    /// The body; for HEAD requests only its length is sent.
    public var body: [UInt8]

    /// A response from its parts.
    public init(status: HTTPStatus = .ok, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A text response (`text/plain; charset=utf-8` unless `contentType` says otherwise).
    public init(status: HTTPStatus = .ok, text: String, contentType: String = "text/plain; charset=utf-8") {
        self.init(status: status, headers: [("Content-Type", contentType)], body: Array(text.utf8))
    }
}
