import DequeModule
import Glibc

/// One shard's keys: strings and lists, with expiry times. A plain value: the server keeps
/// each shard's store on the shard's color, which is the only place it is touched, so it
/// needs no lock. Copying it is cheap (copy on write), which is how a snapshot takes it.
///
/// Times are milliseconds on a monotonic clock the caller passes in (`now`), so a test can
/// move time by hand. A key past its expiry is gone: every access checks (Redis's lazy
/// expiry), and `expire(now:limit:)` removes the ones nobody touches (its active expiry).
///
/// With `journaling` on, every change is also recorded as an `Effect` (an expiry that
/// removes a key included), for the append-only log; `takeJournal()` hands them over.
public struct ShardStore: Sendable {
    public enum Value: Equatable, Sendable {
        case string([UInt8])
        case list(Deque<[UInt8]>)
    }

    private var values: [Key: Value] = [:]
    /// Only keys with a deadline: a store without any skips the lookup.
    private var deadlines: [Key: Int64] = [:]
    /// Bytes of live data, roughly: each key and its value, plus a fixed cost per entry.
    public private(set) var liveBytes = 0
    /// Record changes for the log (see `takeJournal`).
    var journaling = false
    private var journal = JournalWriter.reserving(Record.headerSize)

    public init() {}

    /// Keys held, expired ones not yet removed included.
    public var count: Int { values.count }

    /// The live value of `key` (removing it first if it has expired).
    public mutating func value(_ key: [UInt8], now: Int64) -> Value? {
        if !deadlines.isEmpty, let deadline = deadlines[Key(key)], deadline <= now {
            drop(key)
            if journaling { journal.effect(.delete, key) }
            return nil
        }
        return values[Key(key)]
    }

    /// Sets `key`, dropping any expiry unless `keepingExpiry`.
    public mutating func set(_ key: [UInt8], _ value: Value, keepingExpiry: Bool = false) {
        let old = values.updateValue(value, forKey: Key(key))
        liveBytes += Self.size(of: value) - (old.map(Self.size(of:)) ?? -key.count - Self.entryCost)
        if !keepingExpiry && !deadlines.isEmpty { deadlines[Key(key)] = nil }
        guard journaling else { return }
        switch value {
        case .string(let bytes):
            journal.effect(keepingExpiry ? .setKeepingDeadline : .set, key)
            journal.field(bytes)
        case .list(let items):
            if keepingExpiry, let deadline = deadlines[Key(key)] {
                journal.effect(.list, key)
                journal.items(items)
                journal.effect(.deadline, key)
                journal.integer(KVClock.wall(deadline))
            } else {
                journal.effect(.list, key)
                journal.items(items)
            }
        }
    }

    /// Pushes `items` onto the list at `key` (made if missing), at the front one by one as
    /// LPUSH does, or at the back; the new length, or nil if `key` holds a string.
    public mutating func push<Items: Collection>(_ key: [UInt8], _ items: Items, front: Bool, now: Int64) -> Int? where Items.Element == [UInt8] {
        var list: Deque<[UInt8]>
        switch takeList(key, now: now) {
        case .failure: return nil
        case .success(let existing?): list = existing
        case .success(nil):
            list = []
            liveBytes += key.count + Self.entryCost
        }
        for item in items {
            if front { list.prepend(item) } else { list.append(item) }
            liveBytes += item.count + 8
        }
        values[Key(key)] = .list(list)
        if journaling {
            journal.effect(front ? .pushFront : .pushBack, key)
            journal.items(items)
        }
        return list.count
    }

    /// Removes up to `count` items from the list at `key`, from the front or the back, in
    /// the order removed; removes the key once its list is empty. Nil for a missing key;
    /// `.failure` if `key` holds a string.
    public mutating func pop(_ key: [UInt8], count: Int, front: Bool, now: Int64) -> Result<[[UInt8]], WrongKind>? {
        var list: Deque<[UInt8]>
        switch takeList(key, now: now) {
        case .failure: return .failure(WrongKind())
        case .success(nil): return nil
        case .success(let existing?): list = existing
        }
        var taken: [[UInt8]] = []
        taken.reserveCapacity(min(count, list.count))
        while taken.count < count, let item = front ? list.popFirst() : list.popLast() {
            taken.append(item)
            liveBytes -= item.count + 8
        }
        if list.isEmpty {
            liveBytes -= key.count + Self.entryCost
            if !deadlines.isEmpty { deadlines[Key(key)] = nil }
        } else {
            values[Key(key)] = .list(list)
        }
        if journaling {
            journal.effect(front ? .popFront : .popBack, key)
            journal.integer(UInt32(taken.count))
        }
        return .success(taken)
    }

    /// The live list at `key`, taken out of the table so that the caller holds the only
    /// reference and changes it without a copy (it must put it back, or account for its
    /// removal); nil if missing; `.failure` (left in place) if `key` holds a string.
    private mutating func takeList(_ key: [UInt8], now: Int64) -> Result<Deque<[UInt8]>?, WrongKind> {
        switch value(key, now: now) {
        case nil: return .success(nil)
        case .string?: return .failure(WrongKind())
        case .list?:
            guard case .list(let list)? = values.removeValue(forKey: Key(key)) else { preconditionFailure("the list was just found") }
            return .success(list)
        }
    }

    /// A list command met a string.
    public struct WrongKind: Error {}

    /// Removes `key`; true if it was live.
    @discardableResult
    public mutating func remove(_ key: [UInt8], now: Int64) -> Bool {
        guard value(key, now: now) != nil else { return false }
        drop(key)
        if journaling { journal.effect(.delete, key) }
        return true
    }

