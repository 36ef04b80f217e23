/// The chroma-kv load, in RESP as redis-cli speaks it: SET, GET, INCR and DEL on 64 keys
/// of the client's own (plus an unknown command now and then), one at a time or up to 32
/// pipelined. The client keeps what each key must hold, so every reply is checked
/// exactly. Now and then, on a side connection and other keys, it resets mid-command,
/// resets with a pipeline unread, or sends a protocol error, which the server must answer
/// with its error and a close.
struct SoakKVClient {
    /// A reply as RESP2 encodes it.
    enum Reply: Equatable {
        case status(String)
        case error(String)
        case integer(Int)
        case bulk([UInt8]?)

        var text: String {
            switch self {
            case .status(let s): return "+\(s)"
            case .error(let s): return "-\(s)"
            case .integer(let n): return ":\(n)"
            case .bulk(let bytes): return bytes.map { "$\($0.count)" } ?? "$-1"
            }
        }
    }

    /// A command and the reply it must get (an error reply is matched by its prefix).
    struct Command {
        let kind: String
        let arguments: [[UInt8]]
        let reply: Reply

        var encoded: [UInt8] {
            var bytes = Array("*\(arguments.count)\r\n".utf8)
            for argument in arguments { bytes += Array("$\(argument.count)\r\n".utf8) + argument + [0x0D, 0x0A] }
            return bytes
        }

        func matches(_ got: Reply) -> Bool {
            if case .error(let prefix) = reply, case .error(let text) = got { return text.hasPrefix(prefix) }
            return got == reply
        }
    }

    let port: UInt16
    let ledger: SoakLedger
    let stop: SoakStop
    var random: SoakRandom
    /// What each key holds now, as far as the replies so far say.
    private var model: [Int: [UInt8]] = [:]
    private var counter = 0
    /// Bumped after a lost reply: the keys' state is then unknown, so the client moves to
    /// fresh ones.
    private var generation = 0

    init(port: UInt16, ledger: SoakLedger, stop: SoakStop, random: SoakRandom) {
        self.port = port
        self.ledger = ledger
        self.stop = stop
        self.random = random
    }

    /// Runs until `stop`, one batch every `pace` seconds, on connections of 10 to 300 batches.
    mutating func run(pace: Double) {
        while !stop.isSet {
            guard let socket = ledger.connect(.kv, port: port, stop: stop) else { continue }
            var left = Int.random(in: 10...300, using: &random)
            while left > 0 && !stop.isSet {
                left -= 1
                if random.chance(0.02) { abuse() }
                guard batch(socket) else {
                    generation += 1
                    model = [:]
                    counter = 0
                    break
                }
                stop.pause(pace)
            }
            socket.close()
        }
    }

    /// One command, or 2 to 32 pipelined (one batch in four); false when a reply was lost.
    private mutating func batch(_ socket: SoakSocket) -> Bool {
        let count = random.chance(0.25) ? Int.random(in: 2...32, using: &random) : 1
        let commands = (0..<count).map { _ in command() }
        ledger.sent(.kv, commands.count)
        do {
            try socket.send(commands.flatMap(\.encoded))
        } catch {
            ledger.lost(.kv, commands.count, "\(commands[0].kind): \(error)")
            return false
        }
        for (index, command) in commands.enumerated() {
            let problem: String?
            do {
                let reply = try socket.readRESPReply(operation: "reply to \(command.kind)")
                problem = command.matches(reply) ? nil : "\(command.kind): replied \(reply.text), expected \(command.reply.text)"
            } catch {
                problem = error.description
            }
            if let problem {
                ledger.lost(.kv, commands.count - index, problem + (count > 1 ? " (command \(index + 1) of \(count) pipelined)" : ""))
                return false
            }
            ledger.answered(.kv, kind: command.kind)
        }
        return true
    }

