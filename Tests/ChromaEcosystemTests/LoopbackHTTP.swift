import Foundation
import TestSupport

/// Seconds any wait in these tests may take before it fails the test.
let hangTimeout: Double = 10

/// One HTTP/1.1 exchange at a time over a loopback socket whose reads time out after
/// `hangTimeout`, so a test that waits for an answer fails instead of hanging.
final class LoopbackHTTP: @unchecked Sendable {
    // Safe to send: a test uses one connection from one thread at a time.
    private let socket: LoopbackSocket
    private var pending: [UInt8] = []

    init(port: UInt16) throws {
        socket = try LoopbackSocket(port: port, timeout: Int(hangTimeout))
    }

    /// Sends a GET for `path`.
    func sendGET(_ path: String) {
        socket.send(Array("GET \(path) HTTP/1.1\r\nHost: test\r\n\r\n".utf8))
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

    /// True once the server closed the connection.
    func closedByServer() -> Bool { socket.closedByPeer() }

    private func fill() -> Bool {
        guard let bytes = socket.receive() else { return false }
        pending += bytes
        return true
    }
}
