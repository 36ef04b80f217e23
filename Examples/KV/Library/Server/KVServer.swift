import Chroma
import Synchronization

/// Where and how chroma-kv keeps its data on disk.
public struct KVStorage: Sendable {
    /// The data directory (created if missing).
    public var directory: String
    /// When the log reaches the disk (default `.everysec`, as in Redis).
    public var fsync: AppendFsync
    /// No compaction below this log size, however small the live data (default 64 MiB,
    /// Redis's `auto-aof-rewrite-min-size`).
    public var compactionFloor: Int

    public init(directory: String, fsync: AppendFsync = .everysec, compactionFloor: Int = 64 << 20) {
        self.directory = directory
        self.fsync = fsync
        self.compactionFloor = compactionFloor
    }
}

/// chroma-kv's server: a key's shard is a color, and the shard's store is touched only on
/// that color, so no lock guards any key. A connection parses on its own color, hands each
/// command to its key's shard, and puts the answers back in request order. With a
/// `KVStorage`, every change is appended to a log through the blocking pool (see
/// `AppendLog`), and a start loads the directory back.
///
/// Threads: `init` outside callbacks (it reads the data directory, blocking), once the
/// runtime has started; `listen` from any thread while it runs; `close` once it has
/// stopped. Everything else happens in callbacks on the shards' and connections' colors.
public final class KVServer: Sendable {
    let runtime: Runtime
    let shards: [Shard]
    let limits: RESPLimits
    let log: AppendLog?
    /// Whether a command for a shard on the connection's own loop, with nothing queued for
    /// it, runs at once (`Runtime.runHere`) instead of as a job.
    let runsHere: Bool
    /// What the start found in the data directory.
    public let recovery: KVRecovery

    /// A server with `shardCount` shards (default: what the data directory was written
    /// with, else 16 per loop), each on a fresh color, and a sweep per shard every 100 ms
    /// that removes expired keys nobody reads. `runsHere: false` queues every command as a
    /// job, even for a shard on the connection's own loop (to measure what the cheap path
    /// saves). Throws `ChromaError` for a bad argument or
    /// a stopped runtime, `KVStorageError` when the data directory cannot be read or its
    /// files do not fit.
    public init(runtime: Runtime, shardCount: Int? = nil, limits: RESPLimits = RESPLimits(), storage: KVStorage? = nil,
                runsHere: Bool = true) throws {
        self.runtime = runtime
        self.runsHere = runsHere
        self.limits = limits
        var found: Int?
        if let storage { found = try DataDirectory.shardCount(in: storage.directory) }
        let count = shardCount ?? found ?? 16 * runtime.loopCount
        guard count > 0 else { throw ChromaError.invalidArgument(operation: "KVServer", detail: "shardCount must be positive, not \(count)") }
        let shards = (0..<count).map { Shard(index: $0, color: runtime.makeColor()) }
        self.shards = shards
        if let storage {
            let loaded = try DataDirectory.load(storage.directory, shards: count)
            for message in loaded.messages { KVLog.write(message) }
            for (shard, (store, sequence)) in zip(shards, zip(loaded.stores, loaded.sequences)) {
                shard.store = store
                shard.store.journaling = true
                shard.sequence = sequence
                shard.liveBytes.store(store.liveBytes, ordering: .relaxed)
            }
            recovery = KVRecovery(keys: loaded.keys, messages: loaded.messages)
            let log = try AppendLog(directory: storage.directory, fsync: storage.fsync, runtime: runtime, shardCount: count,
                                    generation: loaded.nextGeneration, compactionFloor: storage.compactionFloor,
                                    liveBytes: { shards.reduce(0) { $0 + $1.liveBytes.load(ordering: .relaxed) } },
                                    compact: { log, generation in Compaction(log: log, generation: generation, shards: shards).begin() })
            self.log = log
            if storage.fsync == .everysec {
                try runtime.schedule(after: .seconds(1), repeating: .seconds(1), on: runtime.makeColor()) { log.requestSync() }
            }
        } else {
            recovery = KVRecovery(keys: 0, messages: [])
            log = nil
        }
        for shard in shards {
            try runtime.schedule(after: .milliseconds(100), repeating: .milliseconds(100), on: shard.color) { [self] in
                if shard.store.expire(now: KVClock.now(), limit: 64) > 0 { _ = record(shard) }
            }
        }
    }

