/// The commands that touch one key, run against the key's shard (on its color), with Redis's
/// replies and error texts. `arguments[0]` is the command's name, already looked up (`command`)
/// with a valid arity (see `CommandTable`).
public enum ShardCommands {
    static let wrongType = RESPReply.error("WRONGTYPE Operation against a key holding the wrong kind of value")
    static let notInteger = RESPReply.error("ERR value is not an integer or out of range")
    static let syntax = RESPReply.error("ERR syntax error")

    /// Runs one single-key command. `now` is the shard's clock in milliseconds.
    public static func run(_ arguments: [[UInt8]], command: Command, store: inout ShardStore, now: Int64) -> RESPReply {
        let key = arguments[1]
        switch command {
        case .get:
            switch store.value(key, now: now) {
            case nil: return .null
            case .string(let bytes)?: return .bulk(bytes)
            case .list?: return wrongType
            }
        case .set:
            return set(arguments, store: &store, now: now)
        case .del:
            return .integer(store.remove(key, now: now) ? 1 : 0)
        case .exists:
            return .integer(store.value(key, now: now) == nil ? 0 : 1)
        case .incr, .decr, .incrby, .decrby:
            var by = command == .incr || command == .incrby ? 1 : -1
            if command == .incrby || command == .decrby {
                guard let amount = RESPParser.integer(arguments[2]) else { return notInteger }
                guard command == .incrby || amount != Int.min else { return .error("ERR decrement would overflow") }
                by = command == .incrby ? amount : -amount
            }
            let current: Int
            switch store.value(key, now: now) {
            case nil: current = 0
            case .string(let bytes)?:
                guard bytes.count <= 20, let value = RESPParser.integer(bytes) else { return notInteger }
                current = value
            case .list?: return wrongType
            }
            let (sum, overflow) = current.addingReportingOverflow(by)
            guard !overflow else { return .error("ERR increment or decrement would overflow") }
            store.set(key, .string(Array(String(sum).utf8)), keepingExpiry: true)
            return .integer(sum)
        case .expire, .pexpire:
            guard let amount = RESPParser.integer(arguments[2]) else { return notInteger }
            let (ms, overflow) = amount.multipliedReportingOverflow(by: command == .expire ? 1000 : 1)
            let (deadline, overflow2) = Int64(ms).addingReportingOverflow(now)
            guard !overflow && !overflow2 else { return .error("ERR invalid expire time in '\(command.name)' command") }
            return .integer(store.setDeadline(key, deadline, now: now) ? 1 : 0)
        case .ttl, .pttl:
            switch store.deadline(key, now: now) {
            case nil: return .integer(-2)
            case .some(nil): return .integer(-1)
            case .some(let deadline?):
                let left = deadline - now
                return .integer(Int(command == .ttl ? (left + 500) / 1000 : left))
            }
        case .persist:
            guard case .some(let deadline) = store.deadline(key, now: now), deadline != nil else { return .integer(0) }
            _ = store.setDeadline(key, nil, now: now)
            return .integer(1)
        case .lpush, .rpush:
            guard let length = store.push(key, arguments[2...], front: command == .lpush, now: now) else { return wrongType }
            return .integer(length)
        case .lpop, .rpop:
            var count: Int?
            if arguments.count == 3 {
                guard let n = RESPParser.integer(arguments[2]), n >= 0 else {
                    return .error("ERR value is out of range, must be positive")
                }
                count = n
            }
            switch store.pop(key, count: count ?? 1, front: command == .lpop, now: now) {
            case nil: return count == nil ? .null : .array(nil)
            case .failure?: return wrongType
            case .success(let taken)?:
                if count == nil { return .bulk(taken.first) }
                return .array(taken.map { .bulk($0) })
            }
        case .lrange:
            guard let start = RESPParser.integer(arguments[2]), let stop = RESPParser.integer(arguments[3]) else { return notInteger }
            switch store.value(key, now: now) {
            case nil: return .array([])
            case .string?: return wrongType
            case .list(let list)?:
                let n = list.count
                let from = max(0, start < 0 ? n + start : start)
                let to = min(n - 1, stop < 0 ? n + stop : stop)
                guard from <= to else { return .array([]) }
                return .array(list[from...to].map { .bulk($0) })
            }
        default:
            preconditionFailure("\(command.name) is not a single-key command")
        }
    }

    /// SET key value [EX s | PX ms] [NX | XX] [KEEPTTL] [GET].
    private static func set(_ arguments: [[UInt8]], store: inout ShardStore, now: Int64) -> RESPReply {
        let key = arguments[1]
        var deadline: Int64?
        var onlyIfMissing = false, onlyIfPresent = false, keepTTL = false, get = false
        var i = 3
        while i < arguments.count {
            let option = String(decoding: arguments[i], as: UTF8.self).uppercased()
            switch option {
            case "NX" where !onlyIfPresent: onlyIfMissing = true
            case "XX" where !onlyIfMissing: onlyIfPresent = true
            case "KEEPTTL" where deadline == nil: keepTTL = true
            case "GET": get = true
            case "EX", "PX":
                guard deadline == nil, !keepTTL, i + 1 < arguments.count else { return syntax }
                guard let amount = RESPParser.integer(arguments[i + 1]) else { return notInteger }
                let (ms, overflow) = amount.multipliedReportingOverflow(by: option == "EX" ? 1000 : 1)
                guard amount > 0, !overflow, ms < Int.max - Int(now) else { return .error("ERR invalid expire time in 'set' command") }
                deadline = now + Int64(ms)
                i += 1
            default:
                return syntax
            }
            i += 1
        }
        // A plain SET reads nothing: it replaces whatever is there.
        guard onlyIfMissing || onlyIfPresent || get || keepTTL else {
            store.set(key, .string(arguments[2]), keepingExpiry: keepTTL)
            if let deadline { _ = store.setDeadline(key, deadline, now: now) }
            return .ok
        }
        let old = store.value(key, now: now)
        if get, case .list? = old { return wrongType }
        let oldReply: RESPReply = {
            if case .string(let bytes)? = old { return .bulk(bytes) }
            return .null
        }()
        if (onlyIfMissing && old != nil) || (onlyIfPresent && old == nil) { return get ? oldReply : .null }
        store.set(key, .string(arguments[2]), keepingExpiry: keepTTL)
        if let deadline { _ = store.setDeadline(key, deadline, now: now) }
        return get ? oldReply : .ok
    }
}
