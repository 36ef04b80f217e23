/// The chroma-echo load: connections of 10 to 300 batches, a batch being 1 to 8 lines
/// sent in one write and read back, each of which must come back byte for byte. Now and
/// then, on a side connection, it resets mid-line, resets with echoes unread, or sends a
/// line over the server's 64 KiB limit, which must close the connection.
struct SoakEchoClient {
    /// chroma-echo's longest line (its `onLines(maxLength:)`).
    static let maxLine = 64 << 10

    let port: UInt16
    let ledger: SoakLedger
    let stop: SoakStop
    var random: SoakRandom

    /// Runs until `stop`, one batch every `pace` seconds.
    mutating func run(pace: Double) {
        while !stop.isSet {
            guard let socket = ledger.connect(.echo, port: port, stop: stop) else { continue }
            var left = Int.random(in: 10...300, using: &random)
            while left > 0 && !stop.isSet {
                left -= 1
                if random.chance(0.02) { abuse() }
                guard batch(socket) else { break }
                stop.pause(pace)
            }
            socket.close()
        }
    }

    /// One batch of lines; false when one was lost and the connection must go.
    private mutating func batch(_ socket: SoakSocket) -> Bool {
        let lines = (0..<Int.random(in: 1...8, using: &random)).map { _ in line() }
        ledger.sent(.echo, lines.count)
        do {
            try socket.send(lines.flatMap { $0 })
        } catch {
            ledger.lost(.echo, lines.count, "a batch of \(lines.count) lines: \(error)")
            return false
        }
        for (index, line) in lines.enumerated() {
            let problem: String?
            do {
                let echoed = try socket.read(through: [0x0A], limit: Self.maxLine + 2, operation: "echo of a \(line.count - 1)-byte line")
                problem = echoed == line ? nil : "a \(line.count - 1)-byte line came back as \(echoed.count - 1) bytes, "
                    + "first difference at byte \(firstDifference(echoed, line[...]))"
            } catch {
                problem = error.description
            }
            if let problem {
                ledger.lost(.echo, lines.count - index, problem)
                return false
            }
            ledger.answered(.echo, kind: "line")
        }
        return true
    }

    /// A line with its newline: mostly short, sometimes kilobytes, rarely near the limit.
    /// Printable bytes and spaces, no CR (the server drops a CR before the LF).
    private mutating func line() -> [UInt8] {
        let length: Int
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<80: length = Int.random(in: 0...200, using: &random)
        case 80..<99: length = Int.random(in: 201...16_384, using: &random)
        default: length = Int.random(in: 16_385...(Self.maxLine - 1), using: &random)
        }
        return (0..<length).map { _ in UInt8.random(in: 0x20...0x7E, using: &random) } + [0x0A]
    }

    /// On a connection of its own: a reset mid-line, a reset with echoes unread, or a line
    /// over the limit.
    private mutating func abuse() {
        guard let socket = ledger.connect(.echo, port: port, stop: stop) else { return }
        do {
            switch Int.random(in: 0..<3, using: &random) {
            case 0:
                try socket.send(Array(line().dropLast()))
                socket.reset()
                ledger.reset(.echo, kind: "reset mid-line")
            case 1:
                try socket.send((0..<Int.random(in: 1...16, using: &random)).flatMap { _ in line() })
                socket.reset()
                ledger.reset(.echo, kind: "reset with echoes unread")
            default:
                // The server closes once it holds more than the limit without a newline;
                // the rest of the send may then meet a reset.
                let long = [UInt8](repeating: 0x6C, count: Self.maxLine + Int.random(in: 1...8192, using: &random)) + [0x0A]
                do { try socket.send(long) } catch where error.isReset {}
                ledger.expectClose(.echo, socket, kind: "line over 64 KiB")
                socket.close()
            }
        } catch {
            ledger.unexpected(.echo, "before a reset: \(error)")
            socket.close()
        }
    }

}
