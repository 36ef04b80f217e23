/// The commands chroma-kv knows: how many arguments each takes and where it runs.
public enum CommandTable {
    /// Where a command runs.
    public enum Kind: Sendable {
        /// On the shard of its one key (`arguments[1]`).
        case singleKey
        /// Split by key over the shards, the answers gathered (MGET, MSET, DEL and EXISTS
        /// with several keys).
        case multiKey
        /// On every shard (DBSIZE, FLUSHALL).
        case everyShard
        /// On the connection itself (PING, ECHO, INFO, CONFIG, COMMAND, QUIT).
        case connection
    }

    /// Arity as Redis states it: n means exactly n arguments (the name included), -n at
    /// least n.
    static let commands: [String: (arity: Int, kind: Kind)] = [
        "ping": (-1, .connection), "echo": (2, .connection), "info": (-1, .connection),
        "config": (-2, .connection), "command": (-1, .connection), "quit": (-1, .connection),
        "get": (2, .singleKey), "set": (-3, .singleKey), "incr": (2, .singleKey), "decr": (2, .singleKey),
        "incrby": (3, .singleKey), "decrby": (3, .singleKey), "expire": (3, .singleKey), "pexpire": (3, .singleKey),
        "ttl": (2, .singleKey), "pttl": (2, .singleKey), "persist": (2, .singleKey),
        "lpush": (-3, .singleKey), "rpush": (-3, .singleKey), "lpop": (-2, .singleKey), "rpop": (-2, .singleKey),
        "lrange": (4, .singleKey),
        "del": (-2, .multiKey), "exists": (-2, .multiKey), "mget": (-2, .multiKey), "mset": (-3, .multiKey),
        "dbsize": (1, .everyShard), "flushall": (-1, .everyShard),
    ]

    /// The commands that change keys: refused once the log has failed.
    static let writes: Set<String> = [
        "set", "incr", "decr", "incrby", "decrby", "expire", "pexpire", "persist",
        "lpush", "rpush", "lpop", "rpop", "del", "mset", "flushall",
    ]

    /// The command's lower-case name and kind, or Redis's error for an unknown command or a
    /// wrong number of arguments.
    public static func look(up arguments: [[UInt8]]) -> Result<(name: String, kind: Kind), RESPCommandError> {
        let sent = String(decoding: arguments[0], as: UTF8.self)
        let name = sent.lowercased()
        guard let (arity, kind) = commands[name] else {
            let shown = arguments.dropFirst().prefix(20).map { "'\(String(decoding: $0.prefix(128), as: UTF8.self))' " }.joined()
            return .failure(RESPCommandError(reply: .error("ERR unknown command '\(sent.prefix(128))', with args beginning with: \(shown)")))
        }
        let fits = arity > 0 ? arguments.count == arity : arguments.count >= -arity
        let pairs = name != "mset" || arguments.count % 2 == 1
        guard fits && pairs else {
            return .failure(RESPCommandError(reply: .error("ERR wrong number of arguments for '\(name)' command")))
        }
        // LPOP and RPOP take at most a count.
        if (name == "lpop" || name == "rpop") && arguments.count > 3 {
            return .failure(RESPCommandError(reply: .error("ERR wrong number of arguments for '\(name)' command")))
        }
        return .success((name, kind))
    }
}

/// A command refused before it ran; `reply` is Redis's error for it.
public struct RESPCommandError: Error, Sendable {
    public let reply: RESPReply
}
