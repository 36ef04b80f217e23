/// The framing of every record in chroma-kv's files (log and snapshot alike):
///
///     length  UInt32 LE   bytes of payload
///     crc     UInt32 LE   CRC-32C of payload
///     payload shard (UInt32 LE), sequence (UInt64 LE), effects (`Journal`)
///
/// A file begins with a header record whose payload is `Record.fileMagic`, the shard count
/// and the file's generation. A record whose length runs past the end of the file, or whose
/// checksum does not match, is where a write was cut off by a crash: everything from it on
/// is the torn tail.
enum Record {
    /// Bytes before the effects: length, crc, shard, sequence.
    static let headerSize = 20
    /// No record is larger (a bigger length is damage, not data).
    static let maxPayload = 1 << 30
    static let fileMagic: [UInt8] = Array("chroma-kv 1".utf8)

    /// Fills in the header of `record`, whose first `headerSize` bytes were reserved and
    /// whose effects follow.
    static func seal(_ record: inout [UInt8], shard: Int, sequence: UInt64) {
        precondition(record.count >= headerSize, "a record reserves its header")
        let length = UInt32(record.count - 8)
        record.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: length.littleEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: UInt32(shard).littleEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: sequence.littleEndian, toByteOffset: 12, as: UInt64.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[8...]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: 4, as: UInt32.self)
        }
    }

    /// A sealed record carrying `payload` as it is (headers of files).
    static func sealed(payload: [UInt8]) -> [UInt8] {
        var record = [UInt8](repeating: 0, count: 8)
        record.append(contentsOf: payload)
        record.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: 0, as: UInt32.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[8...]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: 4, as: UInt32.self)
        }
        return record
    }

    /// A file's header record.
    static func fileHeader(shards: Int, generation: Int) -> [UInt8] {
        var payload = JournalWriter()
        payload.bytes = fileMagic
        payload.integer(UInt32(shards))
        payload.integer(UInt64(generation))
        return sealed(payload: payload.bytes)
    }

    /// The shard count and generation in a header record's payload, or nil if it is not one.
    static func parseHeader(_ payload: ArraySlice<UInt8>) -> (shards: Int, generation: Int)? {
        guard payload.count == fileMagic.count + 12, payload.starts(with: fileMagic) else { return nil }
        var reader = JournalReader(Array(payload), from: fileMagic.count)
        guard let shards = try? reader.integer(UInt32.self), let generation = try? reader.integer(UInt64.self) else { return nil }
        return (Int(shards), Int(generation))
    }

    /// The records of `bytes` in order, each as the range of its payload, and the offset
    /// where the good records end (`bytes.count` unless the tail is torn).
    static func scan(_ bytes: [UInt8]) -> (payloads: [Range<Int>], goodEnd: Int) {
        var payloads: [Range<Int>] = []
        var offset = 0
        bytes.withUnsafeBytes { raw in
            while raw.count - offset >= 8 {
                let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                let crc = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
                guard length <= maxPayload, length <= raw.count - offset - 8 else { return }
                let payload = (offset + 8)..<(offset + 8 + length)
                guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[payload])) == crc else { return }
                payloads.append(payload)
                offset = payload.upperBound
            }
        }
        return (payloads, offset)
    }
}

/// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 metadata and LevelDB's log; a table of
/// 256 entries, one byte a step.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int(UInt8(truncatingIfNeeded: crc) ^ byte)] ^ (crc >> 8) }
        }
        return crc ^ 0xFFFF_FFFF
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }
}
