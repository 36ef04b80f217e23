import ChromaKV
import Foundation

/// A blocking RESP2 client for tests over a loopback socket whose reads time out after 10 s,
/// so a missing reply fails the test instead of hanging it.
final class RESPClient {
    private let fd: Int32
    private var parser = ReplyReader()

    struct NoReply: Error {}

    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
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

    /// A command as a multibulk request.
    static func command(_ words: String...) -> String { command(words) }
    static func command(_ words: [String]) -> String {
        "*\(words.count)\r\n" + words.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    /// The next reply; throws if the connection closed or went silent first.
    func reply() throws -> RESPReply {
        while true {
            if let reply = parser.next() { return reply }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { throw NoReply() }
            parser.bytes += chunk[..<n]
        }
    }

    /// True once the server closed the connection (a read returned 0 or a reset).
    func closedByServer() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n > 0 { continue }
            return n == 0 || errno == ECONNRESET
        }
    }
}

/// RESP2 replies from bytes (the client's side of the protocol).
struct ReplyReader {
    var bytes: [UInt8] = []

    mutating func next() -> RESPReply? {
        var at = 0
        guard let reply = parse(&at) else { return nil }
        bytes.removeFirst(at)
        return reply
    }

    private func line(_ at: inout Int) -> String? {
        var i = at
        while i + 1 < bytes.count {
            if bytes[i] == 13 && bytes[i + 1] == 10 {
                let text = String(decoding: bytes[at..<i], as: UTF8.self)
                at = i + 2
                return text
            }
            i += 1
        }
        return nil
    }

    private func parse(_ at: inout Int) -> RESPReply? {
        guard at < bytes.count else { return nil }
        let kind = bytes[at]
        var cursor = at + 1
        guard let text = line(&cursor) else { return nil }
        switch kind {
        case UInt8(ascii: "+"): at = cursor; return .simple(text)
        case UInt8(ascii: "-"): at = cursor; return .error(text)
        case UInt8(ascii: ":"): at = cursor; return .integer(Int(text) ?? 0)
        case UInt8(ascii: "$"):
            let length = Int(text) ?? -1
            if length < 0 { at = cursor; return .null }
            guard bytes.count >= cursor + length + 2 else { return nil }
            at = cursor + length + 2
            return .bulk(Array(bytes[cursor..<(cursor + length)]))
        default:  // "*"
            let count = Int(text) ?? -1
            if count < 0 { at = cursor; return .array(nil) }
            var items: [RESPReply] = []
            for _ in 0..<count {
                guard let item = parse(&cursor) else { return nil }
                items.append(item)
            }
            at = cursor
            return .array(items)
        }
    }
}
