import Chroma

/// One client connection: its parser, and the answers waiting for their turn. Replies go out
/// in request order even when pipelined commands run on different shards: each request
/// takes a sequence number, and an answer that comes back early waits for those before it.
final class KVSession: @unchecked Sendable {
    // Safe to send: every field is touched only in callbacks of the connection's color (its
    // input, and the answers shards post back to it), which never overlap.
    private let server: KVServer
    private let connection: Connection
    private var parser: RESPParser
    private var nextRequest = 0
    private var nextReply = 0
    private var early: [Int: RESPReply] = [:]
    /// Set by QUIT or a protocol error: the request after which the connection closes.
    private var closeAfter: Int?

    init(server: KVServer, connection: Connection) {
        self.server = server
        self.connection = connection
        parser = RESPParser(limits: server.limits)
    }

    /// Input arrived: every complete request is dispatched, in order.
    func received(_ bytes: [UInt8]) {
        guard closeAfter == nil else { return }
        do throws(RESPProtocolError) {
            try parser.append(bytes)
            while closeAfter == nil, let request = try parser.next() {
                dispatch(request, sequence: take())
            }
        } catch {
            let sequence = take()
            closeAfter = sequence
            answer(.error("ERR \(error.message)"), to: sequence)
        }
    }

    private func take() -> Int {
        defer { nextRequest += 1 }
        return nextRequest
    }

    private func dispatch(_ request: [[UInt8]], sequence: Int) {
        let name: String, kind: CommandTable.Kind
        switch CommandTable.look(up: request) {
        case .failure(let refusal):
            answer(refusal.reply, to: sequence)
            return
        case .success(let found):
            (name, kind) = found
        }
        if CommandTable.writes.contains(name) && server.refusesWrites {
            answer(KVServer.logFailed, to: sequence)
            return
        }
        switch kind {
        case .connection:
            answer(connectionCommand(request, name: name, sequence: sequence), to: sequence)
        case .singleKey:
            let shard = server.shard(for: request[1])
            onShard(shard, sequence: sequence) { store in
                ShardCommands.run(request, name: name, store: &store, now: KVClock.now())
            }
        case .multiKey:
            multiKey(request, name: name, sequence: sequence)
        case .everyShard:
            let flush = name == "flushall"
            gather(server.shards.map { ($0, [0]) }, sequence: sequence, run: { store, _ in
                if flush {
                    store.removeAll()
                    return [.ok]
                }
                _ = store.expire(now: KVClock.now(), limit: .max)
                return [.integer(store.count)]
            }, combine: { parts in
                flush ? .ok : .integer(parts.reduce(0) { sum, part in
                    if case .integer(let n) = part { return sum + n }
                    return sum
                })
            })
        }
    }

    /// Runs `body` on `shard`'s color and answers `sequence` with its reply.
    private func onShard(_ shard: Shard, sequence: Int, _ body: @escaping @Sendable (inout ShardStore) -> RESPReply) {
        let runtime = server.runtime, color = connection.color
        do {
            try runtime.execute(on: shard.color) { [self] in
                let reply = body(&shard.store)
                server.settle(shard) { durable in
                    try? runtime.execute(on: color) { self.answer(durable ? reply : KVServer.logFailed, to: sequence) }
                }
            }
        } catch {
            answer(.error("ERR server is shutting down"), to: sequence)
        }
    }

    /// MGET, MSET, and DEL or EXISTS over several keys: one job per shard with that shard's
    /// keys, the answers put back in key order.
    private func multiKey(_ request: [[UInt8]], name: String, sequence: Int) {
        let stride = name == "mset" ? 2 : 1
        var byShard: [ObjectIdentifier: (Shard, [Int])] = [:]
        var order: [ObjectIdentifier] = []
        for index in Swift.stride(from: 1, to: request.count, by: stride) {
            let shard = server.shard(for: request[index])
            let id = ObjectIdentifier(shard)
            if byShard[id] == nil { order.append(id) }
            byShard[id, default: (shard, [])].1.append(index)
        }
        let keyCount = (request.count - 1) / stride
        gather(order.map { byShard[$0]! }, sequence: sequence, run: { store, indexes in
            let now = KVClock.now()
            return indexes.map { index -> RESPReply in
                switch name {
                case "mget":
                    if case .string(let bytes)? = store.value(request[index], now: now) { return .bulk(bytes) }
                    return .null
                case "mset":
                    store.set(request[index], .string(request[index + 1]))
                    return .ok
                case "del":
                    return .integer(store.remove(request[index], now: now) ? 1 : 0)
                default:  // exists
                    return .integer(store.value(request[index], now: now) == nil ? 0 : 1)
                }
            }
        }, combine: { parts in
            switch name {
            case "mget": return .array(parts)
            case "mset": return .ok
            default:
                return .integer(parts.reduce(0) { sum, part in
                    if case .integer(let n) = part { return sum + n }
                    return sum
                })
            }
        }, slots: keyCount, slotOf: { index in (index - 1) / stride })
    }