    /// Listens on `port` (0: any) at `host`; every connection is served until it closes or
    /// the runtime stops.
    public func listen(host: String = "0.0.0.0", port: UInt16) throws(ChromaError) -> Listener {
        try runtime.listen(host: host, port: port) { [self] connection in
            let session = KVSession(server: self, connection: connection)
            connection.onBytes { bytes in session.received(bytes) }
        }
    }

    /// Writes what the log still holds and syncs it. Call once the runtime has stopped (no
    /// callback runs any more); throws `KVStorageError` if the last write fails.
    public func close() throws(KVStorageError) {
        try log?.close()
    }

    /// How many shards there are.
    public var shardCount: Int { shards.count }

    /// The shard that holds `key` (FNV-1a over its bytes).
    func shard(for key: [UInt8]) -> Shard {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return shards[Int(hash % UInt64(shards.count))]
    }

    /// True when writes must be refused: the log failed.
    var refusesWrites: Bool { log?.failed.load(ordering: .relaxed) ?? false }

    /// The answer to a write the log could not take (Redis's text for a failed AOF write).
    static let logFailed = RESPReply.error("MISCONF Errors writing to the AOF file; the server refuses writes")

    /// After a command ran on `shard`: appends what it changed to the log, and returns the
    /// ticket the reply must wait for (`whenDurable`), or nil if it may go at once. With
    /// `always` a reply waits until everything the shard logged so far is on disk (reads
    /// too, so no client sees a value a crash could lose). On the shard's color.
    func record(_ shard: Shard) -> Int? {
        guard let log else { return nil }
        if shard.store.hasJournal {
            shard.sequence += 1
            var record = shard.store.takeJournal()
            Record.seal(&record, shard: shard.index, sequence: shard.sequence)
            shard.lastTicket = log.append(record)
            shard.liveBytes.store(shard.store.liveBytes, ordering: .relaxed)
        }
        guard log.waitsForDisk, log.durable.load(ordering: .acquiring) < shard.lastTicket else { return nil }
        return shard.lastTicket
    }

    /// Calls `deliver` once the log is on disk up to `ticket` (`true`), or has failed
    /// (`false`). Any thread; `deliver` may run on a pool worker.
    func whenDurable(_ ticket: Int, _ deliver: @escaping @Sendable (Bool) -> Void) {
        guard let log else { return deliver(true) }
        log.whenDurable(ticket, deliver)
    }
}

/// What a server's start found in its data directory.
public struct KVRecovery: Sendable {
    /// Keys loaded (expired ones not yet removed included).
    public let keys: Int
    /// What an operator should hear of, also written to standard error: a torn tail cut off.
    public let messages: [String]
}

/// One shard: its color, its store, and its place in the log.
final class Shard: @unchecked Sendable {
    // Safe to share: `store`, `sequence` and `lastTicket` are touched only in callbacks of
    // `color`, which never overlap (and by `KVServer.init` before any callback can run);
    // `liveBytes` is atomic.
    let index: Int
    let color: Color
    var store = ShardStore()
    /// The sequence number of the shard's last record.
    var sequence: UInt64 = 0
    /// The log ticket of the shard's last record.
    var lastTicket = 0
    /// `store.liveBytes` as of the last record, for the log's compaction check.
    let liveBytes = Atomic<Int>(0)
    /// Jobs of this server's queued for `color` and not yet started: while any is, a
    /// command must queue behind it rather than run at once (`KVSession.visit`).
    let queued = Atomic<Int>(0)

    init(index: Int, color: Color) {
        self.index = index
        self.color = color
    }
}