    /// The expiry of a live key (nil: none), or nil for a missing key; see `ttl`.
    public mutating func deadline(_ key: [UInt8], now: Int64) -> Int64?? {
        guard value(key, now: now) != nil else { return nil }
        return .some(deadlines[Key(key)])
    }

    /// Gives a live key an expiry (a time not after `now` removes it), or drops it (nil).
    /// False if missing.
    public mutating func setDeadline(_ key: [UInt8], _ deadline: Int64?, now: Int64) -> Bool {
        guard value(key, now: now) != nil else { return false }
        if let deadline, deadline <= now {
            drop(key)
            if journaling { journal.effect(.delete, key) }
        } else {
            deadlines[Key(key)] = deadline
            if journaling {
                if let deadline {
                    journal.effect(.deadline, key)
                    journal.integer(KVClock.wall(deadline))
                } else {
                    journal.effect(.persist, key)
                }
            }
        }
        return true
    }

    /// Removes every key.
    public mutating func removeAll() {
        values.removeAll()
        deadlines.removeAll()
        liveBytes = 0
        if journaling { journal.bytes.append(Effect.flush.rawValue) }
    }

    /// Active expiry: removes up to `limit` expired keys; returns how many it removed.
    public mutating func expire(now: Int64, limit: Int) -> Int {
        var expired: [[UInt8]] = []
        for (key, deadline) in deadlines where deadline <= now {
            expired.append(key.bytes)
            if expired.count == limit { break }
        }
        for key in expired {
            drop(key)
            if journaling { journal.effect(.delete, key) }
        }
        return expired.count
    }

    /// Live keys (for tests).
    public mutating func liveKeys(now: Int64) -> [[UInt8]] {
        _ = expire(now: now, limit: .max)
        return values.keys.map(\.bytes)
    }

    /// Every entry with its deadline, in no order: what a snapshot writes.
    func forEachEntry(_ body: ([UInt8], Value, Int64?) -> Void) {
        for (key, value) in values { body(key.bytes, value, deadlines.isEmpty ? nil : deadlines[key]) }
    }

    /// The changes recorded since the last call, as a record with its header left to fill
    /// in (`Record.seal`); the journal starts over.
    mutating func takeJournal() -> [UInt8] {
        defer { journal = .reserving(Record.headerSize) }
        return journal.bytes
    }

    /// True when changes wait for `takeJournal()`.
    var hasJournal: Bool { journal.bytes.count > Record.headerSize }

    /// Applies the effects in `reader` (one log record's worth), as they happened. Nothing
    /// expires while it replays: expiries that happened were logged as removals.
    mutating func replay(_ reader: inout JournalReader) throws(JournalReader.Malformed) {
        let never = Int64.min
        while !reader.atEnd {
            let kind = try reader.kind()
            if kind == .flush {
                removeAll()
                continue
            }
            let key = try reader.field()
            switch kind {
            case .set, .setKeepingDeadline:
                set(key, .string(try reader.field()), keepingExpiry: kind == .setKeepingDeadline)
            case .delete:
                remove(key, now: never)
            case .deadline:
                let wall = try reader.integer(Int64.self)
                _ = setDeadline(key, KVClock.monotonic(fromWall: wall), now: never)
            case .persist:
                _ = setDeadline(key, nil, now: never)
            case .pushFront, .pushBack:
                guard push(key, try reader.items(), front: kind == .pushFront, now: never) != nil else { throw .init() }
            case .popFront, .popBack:
                let count = Int(try reader.integer(UInt32.self))
                guard case .success? = pop(key, count: count, front: kind == .popFront, now: never) else { throw .init() }
            case .list:
                set(key, .list(Deque(try reader.items())))
            case .flush:
                break
            }
        }
    }

    private mutating func drop(_ key: [UInt8]) {
        if let old = values.removeValue(forKey: Key(key)) { liveBytes -= key.count + Self.entryCost + Self.size(of: old) }
        if !deadlines.isEmpty { deadlines[Key(key)] = nil }
    }

    private static let entryCost = 32

    private static func size(of value: Value) -> Int {
        switch value {
        case .string(let bytes): return bytes.count
        case .list(let items): return items.reduce(0) { $0 + $1.count + 8 }
        }
    }
}

extension JournalWriter {
    mutating func items<Items: Collection>(_ items: Items) where Items.Element == [UInt8] {
        integer(UInt32(items.count))
        for item in items { field(item) }
    }
}

extension JournalReader {
    mutating func items() throws(Malformed) -> [[UInt8]] {
        let count = Int(try integer(UInt32.self))
        guard count <= end - offset else { throw Malformed() }  // each item takes bytes
        var items: [[UInt8]] = []
        items.reserveCapacity(count)
        for _ in 0..<count { items.append(try field()) }
        return items
    }
}

/// chroma-kv's clocks: shards keep deadlines on the monotonic clock (immune to the wall
/// clock moving), and the log keeps them as wall-clock time so they survive a restart.
public enum KVClock {
    /// Monotonic milliseconds.
    public static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    /// Wall-clock minus monotonic milliseconds, read once per process.
    static let wallOffset: Int64 = {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000 - now()
    }()

    /// A monotonic deadline as wall-clock milliseconds.
    static func wall(_ monotonic: Int64) -> Int64 { monotonic &+ wallOffset }

    /// A wall-clock deadline on this process's monotonic clock.
    static func monotonic(fromWall wall: Int64) -> Int64 { wall &- wallOffset }
}