    /// The next command, with the model updated as the server will have it once the
    /// command ran (commands on one connection run in order).
    private mutating func command() -> Command {
        let slot = Int.random(in: 0..<64, using: &random)
        let key = Array("soak:\(generation):\(slot)".utf8)
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<40:
            let value = (0..<Int.random(in: 0...512, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            model[slot] = value
            return Command(kind: "SET", arguments: [Array("SET".utf8), key, value], reply: .status("OK"))
        case 40..<80:
            return Command(kind: "GET", arguments: [Array("GET".utf8), key], reply: .bulk(model[slot]))
        case 80..<94:
            counter += 1
            return Command(kind: "INCR", arguments: [Array("INCR".utf8), Array("soak:\(generation):n".utf8)], reply: .integer(counter))
        case 94..<98:
            let existed = model.removeValue(forKey: slot) != nil
            return Command(kind: "DEL", arguments: [Array("DEL".utf8), key], reply: .integer(existed ? 1 : 0))
        default:
            return Command(kind: "unknown command", arguments: [Array("SOAKNOPE".utf8), key], reply: .error("ERR unknown command"))
        }
    }

    /// On a connection of its own, with keys no model tracks: a reset mid-command, a reset
    /// with pipelined replies unread, or a protocol error, which must get its error reply
    /// and then the close.
    private mutating func abuse() {
        guard let socket = ledger.connect(.kv, port: port, stop: stop) else { return }
        let key = Array("soak:aside:\(Int.random(in: 0..<64, using: &random))".utf8)
        let set = Command(kind: "SET", arguments: [Array("SET".utf8), key, Array("aside".utf8)], reply: .status("OK"))
        do {
            switch Int.random(in: 0..<3, using: &random) {
            case 0:
                let bytes = set.encoded
                try socket.send(Array(bytes[..<Int.random(in: 1..<bytes.count - 1, using: &random)]))
                socket.reset()
                ledger.reset(.kv, kind: "reset mid-command")
            case 1:
                let incr = Command(kind: "INCR", arguments: [Array("INCR".utf8), Array("soak:aside:n".utf8)], reply: .integer(0))
                try socket.send((0..<Int.random(in: 1...64, using: &random)).flatMap { _ in random.chance(0.5) ? set.encoded : incr.encoded })
                socket.reset()
                ledger.reset(.kv, kind: "reset with replies unread")
            default:
                try socket.send("*x\r\n")
                let reply = try socket.readRESPReply(operation: "reply to a protocol error")
                guard case .error(let text) = reply, text.hasPrefix("ERR Protocol error") else {
                    ledger.unexpected(.kv, "a protocol error was answered \(reply.text), not -ERR Protocol error")
                    socket.close()
                    return
                }
                ledger.expectClose(.kv, socket, kind: "protocol error answered")
                socket.close()
            }
        } catch {
            ledger.unexpected(.kv, "on a side connection: \(error)")
            socket.close()
        }
    }

}

extension SoakSocket {
    /// Reads one RESP2 reply: a status, an error, an integer or a bulk string (the soak's
    /// commands get no arrays).
    func readRESPReply(operation: String) throws(SoakIOError) -> SoakKVClient.Reply {
        let line = try read(through: [0x0D, 0x0A], limit: 64 << 10, operation: operation)
        guard let kind = line.first else { throw SoakIOError(operation: operation, kind: .malformed("an empty reply")) }
        let text = String(decoding: line.dropFirst().dropLast(2), as: UTF8.self)
        switch kind {
        case UInt8(ascii: "+"): return .status(text)
        case UInt8(ascii: "-"): return .error(text)
        case UInt8(ascii: ":"):
            guard let n = Int(text) else { throw SoakIOError(operation: operation, kind: .malformed("integer reply \"\(text)\"")) }
            return .integer(n)
        case UInt8(ascii: "$"):
            guard let length = Int(text), length >= -1 else { throw SoakIOError(operation: operation, kind: .malformed("bulk length \"\(text)\"")) }
            if length == -1 { return .bulk(nil) }
            let bytes = try read(count: length + 2, operation: operation)
            guard bytes.suffix(2) == [0x0D, 0x0A] else { throw SoakIOError(operation: operation, kind: .malformed("a bulk string without its CRLF")) }
            return .bulk(Array(bytes.dropLast(2)))
        default:
            throw SoakIOError(operation: operation, kind: .malformed("reply type \"\(Character(Unicode.Scalar(kind)))\""))
        }
    }
}
