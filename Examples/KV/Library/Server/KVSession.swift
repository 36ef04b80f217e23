import Chroma

/// One client connection: its parser, and the answers waiting for their turn. Replies go out
/// in request order even when pipelined commands run on different shards: each request
/// takes a sequence number, and an answer that comes back early waits for those before it.
final class KVSession: @unchecked Sendable {
    // Safe to send: every field is touched only in callbacks of the connection's color (its
    // input, and the answers shards post back to it), which never overlap.
    let server: KVServer
    private let connection: Connection
    private var parser: RESPParser
    private var nextRequest = 0
    private var nextReply = 0
    private var early: [Int: RESPReply] = [:]
    /// Set by QUIT or a protocol error: the request after which the connection closes.
    private var closeAfter: Int?
    /// Answers encoded and not yet written (see `flushIfDone`).
    private var output: [UInt8] = []
    /// True while `received` dispatches what it read: answers found at once wait for the rest.
    private var parsing = false

    /// The connection's color, where every field of the session is touched.
    var color: Color { connection.color }

    init(server: KVServer, connection: Connection) {
        self.server = server
        self.connection = connection
        parser = RESPParser(limits: server.limits)
    }

    /// Input arrived: every complete request is dispatched, in order.
    func received(_ bytes: [UInt8]) {
        guard closeAfter == nil else { return }
        parsing = true
        defer {
            parsing = false
            flushIfDone()
        }
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
        let command: Command, kind: CommandTable.Kind
        switch CommandTable.look(up: request) {
        case .failure(let refusal):
            answer(refusal.reply, to: sequence)
            return
        case .success(let found):
            (command, kind) = found
        }
        if CommandTable.writes(command) && server.refusesWrites {
            answer(KVServer.logFailed, to: sequence)
            return
        }
        switch kind {
        case .connection:
            answer(connectionCommand(request, command: command, sequence: sequence), to: sequence)
        case .singleKey:
            onShard(server.shard(for: request[1]), request, command, sequence: sequence)
        case .multiKey:
            multiKey(request, command: command, sequence: sequence)
        case .everyShard:
            let flush = command == .flushall
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

    /// Runs a single-key command on `shard`'s color and answers `sequence` with its reply:
    /// `visit`'s two paths, written out so that the cheap one allocates nothing.
    private func onShard(_ shard: Shard, _ request: [[UInt8]], _ command: Command, sequence: Int) {
        let server = self.server, runtime = server.runtime
        if server.runsHere && shard.queued.load(ordering: .relaxed) == 0 {
            var reply: RESPReply?
            var wait: Int?
            if runtime.runHere(as: shard.color, {
                reply = ShardCommands.run(request, command: command, store: &shard.store, now: KVClock.now())
                wait = server.record(shard)
            }), let reply {
                if let wait {
                    let color = connection.color
                    server.whenDurable(wait) { durable in
                        try? runtime.execute(on: color) { self.answer(durable ? reply : KVServer.logFailed, to: sequence) }
                    }
                } else {
                    answer(reply, to: sequence)
                }
                return
            }
        }
        if !ShardTask(session: self, shard: shard, request: request, command: command, sequence: sequence).send() {
            answer(.error("ERR server is shutting down"), to: sequence)
        }
    }

    /// Runs `work` on `shard`'s color, then `then` on the connection's color with its result
    /// and whether the log took the change (`false`: it failed).
    ///
    /// The cheap path: when nothing of this server's is queued for the shard and its color
    /// lives on this loop, `work` runs right here (`Runtime.runHere`) and `then` follows at
    /// once, unless `always` makes the reply wait for the disk: no job, no wakeup. Otherwise
    /// one job goes to the shard and one comes back. The shard's `queued` count is what
    /// keeps order: a command never overtakes one queued before it.
    private func visit<T: Sendable>(_ shard: Shard, _ work: @escaping @Sendable (inout ShardStore) -> T,
                                    then: @escaping @Sendable (T, Bool) -> Void) throws(ChromaError) {
        let server = self.server, runtime = server.runtime, color = connection.color
        if server.runsHere && shard.queued.load(ordering: .relaxed) == 0 {
            var result: T?
            var wait: Int?
            let ran = runtime.runHere(as: shard.color) {
                result = work(&shard.store)
                wait = server.record(shard)
            }
            if ran, let result {
                if let wait {
                    server.whenDurable(wait) { durable in try? runtime.execute(on: color) { then(result, durable) } }
                } else {
                    then(result, true)
                }
                return
            }
        }
        shard.queued.add(1, ordering: .relaxed)
        do {
            try runtime.execute(on: shard.color) {
                shard.queued.subtract(1, ordering: .relaxed)
                let result = work(&shard.store)
                if let wait = server.record(shard) {
                    server.whenDurable(wait) { durable in try? runtime.execute(on: color) { then(result, durable) } }
                } else {
                    try? runtime.execute(on: color) { then(result, true) }
                }
            }
        } catch {
            shard.queued.subtract(1, ordering: .relaxed)
            throw error
        }
    }

    /// MGET, MSET, and DEL or EXISTS over several keys: one job per shard with that shard's
    /// keys, the answers put back in key order.
    private func multiKey(_ request: [[UInt8]], command: Command, sequence: Int) {
        let stride = command == .mset ? 2 : 1
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
                switch command {
                case .mget:
                    if case .string(let bytes)? = store.value(request[index], now: now) { return .bulk(bytes) }
                    return .null
                case .mset:
                    store.set(request[index], .string(request[index + 1]))
                    return .ok
                case .del:
                    return .integer(store.remove(request[index], now: now) ? 1 : 0)
                default:  // exists
                    return .integer(store.value(request[index], now: now) == nil ? 0 : 1)
                }
            }
        }, combine: { parts in
            switch command {
            case .mget: return .array(parts)
            case .mset: return .ok
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
        let gathering = Gathering(slots: slots ?? parts.count, parts: parts.count)
        for (position, (shard, items)) in parts.enumerated() {
            do {
                try visit(shard, { store in run(&store, items) }) { [self] stored, durable in
                    // On the connection's color: the gathering is only touched here.
                    let replies = durable ? stored : stored.map { _ in KVServer.logFailed }
                    if let slotOf {
                        for (item, reply) in zip(items, replies) { gathering.replies[slotOf(item)] = reply }
                    } else {
                        gathering.replies[position] = replies[0]
                    }
                    gathering.left -= 1
                    if gathering.left == 0 {
                        let failed = gathering.replies.contains(KVServer.logFailed)
                        answer(failed ? KVServer.logFailed : combine(gathering.replies), to: sequence)
                    }
                }
            } catch {
                answer(.error("ERR server is shutting down"), to: sequence)
                return
            }
        }
    }

    private func connectionCommand(_ request: [[UInt8]], command: Command, sequence: Int) -> RESPReply {
        switch command {
        case .ping:
            return request.count > 1 ? .bulk(request[1]) : .simple("PONG")
        case .echo:
            return .bulk(request[1])
        case .quit:
            closeAfter = sequence
            return .ok
        case .config:
            // Enough for redis-benchmark, which asks for `save` and `appendonly`.
            let sub = String(decoding: request[1], as: UTF8.self).lowercased()
            guard sub == "get", request.count == 3 else { return .error("ERR unknown subcommand or wrong number of arguments for '\(sub)'") }
            let values = ["save": "", "appendonly": "no"]
            let asked = String(decoding: request[2], as: UTF8.self).lowercased()
            guard let value = values[asked] else { return .array([]) }
            return .array([.bulk(Array(asked.utf8)), .bulk(Array(value.utf8))])
        case .command:
            // redis-cli asks COMMAND DOCS for its hints; none here.
            return .array([])
        default:  // info
            return .bulk(Array("# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nchroma_kv:1\r\n# Keyspace\r\n".utf8))
        }
    }

    /// Sends every answer whose turn has come (held until the pipeline is done, see
    /// `flushIfDone`); closes after the last one owed. On the connection's color.
    func answer(_ reply: RESPReply, to sequence: Int) {
        guard sequence == nextReply else {
            early[sequence] = reply
            return
        }
        var next: RESPReply? = reply
        while let current = next {
            current.encode(into: &output)
            if nextReply == closeAfter {
                connection.write(output)
                output = []
                connection.close()
                return
            }
            nextReply += 1
            next = early.isEmpty ? nil : early.removeValue(forKey: nextReply)
        }
        flushIfDone()
    }

    /// Writes the answers held, once none of the requests read so far is still out (or
    /// they grow large): a pipeline's answers leave in one write, as Redis sends them,
    /// instead of one small segment per shard that answered.
    private func flushIfDone() {
        guard !parsing, !output.isEmpty, nextReply == nextRequest || output.count >= 64 << 10 else { return }
        connection.write(output)
        output.removeAll(keepingCapacity: true)
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
