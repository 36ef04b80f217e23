/// The effects a shard's store records as it changes, in the byte form the append-only log
/// and snapshots hold. An effect says what happened to one key, not which command did it, so
/// replaying effects in order rebuilds the store exactly: an expiry that removed a key is
/// logged as a removal (`delete`) when it happens, and replay never expires anything itself.
///
/// Deadlines are wall-clock milliseconds (Unix time) in the log, so a restart maps them onto
/// its own monotonic clock (`KVClock`).
enum Effect: UInt8 {
    /// key, value: a string, no deadline.
    case set = 1
    /// key, value: a string, the deadline kept.
    case setKeepingDeadline = 2
    /// key.
    case delete = 3
    /// key, deadline (Int64, wall-clock ms).
    case deadline = 4
    /// key: the deadline dropped.
    case persist = 5
    /// key, count, items: pushed at the front (each in turn, as LPUSH does).
    case pushFront = 6
    /// key, count, items: appended at the back.
    case pushBack = 7
    /// key, count: removed from the front.
    case popFront = 8
    /// key, count: removed from the back.
    case popBack = 9
    /// Every key removed.
    case flush = 10
    /// key, count, items: a whole list, no deadline (snapshots).
    case list = 11
}

/// Appends effects to a byte buffer: a kind byte, then fields as little-endian lengths and
/// bytes. Not thread-safe: one per shard, on the shard's color.
struct JournalWriter {
    var bytes: [UInt8] = []

    /// A writer whose first `count` bytes are left for a header to be filled in later.
    static func reserving(_ count: Int) -> JournalWriter {
        JournalWriter(bytes: [UInt8](repeating: 0, count: count))
    }

    mutating func effect(_ kind: Effect, _ key: [UInt8]) {
        bytes.append(kind.rawValue)
        field(key)
    }

    mutating func field(_ value: [UInt8]) {
        integer(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func integer<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Reads what `JournalWriter` wrote. Every read checks bounds: a record that passed its
/// checksum but is malformed all the same throws, and never traps.
struct JournalReader {
    struct Malformed: Error {}

    let bytes: [UInt8]
    private(set) var offset: Int
    /// Where the bytes to read end.
    let end: Int

    /// Reads `bytes[offset..<end]` (`end` defaults to the end of `bytes`).
    init(_ bytes: [UInt8], from offset: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        self.offset = offset
        self.end = end ?? bytes.count
    }

    var atEnd: Bool { offset >= end }

    mutating func kind() throws(Malformed) -> Effect {
        guard offset < end, let kind = Effect(rawValue: bytes[offset]) else { throw Malformed() }
        offset += 1
        return kind
    }

    mutating func field() throws(Malformed) -> [UInt8] {
        let count = Int(try integer(UInt32.self))
        guard count <= end - offset else { throw Malformed() }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(Malformed) -> T {
        let size = MemoryLayout<T>.size
        guard size <= end - offset else { throw Malformed() }
        var value = T.zero
        for i in 0..<size { value |= T(truncatingIfNeeded: bytes[offset + i]) << (8 * i) }
        offset += size
        return value
    }
}