    /// Runs `run` on each shard with its items, then `combine` on the connection's color
    /// with every reply in item order (`slotOf` maps an item to its place; by default the
    /// shards' replies are concatenated in shard order).
    private func gather(_ parts: [(Shard, [Int])], sequence: Int,
                        run: @escaping @Sendable (inout ShardStore, [Int]) -> [RESPReply],
                        combine: @escaping @Sendable ([RESPReply]) -> RESPReply,
                        slots: Int? = nil, slotOf: (@Sendable (Int) -> Int)? = nil) {
        let runtime = server.runtime, color = connection.color
        let gathering = Gathering(slots: slots ?? parts.count, parts: parts.count)
        for (position, (shard, items)) in parts.enumerated() {
            do {
                try runtime.execute(on: shard.color) { [self] in
                    let stored = run(&shard.store, items)
                    server.settle(shard) { durable in
                    let replies = durable ? stored : stored.map { _ in KVServer.logFailed }
                    try? runtime.execute(on: color) {
                        // On the connection's color: the gathering is only touched here.
                        if let slotOf {
                            for (item, reply) in zip(items, replies) { gathering.replies[slotOf(item)] = reply }
                        } else {
                            gathering.replies[position] = replies[0]
                        }
                        gathering.left -= 1
                        if gathering.left == 0 {
                            let failed = gathering.replies.contains(KVServer.logFailed)
                            self.answer(failed ? KVServer.logFailed : combine(gathering.replies), to: sequence)
                        }
                    }
                    }
                }
            } catch {
                answer(.error("ERR server is shutting down"), to: sequence)
                return
            }
        }
    }

    private func connectionCommand(_ request: [[UInt8]], name: String, sequence: Int) -> RESPReply {
        switch name {
        case "ping":
            return request.count > 1 ? .bulk(request[1]) : .simple("PONG")
        case "echo":
            return .bulk(request[1])
        case "quit":
            closeAfter = sequence
            return .ok
        case "config":
            // Enough for redis-benchmark, which asks for `save` and `appendonly`.
            let sub = String(decoding: request[1], as: UTF8.self).lowercased()
            guard sub == "get", request.count == 3 else { return .error("ERR unknown subcommand or wrong number of arguments for '\(sub)'") }
            let values = ["save": "", "appendonly": "no"]
            let asked = String(decoding: request[2], as: UTF8.self).lowercased()
            guard let value = values[asked] else { return .array([]) }
            return .array([.bulk(Array(asked.utf8)), .bulk(Array(value.utf8))])
        case "command":
            // redis-cli asks COMMAND DOCS for its hints; none here.
            return .array([])
        default:  // info
            return .bulk(Array("# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nchroma_kv:1\r\n# Keyspace\r\n".utf8))
        }
    }

    /// Sends every reply whose turn has come; closes after the last one owed.
    private func answer(_ reply: RESPReply, to sequence: Int) {
        early[sequence] = reply
        var out: [UInt8] = []
        while let next = early.removeValue(forKey: nextReply) {
            next.encode(into: &out)
            if nextReply == closeAfter {
                connection.write(out)
                connection.close()
                return
            }
            nextReply += 1
        }
        if !out.isEmpty { connection.write(out) }
    }
}

/// The replies of one fanned-out command, filled in on the connection's color.
private final class Gathering: @unchecked Sendable {
    // Safe to send: touched only in callbacks of one connection's color.
    var replies: [RESPReply]
    var left: Int

    init(slots: Int, parts: Int) {
        replies = Array(repeating: .null, count: slots)
        left = parts
    }
}
