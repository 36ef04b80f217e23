import Foundation

/// One parsed HTTP response.
struct TestResponse {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// A blocking HTTP/1.1 client for tests: raw requests out, responses parsed in order (so
/// pipelining can be checked), every read bounded by the socket's receive timeout.
final class HTTPTestClient: @unchecked Sendable {
    // Safe to send: used by one thread at a time.
    let socket: TestClient
    private var buffer: [UInt8] = []
    /// Set when a read saw the peer's close (recv returned 0), as opposed to a timeout.
    private var sawClose = false

    init(port: UInt16) throws {
        socket = try TestClient(port: port)
    }

    /// Over a socket connected elsewhere.
    init(socket: TestClient) {
        self.socket = socket
    }

    func send(_ raw: String) { socket.send(raw) }

    func get(_ path: String, headers: String = "") -> TestResponse? {
        send("GET \(path) HTTP/1.1\r\nHost: test\r\n\(headers)\r\n")
        return response()
    }

    /// More bytes into `buffer`; false when the peer closed or the read timed out.
    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = recv(socket.fd, &chunk, chunk.count, 0)
        if n == 0 || (n < 0 && errno == ECONNRESET) { sawClose = true }
        if n <= 0 { return false }
        buffer += chunk[..<n]
        return true
    }

    /// The next response, or nil if the connection closed (or went silent) first.
    func response(head: Bool = false) -> TestResponse? {
        var end: Int?
        while true {
            if let range = buffer.firstRange(of: Array("\r\n\r\n".utf8)) { end = range.upperBound; break }
            if !fill() { return nil }
        }
        let headText = String(decoding: buffer[..<end!], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        var headers: [String: String] = [:]
        for line in lines where !line.isEmpty {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        let length = head ? 0 : Int(headers["content-length"] ?? "0") ?? 0
        while buffer.count < end! + length {
            if !fill() { return nil }
        }
        let body = Array(buffer[end!..<(end! + length)])
        buffer.removeFirst(end! + length)
        return TestResponse(status: status, headers: headers, body: body)
    }

    /// True once the server closed the connection (within the receive timeout).
    func waitForClose() -> Bool {
        // recv leaves errno as it was when it returns 0, so the close is told from a
        // timeout by the result itself.
        while fill() {}
        return sawClose
    }

    func close() { socket.close() }
}
