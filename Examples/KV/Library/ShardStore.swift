/// One shard's keys: strings and lists, with expiry times. A plain value: the server keeps
/// each shard's store on the shard's color, which is the only place it is touched, so it
/// needs no lock.
///
/// Times are milliseconds on a monotonic clock the caller passes in (`now`), so a test can
/// move time by hand. A key past its expiry is gone: every access checks (Redis's lazy
/// expiry), and `expire(now:limit:)` removes the ones nobody touches (its active expiry).
public struct ShardStore {
    public enum Value: Equatable, Sendable {
        case string([UInt8])
        case list([[UInt8]])
    }

    private var values: [[UInt8]: Value] = [:]
    private var deadlines: [[UInt8]: Int64] = [:]

    public init() {}

    /// Keys held, expired ones not yet removed included.
    public var count: Int { values.count }

    /// The live value of `key` (removing it first if it has expired).
    public mutating func value(_ key: [UInt8], now: Int64) -> Value? {
        if let deadline = deadlines[key], deadline <= now {
            values[key] = nil
            deadlines[key] = nil
            return nil
        }
        return values[key]
    }

    /// Sets `key`, dropping any expiry unless `keepingExpiry`.
    public mutating func set(_ key: [UInt8], _ value: Value, keepingExpiry: Bool = false) {
        values[key] = value
        if !keepingExpiry { deadlines[key] = nil }
    }

    /// Removes `key`; true if it was live.
    @discardableResult
    public mutating func remove(_ key: [UInt8], now: Int64) -> Bool {
        guard value(key, now: now) != nil else { return false }
        values[key] = nil
        deadlines[key] = nil
        return true
    }

    /// The expiry of a live key (nil: none), or nil for a missing key; see `ttl`.
    public mutating func deadline(_ key: [UInt8], now: Int64) -> Int64?? {
        guard value(key, now: now) != nil else { return nil }
        return .some(deadlines[key])
    }

    /// Gives a live key an expiry (a time not after `now` removes it). False if missing.
    public mutating func setDeadline(_ key: [UInt8], _ deadline: Int64?, now: Int64) -> Bool {
        guard value(key, now: now) != nil else { return false }
        if let deadline, deadline <= now {
            values[key] = nil
            deadlines[key] = nil
        } else {
            deadlines[key] = deadline
        }
        return true
    }

    /// Removes every key.
    public mutating func removeAll() {
        values.removeAll()
        deadlines.removeAll()
    }

    /// Active expiry: removes up to `limit` expired keys; returns how many it removed.
    public mutating func expire(now: Int64, limit: Int) -> Int {
        var expired: [[UInt8]] = []
        for (key, deadline) in deadlines where deadline <= now {
            expired.append(key)
            if expired.count == limit { break }
        }
        for key in expired {
            values[key] = nil
            deadlines[key] = nil
        }
        return expired.count
    }

    /// Live keys (for tests and snapshots).
    public mutating func liveKeys(now: Int64) -> [[UInt8]] {
        _ = expire(now: now, limit: .max)
        return Array(values.keys)
    }
}
