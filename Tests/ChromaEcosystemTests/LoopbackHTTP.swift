import Foundation

/// Seconds any wait in these tests may take before it fails the test.
let hangTimeout: Double = 10

/// One HTTP/1.1 exchange at a time over a loopback socket whose reads time out after
/// `hangTimeout`, so a test that waits for an answer fails instead of hanging.
final class LoopbackHTTP: @unchecked Sendable {
    // Safe to send: a test uses one connection from one thread at a time.
    private let fd: Int32
    private var pending: [UInt8] = []

    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
        var timeout = timeval(tv_sec: Int(hangTimeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let error = errno
            Glibc.close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: error)!)
        }
    }

    deinit { Glibc.close(fd) }

    /// Sends a GET for `path`.
    func sendGET(_ path: String) {
        let bytes = Array("GET \(path) HTTP/1.1\r\nHost: test\r\n\r\n".utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// The next answer's status, lower-cased headers and body; nil if the connection closed
    /// or went silent first.
    func answer() -> (status: Int, headers: [String: String], body: String)? {
        while true {
            if let end = pending.firstRange(of: Array("\r\n\r\n".utf8))?.upperBound {
                let head = String(decoding: pending[..<end], as: UTF8.self).components(separatedBy: "\r\n")
                guard let status = head.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return nil }
                var headers: [String: String] = [:]
                for line in head.dropFirst() {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    if parts.count == 2 { headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces) }
                }
                let length = Int(headers["content-length"] ?? "0") ?? 0
                while pending.count < end + length { guard fill() else { return nil } }
                let body = String(decoding: pending[end..<(end + length)], as: UTF8.self)
                pending.removeFirst(end + length)
                return (status, headers, body)
            }
            guard fill() else { return nil }
        }
    }

    /// `sendGET` then `answer`.
    func get(_ path: String) -> (status: Int, headers: [String: String], body: String)? {
        sendGET(path)
        return answer()
    }

    /// True once the server closed the connection (a read returned 0).
    func closedByServer() -> Bool {
        while fill() {}
        return sawClose
    }

    private var sawClose = false

    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = recv(fd, &chunk, chunk.count, 0)
        if n == 0 || (n < 0 && errno == ECONNRESET) { sawClose = true }
        guard n > 0 else { return false }
        pending += chunk[..<n]
        return true
    }
}

/// Polls `condition` until it holds or `hangTimeout` passes, for state another thread
/// changes with no event to wait on.
func eventually(_ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(hangTimeout)
    while !condition() {
        if Date() > deadline { return false }
        usleep(1000)
    }
    return true
}
