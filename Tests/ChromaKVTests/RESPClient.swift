import ChromaKV
import Foundation
import TestSupport

/// A blocking RESP2 client for tests over a loopback socket whose reads time out after 10 s,
/// so a missing reply fails the test instead of hanging it.
final class RESPClient {
    private let socket: LoopbackSocket
    private var parser = ReplyReader()

    struct NoReply: Error {}

    init(port: UInt16) throws {
        socket = try LoopbackSocket(port: port)
    }

    /// A command as a multibulk request.
    static func command(_ words: String...) -> String { command(words) }
    static func command(_ words: [String]) -> String {
        "*\(words.count)\r\n" + words.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
    }

    func send(_ text: String) { socket.send(Array(text.utf8)) }

    /// The next reply; throws if the connection closed or went silent first.
    func reply() throws -> RESPReply {
        while true {
            if let reply = parser.next() { return reply }
            guard let bytes = socket.receive() else { throw NoReply() }
            parser.bytes += bytes
        }
    }

    /// Sends one command and waits for its reply.
    func call(_ words: String...) throws -> RESPReply {
        send(Self.command(words))
        return try reply()
    }

    /// True once the server closed the connection.
    func closedByServer() -> Bool { socket.closedByPeer() }
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
