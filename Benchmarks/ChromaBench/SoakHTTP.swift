import Glibc

/// One HTTP request of the soak's mix and the answer it must get from chroma-httpd
/// (StaticFiles over the soak's root): the status, and the body byte for byte, or for a
/// HEAD the length the GET would have.
struct SoakHTTPRequest {
    enum Body {
        /// These bytes exactly.
        case bytes(ArraySlice<UInt8>)
        /// No body, and `Content-Length` saying this (a HEAD).
        case headOf(Int)
        /// Any body of the length the answer declares (a 404's or a 405's text).
        case any
    }

    /// How the detail line names it: "GET /big.bin", "HEAD /small.bin", "GET range /huge.bin".
    let kind: String
    let head: String
    var body: [UInt8] = []
    let status: Int
    let expected: Body
    var contentRange: String? = nil

    var isHead: Bool { if case .headOf = expected { return true } else { return false } }

    /// The request as sent; `close` adds `Connection: close`.
    func encoded(close: Bool) -> [UInt8] {
        var text = head + "Host: soak\r\n"
        if !body.isEmpty { text += "Content-Length: \(body.count)\r\n" }
        if close { text += "Connection: close\r\n" }
        return Array((text + "\r\n").utf8) + body
    }

    /// Nil when `answer` is the right one; otherwise what is wrong with it.
    func check(_ answer: SoakHTTPAnswer) -> String? {
        guard answer.status == status else { return "\(kind): status \(answer.status), expected \(status)" }
        if let contentRange, answer.headers["content-range"] != contentRange {
            return "\(kind): Content-Range \(answer.headers["content-range"] ?? "missing"), expected \(contentRange)"
        }
        switch expected {
        case .any:
            return nil
        case .headOf(let length):
            guard answer.headers["content-length"] == String(length) else {
                return "\(kind): Content-Length \(answer.headers["content-length"] ?? "missing"), expected \(length)"
            }
            return answer.body.isEmpty ? nil : "\(kind): a body of \(answer.body.count) bytes"
        case .bytes(let bytes):
            guard answer.body.count == bytes.count else { return "\(kind): \(answer.body.count) body bytes, expected \(bytes.count)" }
            let same = answer.body.withUnsafeBytes { got in bytes.withUnsafeBytes { want in memcmp(got.baseAddress!, want.baseAddress!, want.count) == 0 } }
            guard !same else { return nil }
            return "\(kind): body differs from the file at byte \(firstDifference(answer.body, bytes)) of \(bytes.count)"
        }
    }

    /// A request of the mix, drawn with `random`: files cached and not, whole and in
    /// ranges, HEADs, 404s, a POST answered 405 after its body is read, an escaped path.
    static func random(_ files: SoakFiles, _ random: inout SoakRandom) -> SoakHTTPRequest {
        let small = SoakFiles.small, big = SoakFiles.big, huge = SoakFiles.huge
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<30:
            return SoakHTTPRequest(kind: "GET /\(small)", head: "GET /\(small) HTTP/1.1\r\n", status: 200, expected: .bytes(files.smallBytes[...]))
        case 30..<42:
            return SoakHTTPRequest(kind: "GET /\(big)", head: "GET /\(big) HTTP/1.1\r\n", status: 200, expected: .bytes(files.bigBytes[...]))
        case 42..<46:
            return SoakHTTPRequest(kind: "GET /\(huge)", head: "GET /\(huge) HTTP/1.1\r\n", status: 200, expected: .bytes(files.hugeBytes[...]))
        case 46..<54:
            return SoakHTTPRequest(kind: "HEAD /\(big)", head: "HEAD /\(big) HTTP/1.1\r\n", status: 200, expected: .headOf(files.bigBytes.count))
        case 54..<58:
            return SoakHTTPRequest(kind: "HEAD /\(small)", head: "HEAD /\(small) HTTP/1.1\r\n", status: 200, expected: .headOf(files.smallBytes.count))
        case 58..<68:
            let n = Int.random(in: 0..<1_000_000, using: &random)
            return SoakHTTPRequest(kind: "GET 404", head: "GET /missing-\(n).bin HTTP/1.1\r\n", status: 404, expected: .any)
        case 68..<80:
            return range(of: huge, files.hugeBytes, span: 1 << 20, &random)
        case 80..<88:
            return range(of: small, files.smallBytes, span: files.smallBytes.count, &random)
        case 88..<94:
            let body = (0..<Int.random(in: 1...4096, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            return SoakHTTPRequest(kind: "POST 405", head: "POST /\(small) HTTP/1.1\r\n", body: body, status: 405, expected: .any)
        default:
            // "small.bin" with its first letter escaped: decoded before the file is looked up.
            return SoakHTTPRequest(kind: "GET escaped path", head: "GET /%73\(small.dropFirst()) HTTP/1.1\r\n", status: 200,
                                   expected: .bytes(files.smallBytes[...]))
        }
    }

    /// A GET of one random range (at most `span` bytes) of `name`, answered 206.
    private static func range(of name: String, _ bytes: [UInt8], span: Int, _ random: inout SoakRandom) -> SoakHTTPRequest {
        let first = Int.random(in: 0..<bytes.count, using: &random)
        let last = min(bytes.count - 1, first + Int.random(in: 0..<span, using: &random))
        return SoakHTTPRequest(kind: "GET range /\(name)", head: "GET /\(name) HTTP/1.1\r\nRange: bytes=\(first)-\(last)\r\n", status: 206,
                               expected: .bytes(bytes[first...last]), contentRange: "bytes \(first)-\(last)/\(bytes.count)")
    }
}

/// The offset of the first byte where `a` and `b` differ (the shorter one's length if
/// one is a prefix of the other).
func firstDifference(_ a: [UInt8], _ b: ArraySlice<UInt8>) -> Int {
    var i = 0
    var j = b.startIndex
    while i < a.count && j < b.endIndex && a[i] == b[j] {
        i += 1
        j += 1
    }
    return i
}

/// One HTTP answer as read off the socket: status, headers (names lowercased) and body.
struct SoakHTTPAnswer {
    let status: Int
    let headers: [String: String]
    let body: [UInt8]

