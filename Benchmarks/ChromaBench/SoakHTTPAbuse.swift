import Glibc

/// What the soak does to chroma-httpd on purpose, each time on a connection of its own:
/// malformed requests, which must get the server's error answer and then a close; resets
/// mid-request and mid-answer, after which the server must free the connection (the
/// descriptor check sees it if not); and slowloris trickles, which the request deadline
/// must close. The answers expected are those of ChromaHTTP and libevent's parser: 400 for
/// a request line or header that does not parse, 501 for a method evhttp does not know,
/// 413 for a head over `HTTPLimits.maxHeaderBytes`, 408 at `HTTPLimits.requestTimeout`.
struct SoakHTTPAbuse {
    /// chroma-httpd's request deadline: `HTTPLimits.requestTimeout`'s default, as the
    /// server has no flag for it.
    static let requestTimeout = 30.0
    /// chroma-httpd's head limit: `HTTPLimits.maxHeaderBytes`'s default.
    static let maxHeaderBytes = 16 * 1024
    /// How long past the deadline a trickle may stay open: the sweep runs every second,
    /// the rest is slack for a loaded machine.
    static let deadlineSlack = 15.0

    let port: UInt16
    let files: SoakFiles
    let ledger: SoakLedger
    let stop: SoakStop
    var random: SoakRandom

    /// A malformed request or a reset, alternately at random, every `pace` seconds.
    mutating func runMalformedAndResets(pace: Double) {
        while !stop.isSet {
            if random.chance(0.5) { malformed() } else { resetMidway() }
            stop.pause(pace)
        }
    }

    // MARK: Malformed

    /// A malformed request, after 0 to 2 good ones on the same connection; its error
    /// answer must come, and then the close.
    private mutating func malformed() {
        let (kind, bytes, status) = malformedRequest()
        guard let socket = connectAfterGoodRequests() else { return }
        defer { socket.close() }
        do {
            try socket.send(bytes)
            let answer = try socket.readHTTPAnswer(toHead: false, operation: kind)
            guard answer.status == status else {
                ledger.unexpected(.http, "\(kind): answered \(answer.status), expected \(status)")
                return
            }
        } catch {
            ledger.unexpected(.http, "\(kind): no \(status) answer: \(error)")
            return
        }
        ledger.expectClose(.http, socket, kind: "\(status) \(kind)")
    }

    /// One malformed request: how the detail line names it, its bytes, and the status.
    private mutating func malformedRequest() -> (String, [UInt8], Int) {
        let pad = Self.maxHeaderBytes + Int.random(in: 1...(16 << 10), using: &random)
        switch Int.random(in: 0..<5, using: &random) {
        case 0:
            let junk = (0..<Int.random(in: 1...200, using: &random)).map { _ in UInt8.random(in: 0x21...0x7E, using: &random) }
            return ("garbage request line", junk + Array("\r\n\r\n".utf8), 400)
        case 1:
            return ("header line without a colon", Array("GET /\(SoakFiles.small) HTTP/1.1\r\nHost: soak\r\nno colon here\r\n\r\n".utf8), 400)
        case 2:
            return ("unknown method", Array("BREW /\(SoakFiles.small) HTTP/1.1\r\nHost: soak\r\n\r\n".utf8), 501)
        case 3:
            let head = "GET /\(SoakFiles.small) HTTP/1.1\r\nHost: soak\r\nX-Pad: " + String(repeating: "p", count: pad) + "\r\n\r\n"
            return ("head over 16 KiB", Array(head.utf8), 413)
        default:
            let head = "GET /\(SoakFiles.small) HTTP/1.1\r\nHost: soak\r\nX-Pad: " + String(repeating: "p", count: pad)
            return ("unfinished head over 16 KiB", Array(head.utf8), 413)
        }
    }

    // MARK: Resets

    /// A connection reset (SO_LINGER {1, 0}) in the middle of something, after 0 to 2
    /// good requests: half a head, half a body, a pipelined batch not read, or an answer
    /// of 4 MiB partly read.
    private mutating func resetMidway() {
        guard let socket = connectAfterGoodRequests() else { return }
        let kind: String
        do {
            switch Int.random(in: 0..<4, using: &random) {
            case 0:
                kind = "reset in the head"
                let head = Array("GET /\(SoakFiles.big) HTTP/1.1\r\nHost: soak\r\nX-Soak: resetting\r\n\r\n".utf8)
                try socket.send(Array(head[..<Int.random(in: 1..<head.count - 1, using: &random)]))
            case 1:
                kind = "reset in the body"
                let length = Int.random(in: 2...8192, using: &random)
                try socket.send("POST /\(SoakFiles.small) HTTP/1.1\r\nHost: soak\r\nContent-Length: \(length)\r\n\r\n")
                try socket.send([UInt8](repeating: 0x62, count: Int.random(in: 0..<length, using: &random)))
            case 2:
                kind = "reset before reading pipelined answers"
                let batch = (0..<Int.random(in: 1...4, using: &random)).map { _ in SoakHTTPRequest.random(files, &random) }
                try socket.send(batch.flatMap { $0.encoded(close: false) })
            default:
                kind = "reset in a 4 MiB answer"
                try socket.send("GET /\(SoakFiles.huge) HTTP/1.1\r\nHost: soak\r\n\r\n")
                try socket.skip(count: Int.random(in: 1...(1 << 20), using: &random), operation: "part of /\(SoakFiles.huge)")
            }
        } catch {
            ledger.unexpected(.http, "before a reset: \(error)")
            socket.close()
            return
        }
        if random.chance(0.5) { stop.pause(Double.random(in: 0..<0.05, using: &random)) }
        socket.reset()
        ledger.reset(.http, kind: kind)
    }

