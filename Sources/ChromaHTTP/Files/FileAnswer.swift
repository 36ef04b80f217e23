import CChroma
import Glibc

/// How a file route answers a request for one version of a file: the conditional headers
/// first (304, 412), then `Range` (206, 416), else the whole file (200). Loop thread.
enum FileAnswer {
    /// Where the file's bytes are.
    enum Body {
        /// In memory (a cached file).
        case memory([UInt8])
        /// An open descriptor, taken over (closed once sent, or at once when not needed).
        case descriptor(Int32)
    }

    /// The headers every answer with this version carries.
    static func headers(contentType: String, validators: HTTPValidators) -> [(name: String, value: String)] {
        [("Content-Type", contentType)] + validators.headers + [("Accept-Ranges", "bytes")]
    }

    private static let preconditionFailed = Array("Precondition Failed\n".utf8)
    private static let notSatisfiable = Array("Range Not Satisfiable\n".utf8)

    /// Answers `exchange` with the file of `size` bytes whose 200 would carry `headers`.
    static func send(_ exchange: HTTPExchange, validators: HTTPValidators, headers: [(name: String, value: String)],
                     size: Int, body: Body) {
        if let conditional = exchange.conditionalAnswer(validators: validators, headers: headers) {
            release(body)
            exchange.respond(status: conditional.status, headers: conditional.headers,
                             body: conditional.status == 412 ? preconditionFailed : [])
            return
        }
        var ranges = ByteRanges.whole
        if exchange.conditions & CHROMA_HTTP_HAS_RANGE != 0, let range = exchange.header("Range"), exchange.method == "GET",
           HTTPPrecondition.rangeApplies(ifRange: exchange.header("If-Range"), validators: validators) {
            ranges = ByteRanges.parse(range, size: size)
        }
        switch ranges {
        case .whole:
            switch body {
            case .memory(let bytes): exchange.respond(status: 200, headers: headers, body: bytes)
            case .descriptor(let fd): exchange.respondFile(status: 200, headers: headers, fd: fd, fileSize: size, parts: [.file(offset: 0, length: size)])
            }
        case .unsatisfiable:
            release(body)
            exchange.respond(status: 416, headers: [("Content-Range", "bytes */\(size)"), ("Content-Type", "text/plain; charset=utf-8")],
                             body: notSatisfiable)
        case .ranges(let spans) where spans.count == 1:
            let span = spans[0]
            let partial = headers + [("Content-Range", "bytes \(span.offset)-\(span.last)/\(size)")]
            switch body {
            case .memory(let bytes): exchange.respond(status: 206, headers: partial, body: Array(bytes[span.offset..<span.offset + span.length]))
            case .descriptor(let fd): exchange.respondFile(status: 206, headers: partial, fd: fd, fileSize: size, parts: [.file(offset: span.offset, length: span.length)])
            }
        case .ranges(let spans):
            let (multipartHeaders, parts) = multipart(spans, headers: headers, size: size)
            switch body {
            case .memory(let bytes):
                var joined: [UInt8] = []
                joined.reserveCapacity(parts.reduce(0) { $0 + $1.count })
                for part in parts {
                    switch part {
                    case .bytes(let text): joined += text
                    case .file(let offset, let length): joined += bytes[offset..<offset + length]
                    }
                }
                exchange.respond(status: 206, headers: multipartHeaders, body: joined)
            case .descriptor(let fd):
                exchange.respondFile(status: 206, headers: multipartHeaders, fd: fd, fileSize: size, parts: parts)
            }
        }
    }

    /// A `multipart/byteranges` body (RFC 9110 §14.6): each range behind a boundary line
    /// and its own Content-Type and Content-Range, then the closing boundary. The
    /// boundary is random, so file content cannot contain it by accident.
    static func multipart(_ spans: [ByteRanges.Span], headers: [(name: String, value: String)], size: Int)
        -> (headers: [(name: String, value: String)], parts: [HTTPFilePart]) {
        var random = SystemRandomNumberGenerator()
        let boundary = "chroma-" + String(random.next() as UInt64, radix: 36) + String(random.next() as UInt64, radix: 36)
        let contentType = headers.first { $0.name == "Content-Type" }?.value ?? "application/octet-stream"
        var parts: [HTTPFilePart] = []
        for (index, span) in spans.enumerated() {
            let head = (index == 0 ? "" : "\r\n") + "--\(boundary)\r\nContent-Type: \(contentType)\r\n"
                + "Content-Range: bytes \(span.offset)-\(span.last)/\(size)\r\n\r\n"
            parts.append(.bytes(Array(head.utf8)))
            parts.append(.file(offset: span.offset, length: span.length))
        }
        parts.append(.bytes(Array("\r\n--\(boundary)--\r\n".utf8)))
        let multipartHeaders = headers.map { $0.name == "Content-Type" ? ("Content-Type", "multipart/byteranges; boundary=\(boundary)") : $0 }
        return (multipartHeaders, parts)
    }

    private static func release(_ body: Body) {
        if case .descriptor(let fd) = body { _ = Glibc.close(fd) }
    }
}
