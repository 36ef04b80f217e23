/// What a data directory holds, and how a start reads it back.
///
/// Files are numbered by generation: `log-G.ckv` holds the records appended from the moment
/// generation G began, and `snapshot-G.ckv` every shard's state at some moment after that,
/// with each shard's last sequence number. A snapshot is written as `snapshot-G.tmp` and
/// renamed once complete and on disk, so a snapshot file is always whole.
///
/// Loading takes the newest snapshot S (if any), then replays every log of generation ≥ S
/// in order, skipping a shard's records that the snapshot already holds (sequence ≤ the
/// snapshot's). That is right wherever a compaction stopped: before the rename, the older
/// snapshot and all logs since are there; after it, files older than S are merely left over
/// and are removed.
enum DataDirectory {
    static func logName(_ generation: Int) -> String { "log-\(generation).ckv" }
    static func snapshotName(_ generation: Int) -> String { "snapshot-\(generation).ckv" }
    static func temporaryName(_ generation: Int) -> String { "snapshot-\(generation).tmp" }

    /// The generation in a file name of `kind` ("log" or "snapshot"), or nil.
    static func generation(of name: String, kind: String) -> Int? {
        guard name.hasPrefix(kind + "-"), name.hasSuffix(".ckv") else { return nil }
        return Int(name.dropFirst(kind.count + 1).dropLast(4))
    }

    /// The state found in `directory` (created if missing).
    struct Loaded {
        var stores: [ShardStore]
        var sequences: [UInt64]
        /// The generation the next log starts (above every file found).
        var nextGeneration: Int
        /// Keys loaded, over all shards.
        var keys: Int { stores.reduce(0) { $0 + $1.count } }
        /// What loading did that an operator should hear of (a torn tail cut off).
        var messages: [String] = []
    }

    /// The shard count the directory was written with, if it holds any file.
    static func shardCount(in directory: String) throws(KVStorageError) -> Int? {
        let names = try DataFile.list(directory)
        let files = names.compactMap { name in
            generation(of: name, kind: "snapshot").map { ($0, name) } ?? generation(of: name, kind: "log").map { ($0, name) }
        }
        guard let (_, name) = files.max(by: { $0.0 < $1.0 }) else { return nil }
        let path = directory + "/" + name
        let bytes = try DataFile.read(path)
        let (payloads, _) = Record.scan(bytes)
        guard let first = payloads.first, let header = Record.parseHeader(bytes[first]) else {
            // A log torn inside its own header holds nothing; any other file must have one.
            if generation(of: name, kind: "log") != nil && payloads.isEmpty { return nil }
            throw KVStorageError("read", path, reason: "not a chroma-kv file (no header record)")
        }
        return header.shards
    }

    /// Reads `directory` back for `shards` shards. Cuts a torn tail off the newest log (the
    /// one a crash can leave half written) and says so in `messages`; throws for damage
    /// anywhere else, or files written with another shard count.
    static func load(_ directory: String, shards: Int) throws(KVStorageError) -> Loaded {
        let names = try DataFile.list(directory)
        for name in names where name.hasSuffix(".tmp") {
            try DataFile.remove(directory + "/" + name)  // a compaction that did not finish
        }
        let snapshots = names.compactMap { generation(of: $0, kind: "snapshot") }.sorted()
        let logs = names.compactMap { generation(of: $0, kind: "log") }.sorted()
        var loaded = Loaded(stores: Array(repeating: ShardStore(), count: shards),
                            sequences: Array(repeating: 0, count: shards),
                            nextGeneration: max(snapshots.last ?? 0, logs.last ?? 0) + 1)
        let base = snapshots.last ?? 0
        if let base = snapshots.last {
            let path = directory + "/" + snapshotName(base)
            let bytes = try DataFile.read(path)
            let (payloads, goodEnd) = Record.scan(bytes)
            guard goodEnd == bytes.count, payloads.count >= 2, bytes[payloads.last!].elementsEqual(snapshotEnd) else {
                throw KVStorageError("load", path, reason: "damaged snapshot (bad record at byte \(goodEnd))")
            }
            try check(header: bytes, payloads, path: path, shards: shards)
            try replay(bytes, payloads.dropFirst().dropLast(), into: &loaded, path: path, skippingKnown: false)
        }
        for (index, generation) in logs.enumerated() where generation >= base {
            let path = directory + "/" + logName(generation)
            let bytes = try DataFile.read(path)
            let (payloads, goodEnd) = Record.scan(bytes)
            if goodEnd < bytes.count {
                guard index == logs.count - 1 else {
                    throw KVStorageError("load", path, reason: "damaged record at byte \(goodEnd) of \(bytes.count), in a log that is not the newest")
                }
                try DataFile.truncate(path, to: goodEnd)
                loaded.messages.append("chroma-kv: \(path): cut off a torn tail of \(bytes.count - goodEnd) bytes at byte \(goodEnd) (\(max(payloads.count - 1, 0)) records kept)")
            }
            guard !payloads.isEmpty else { continue }  // torn inside its header: empty
            try check(header: bytes, payloads, path: path, shards: shards)
            try replay(bytes, payloads.dropFirst(), into: &loaded, path: path, skippingKnown: true)
        }
        for generation in snapshots where generation < base { try DataFile.remove(directory + "/" + snapshotName(generation)) }
        for generation in logs where generation < base { try DataFile.remove(directory + "/" + logName(generation)) }
        return loaded
    }

    /// The payload of a snapshot's last record: the snapshot is whole.
    static let snapshotEnd: [UInt8] = Array("chroma-kv snapshot end".utf8)

    private static func check(header bytes: [UInt8], _ payloads: [Range<Int>], path: String, shards: Int) throws(KVStorageError) {
        guard let header = Record.parseHeader(bytes[payloads[0]]) else {
            throw KVStorageError("load", path, reason: "not a chroma-kv file (no header record)")
        }
        guard header.shards == shards else {
            throw KVStorageError("load", path, reason: "written with \(header.shards) shards, not \(shards); start with --shards \(header.shards)")
        }
    }

    private static func replay(_ bytes: [UInt8], _ payloads: some Collection<Range<Int>>, into loaded: inout Loaded,
                               path: String, skippingKnown: Bool) throws(KVStorageError) {
        for payload in payloads {
            var reader = JournalReader(bytes, from: payload.lowerBound, to: payload.upperBound)
            guard let shard = try? reader.integer(UInt32.self), let sequence = try? reader.integer(UInt64.self),
                  Int(shard) < loaded.stores.count else {
                throw KVStorageError("load", path, reason: "malformed record at byte \(payload.lowerBound - 8)")
            }
            let index = Int(shard)
            if skippingKnown && sequence <= loaded.sequences[index] { continue }
            do {
                try loaded.stores[index].replay(&reader)
            } catch {
                throw KVStorageError("load", path, reason: "malformed effects in the record at byte \(payload.lowerBound - 8)")
            }
            loaded.sequences[index] = max(loaded.sequences[index], sequence)
        }
    }
}
