import CChroma
/// The validators of one version of a resource (RFC 9110 §8.8): what conditional requests
/// are checked against.
public struct HTTPValidators: Sendable, Equatable {
    /// The entity tag as sent in `ETag`, quotes included: `"v2"`, or weak, `W/"v2"`.
    public var etag: String?
    /// When the resource last changed, in whole seconds since 1970 UTC (`Last-Modified`).
    public var lastModified: Int?

    /// Validators from their parts; either may be absent.
    public init(etag: String? = nil, lastModified: Int? = nil) {
        self.etag = etag
        self.lastModified = lastModified
    }

    /// `etag` and `lastModified` as the headers that announce them.
    public var headers: [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        if let etag { headers.append(("ETag", etag)) }
        if let lastModified { headers.append(("Last-Modified", HTTPDateText.format(lastModified))) }
        return headers
    }
}

/// What a request's conditional headers say, given the resource's validators (RFC 9110
/// §13.2.2, in its order: `If-Match`, else `If-Unmodified-Since`; then `If-None-Match`, else
/// `If-Modified-Since` for GET and HEAD).
public enum HTTPPrecondition: Sendable, Equatable {
    /// No condition stops the request: answer it (or make the change) as usual.
    case proceed
    /// The client's copy is current: answer 304 Not Modified (GET and HEAD only).
    case notModified
    /// A condition is false: answer 412 Precondition Failed (and make no change).
    case failed

    /// Evaluates the conditional headers `header` returns (by name, any case) for a
    /// `method` request of a resource with `validators`. A date that does not parse is
    /// ignored, as the RFC asks; a malformed tag list never matches.
    static func evaluate(method: String, validators: HTTPValidators, header: (String) -> String?) -> HTTPPrecondition {
        // Parsed only for a tag comparison: most requests carry no conditional header.
        var current: EntityTag? { validators.etag.flatMap { EntityTag(Substring($0)) } }
        if let value = header("If-Match") {
            let holds: Bool
            switch EntityTag.list(value) {
            case .any: holds = true  // the resource exists: it is being answered
            case .tags(let tags): holds = current.map { tag in tags.contains { $0.strongMatch(tag) } } ?? false
            case nil: holds = false
            }
            if !holds { return .failed }
        } else if let value = header("If-Unmodified-Since"), let date = HTTPDateText.parse(value),
                  let modified = validators.lastModified, modified > date {
            return .failed
        }
        let safe = method == "GET" || method == "HEAD"
        if let value = header("If-None-Match") {
            let matches: Bool
            switch EntityTag.list(value) {
            case .any: matches = true
            case .tags(let tags): matches = current.map { tag in tags.contains { $0.weakMatch(tag) } } ?? false
            case nil: matches = false
            }
            if matches { return safe ? .notModified : .failed }
        } else if safe, let value = header("If-Modified-Since"), let date = HTTPDateText.parse(value),
                  let modified = validators.lastModified, modified <= date {
            return .notModified
        }
        return .proceed
    }

    /// Whether `If-Range` lets a `Range` header apply (RFC 9110 §13.1.5): true without one;
    /// with one, true only if it names the current version, by a strong entity tag or by
    /// exactly the `Last-Modified` date. False sends the whole resource.
    static func rangeApplies(ifRange: String?, validators: HTTPValidators) -> Bool {
        guard let ifRange else { return true }
        if let tag = EntityTag(Substring(ifRange)) {
            guard let current = validators.etag.flatMap({ EntityTag(Substring($0)) }) else { return false }
            return tag.strongMatch(current)
        }
        guard let date = HTTPDateText.parse(ifRange), let modified = validators.lastModified else { return false }
        return date == modified
    }
}

extension HTTPRequest {
    /// Evaluates this request's conditional headers against `validators`: call it before
    /// changing a resource (PUT, DELETE, …) and answer 412 on `.failed`. (GET and HEAD
    /// answers need no call: a 200 that carries `ETag` or `Last-Modified` is turned into
    /// 304 or 412 by `respond` itself.) On the connection's color, or anywhere for a route
    /// on another color (like `header`).
    public func preconditions(_ validators: HTTPValidators) -> HTTPPrecondition {
        HTTPPrecondition.evaluate(method: method, validators: validators, header: header)
    }
}

extension HTTPExchange {
    /// The answer a 200 to a GET or HEAD with validators in `headers` becomes under the request's
    /// conditional headers: nil to send it as it is, else the status (304 or 412) and the
    /// headers to send without a body. Loop thread.
    func conditionalAnswer(headers: [(name: String, value: String)]) -> (status: Int, headers: [(name: String, value: String)])? {
        var validators = HTTPValidators()
        var found = false
        for header in headers {
            // A first-byte test before the comparison: most answers carry neither header.
            guard let first = header.name.utf8.first, first | 0x20 == UInt8(ascii: "e") || first | 0x20 == UInt8(ascii: "l") else { continue }
            if header.name.lowercased() == "etag" {
                validators.etag = header.value
                found = true
            } else if header.name.lowercased() == "last-modified" {
                validators.lastModified = HTTPDateText.parse(header.value)
                found = true
            }
        }
        guard found else { return nil }
        let method = self.method
        // Only safe methods: another method's handler has made its change already.
        guard method == "GET" || method == "HEAD" else { return nil }
        return conditionalAnswer(validators: validators, headers: headers)
    }

    /// The 304 or 412 for a resource with `validators` whose 200 would carry `headers`, or
    /// nil to send the 200. Loop thread.
    func conditionalAnswer(validators: HTTPValidators, headers: [(name: String, value: String)])
        -> (status: Int, headers: [(name: String, value: String)])? {
        guard conditions & CHROMA_HTTP_HAS_IF != 0 else { return nil }
        switch HTTPPrecondition.evaluate(method: method, validators: validators, header: header) {
        case .proceed:
            return nil
        case .notModified:
            // What a 304 must repeat of the 200 (RFC 9110 §15.4.5), and nothing about a body.
            return (304, headers.filter { HTTPExchange.keptIn304($0.name) })
        case .failed:
            return (412, [("Content-Type", "text/plain; charset=utf-8")])
        }
    }
}

extension HTTPExchange {
    /// What a 304 must repeat of the 200 (RFC 9110 §15.4.5), lowercase.
    private static let keptIn304Names = ["etag", "last-modified", "cache-control", "expires", "vary", "content-location"]

    /// Whether header `name` (any case) is one a 304 repeats; compared byte-wise, with no
    /// lowercased copy made.
    static func keptIn304(_ name: String) -> Bool {
        keptIn304Names.contains { kept in
            kept.utf8.count == name.utf8.count && zip(kept.utf8, name.utf8).allSatisfy { $0 == $1 | 0x20 }
        }
    }
}