    /// A new connection on which 0 to 2 good requests were answered (they count as sent);
    /// nil when the connect or one of those failed (already counted).
    private mutating func connectAfterGoodRequests() -> SoakSocket? {
        let socket: SoakSocket
        switch SoakSocket.connect(port: port) {
        case .success(let connected): socket = connected
        case .failure(let error):
            ledger.unexpected(.http, error.description)
            stop.pause(1)
            return nil
        }
        let client = SoakHTTPClient(port: port, files: files, ledger: ledger, stop: stop, random: random)
        for _ in 0..<Int.random(in: 0...2, using: &random) {
            guard client.exchange(socket, [SoakHTTPRequest.random(files, &random)], closing: false) else {
                socket.close()
                return nil
            }
        }
        return socket
    }

    // MARK: Slowloris

    /// `connections` trickles at once, each sending one byte of a head that never ends
    /// about every second, started a deadline's fraction apart. The server must answer
    /// 408 and close each at its request deadline, not before it and not much after.
    mutating func runSlowloris(connections: Int) {
        struct Trickle {
            let socket: SoakSocket
            let opened: Double
            var sent = 0
            var nextByte: Double
            var received: [UInt8] = []
        }
        let head = Array("GET /\(SoakFiles.small) HTTP/1.1\r\nHost: soak\r\nX-Trickle: ".utf8)
        let begin = nowSeconds()
        var nextOpen = (0..<connections).map { begin + Double($0) * Self.requestTimeout / Double(connections) }
        var trickles: [Trickle?] = Array(repeating: nil, count: connections)
        while !stop.isSet {
            let now = nowSeconds()
            for slot in trickles.indices {
                guard var trickle = trickles[slot] else {
                    guard now >= nextOpen[slot] else { continue }
                    switch SoakSocket.connect(port: port) {
                    case .success(let socket): trickles[slot] = Trickle(socket: socket, opened: now, nextByte: now)
                    case .failure(let error):
                        ledger.unexpected(.http, "slowloris: \(error)")
                        nextOpen[slot] = now + 1
                    }
                    continue
                }
                var (bytes, closed) = trickle.socket.poll()
                trickle.received += bytes
                if !closed && now >= trickle.nextByte {
                    do {
                        try trickle.socket.send([trickle.sent < head.count ? head[trickle.sent] : 0x61])
                        trickle.sent += 1
                        trickle.nextByte = now + Double.random(in: 0.8...1.2, using: &random)
                    } catch {
                        (bytes, closed) = trickle.socket.poll()
                        trickle.received += bytes
                        closed = true
                    }
                }
                let age = now - trickle.opened
                if closed {
                    trickleClosed(after: age, received: trickle.received)
                } else if age > Self.requestTimeout + Self.deadlineSlack {
                    ledger.unexpected(.http, "slowloris: still open after \(Int(age)) s (request deadline \(Int(Self.requestTimeout)) s)")
                    closed = true
                }
                if closed {
                    trickle.socket.close()
                    trickles[slot] = nil
                    nextOpen[slot] = now
                } else {
                    trickles[slot] = trickle
                }
            }
            stop.pause(0.1)
        }
        for trickle in trickles { trickle?.socket.close() }
    }

    private func trickleClosed(after age: Double, received: [UInt8]) {
        // The deadline runs from the first byte, which went out when the trickle opened.
        guard age >= Self.requestTimeout - 1.5 else {
            ledger.unexpected(.http, "slowloris: closed after \(fixed(age, 1)) s, before the \(Int(Self.requestTimeout)) s request deadline")
            return
        }
        if received.starts(with: Array("HTTP/1.1 408 ".utf8)) {
            ledger.expectedClose(.http, kind: "408 slowloris")
        } else if received.isEmpty {
            // The 408 can be lost to our own byte arriving after the server's close (a reset).
            ledger.expectedClose(.http, kind: "slowloris closed at its deadline, 408 not read")
        } else {
            let line = String(decoding: received.prefix { $0 != 0x0D }.prefix(60), as: UTF8.self)
            ledger.unexpected(.http, "slowloris: closed at its deadline with \"\(line)\", not a 408")
        }
    }
}
