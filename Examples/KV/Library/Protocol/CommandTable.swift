/// A command chroma-kv knows, by its lower-case name.
public enum Command: String, Sendable, CaseIterable {
    case ping, echo, info, config, command, quit
    case get, set, incr, decr, incrby, decrby, expire, pexpire, ttl, pttl, persist
    case lpush, rpush, lpop, rpop, lrange
    case del, exists, mget, mset
    case dbsize, flushall

    /// The lower-case name, as Redis's error texts show it.
    public var name: String { rawValue }
}

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
    static func arity(_ command: Command) -> Int {
        switch command {
        case .ping, .info, .command, .quit, .flushall: return -1
        case .config, .lpop, .rpop, .del, .exists, .mget: return -2
        case .set, .lpush, .rpush, .mset: return -3
        case .echo, .get, .incr, .decr, .ttl, .pttl, .persist: return 2
        case .incrby, .decrby, .expire, .pexpire: return 3
        case .lrange: return 4
        case .dbsize: return 1
        }
    }

    static func kind(_ command: Command) -> Kind {
        switch command {
        case .ping, .echo, .info, .config, .command, .quit: return .connection
        case .del, .exists, .mget, .mset: return .multiKey
        case .dbsize, .flushall: return .everyShard
        default: return .singleKey
        }
    }

    /// True for the commands that change keys: refused once the log has failed.
    static func writes(_ command: Command) -> Bool {
        switch command {
        case .set, .incr, .decr, .incrby, .decrby, .expire, .pexpire, .persist,
             .lpush, .rpush, .lpop, .rpop, .del, .mset, .flushall: return true
        default: return false
        }
    }

    /// Every name, its bytes lower-cased and packed into one word (all are 8 bytes or
    /// fewer), so a lookup builds no string.
    private static let byWord: [UInt64: Command] = Dictionary(uniqueKeysWithValues: Command.allCases.map { (word(Array($0.rawValue.utf8))!, $0) })

    /// The name's bytes, lower-cased, packed little-endian; nil if longer than 8 bytes.
    private static func word(_ name: [UInt8]) -> UInt64? {
        guard name.count <= 8 else { return nil }
        var word: UInt64 = 0
        for (i, byte) in name.enumerated() {
            let lower = byte >= 65 && byte <= 90 ? byte | 0x20 : byte
            word |= UInt64(lower) << (8 * UInt64(i))
        }
        return word
    }

    /// The command and its kind, or Redis's error for an unknown command or a wrong number
    /// of arguments.
    public static func look(up arguments: [[UInt8]]) -> Result<(command: Command, kind: Kind), RESPCommandError> {
        guard let word = word(arguments[0]), let command = byWord[word], command.rawValue.utf8.count == arguments[0].count else {
            let sent = String(decoding: arguments[0].prefix(128), as: UTF8.self)
            let shown = arguments.dropFirst().prefix(20).map { "'\(String(decoding: $0.prefix(128), as: UTF8.self))' " }.joined()
            return .failure(RESPCommandError(reply: .error("ERR unknown command '\(sent)', with args beginning with: \(shown)")))
        }
        let arity = arity(command)
        let fits = arity > 0 ? arguments.count == arity : arguments.count >= -arity
        let pairs = command != .mset || arguments.count % 2 == 1
        // LPOP and RPOP take at most a count.
        let bounded = (command != .lpop && command != .rpop) || arguments.count <= 3
        guard fits && pairs && bounded else {
            return .failure(RESPCommandError(reply: .error("ERR wrong number of arguments for '\(command.name)' command")))
        }
        return .success((command, kind(command)))
    }
}

/// A command refused before it ran; `reply` is Redis's error for it.
public struct RESPCommandError: Error, Sendable {
    public let reply: RESPReply
}