    /// The server said it closes the connection after this answer.
    var closes: Bool { headers["connection"]?.lowercased() == "close" }
}

extension SoakSocket {
    /// Reads one answer: its head, then the body its Content-Length declares (none for a
    /// HEAD). An answer without Content-Length (a chunked or close-delimited one) is not
    /// what chroma-httpd sends for these requests, so it is refused as malformed.
    func readHTTPAnswer(toHead: Bool, operation: String) throws(SoakIOError) -> SoakHTTPAnswer {
        let head = try read(through: Array("\r\n\r\n".utf8), limit: 64 << 10, operation: operation)
        let lines = String(decoding: head, as: UTF8.self).split(separator: "\r\n")
        // "HTTP/1.1 200 OK"
        let statusWords = lines.first?.split(separator: " ") ?? []
        guard statusWords.count >= 2, statusWords[0].hasPrefix("HTTP/1."), let status = Int(statusWords[1]) else {
            throw SoakIOError(operation: operation, kind: .malformed("bad status line \(lines.first.map { "\"\($0.prefix(60))\"" } ?? "(none)")"))
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...]).trimmingSpaces()
        }
        if toHead || status == 304 || status == 204 { return SoakHTTPAnswer(status: status, headers: headers, body: []) }
        guard let text = headers["content-length"], let length = Int(text), length >= 0 else {
            throw SoakIOError(operation: operation, kind: .malformed("answer \(status) without a Content-Length"))
        }
        return SoakHTTPAnswer(status: status, headers: headers, body: try read(count: length, operation: operation))
    }
}

/// The well-formed HTTP load: keep-alive connections issuing many requests (sometimes a
/// few pipelined) and short connections of one request each. Every answer is checked;
/// one missing or wrong is lost, and its connection is dropped (its state is unknown).
struct SoakHTTPClient {
    let port: UInt16
    let files: SoakFiles
    let ledger: SoakLedger
    let stop: SoakStop
    var random: SoakRandom

    /// Keep-alive connections of 5 to 200 requests, one batch every `pace` seconds; a
    /// batch is one request, or 2 to 4 pipelined (one in seven).
    mutating func runKeepAlive(pace: Double) {
        while !stop.isSet {
            guard let socket = ledger.connect(.http, port: port, stop: stop) else { continue }
            var left = Int.random(in: 5...200, using: &random)
            while left > 0 && !stop.isSet {
                let count = random.chance(1.0 / 7) ? min(left, Int.random(in: 2...4, using: &random)) : 1
                let batch = (0..<count).map { _ in SoakHTTPRequest.random(files, &random) }
                left -= count
                guard exchange(socket, batch, closing: false) else { break }
                stop.pause(pace)
            }
            socket.close()
        }
    }

    /// One request per connection with `Connection: close`, every `pace` seconds; the
    /// server must answer, then close.
    mutating func runShort(pace: Double) {
        while !stop.isSet {
            guard let socket = ledger.connect(.http, port: port, stop: stop) else { continue }
            if exchange(socket, [SoakHTTPRequest.random(files, &random)], closing: true),
               let problem = socket.expectClose(operation: "close after Connection: close") {
                ledger.unexpected(.http, problem)
            }
            socket.close()
            stop.pause(pace)
        }
    }

    /// Sends `batch` in one write and checks each answer in order; false when one was lost
    /// (the rest of the batch is then lost too) and the connection must go.
    func exchange(_ socket: SoakSocket, _ batch: [SoakHTTPRequest], closing: Bool) -> Bool {
        ledger.sent(.http, batch.count)
        do {
            try socket.send(batch.flatMap { $0.encoded(close: closing) })
        } catch {
            ledger.lost(.http, batch.count, "\(batch[0].kind): \(error)")
            return false
        }
        for (index, request) in batch.enumerated() {
            let problem: String?
            var closes = false
            do {
                let answer = try socket.readHTTPAnswer(toHead: request.isHead, operation: "answer to \(request.kind)")
                problem = request.check(answer)
                closes = answer.closes
            } catch {
                problem = error.description
            }
            if let problem {
                ledger.lost(.http, batch.count - index, problem + (batch.count > 1 ? " (request \(index + 1) of \(batch.count) pipelined)" : ""))
                return false
            }
            ledger.answered(.http, kind: request.kind)
            if closes && !closing {
                ledger.unexpected(.http, "\(request.kind): answered with Connection: close on a keep-alive connection")
                if index + 1 < batch.count { ledger.lost(.http, batch.count - index - 1, "pipelined after an answer that closed") }
                return false
            }
        }
        return true
    }

}
