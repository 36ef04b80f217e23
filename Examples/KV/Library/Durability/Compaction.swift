@_spi(Engine) import Chroma
import Glibc

/// One compaction: every shard's store, copied on its own color (copy on write: the copy
/// costs nothing until the shard next changes a key), written on the pool as
/// `snapshot-G.tmp`, synced, renamed to `snapshot-G.ckv`, then the files it replaces
/// removed. The log of generation G was started before any shard was copied, so every
/// record a copy lacks is in it (see `DataDirectory`).
///
/// Threads: `begin` from the flush job; each copy on its shard's color; the writing on a
/// pool worker.
final class Compaction: @unchecked Sendable {
    // Safe to share: `parts` is touched only under `lock`; the rest is immutable.
    private let log: AppendLog
    private let generation: Int
    private let shards: [Shard]
    private let lock = EngineLock()
    private var parts: (stores: [(ShardStore, UInt64)?], left: Int)

    /// Records of a snapshot hold about this many bytes of effects each.
    static let recordBytes = 64 << 10

    init(log: AppendLog, generation: Int, shards: [Shard]) {
        self.log = log
        self.generation = generation
        self.shards = shards
        parts = (Array(repeating: nil, count: shards.count), shards.count)
    }

    func begin() {
        for (index, shard) in shards.enumerated() {
            do {
                try log.runtime.execute(on: shard.color) { [self] in
                    // On the shard's color: its last record is appended, so `sequence` names it.
                    deliver(index, shard.store, shard.sequence)
                }
            } catch {
                log.compactionEnded()  // stopping; the next start replays the logs
                return
            }
        }
    }

    private func deliver(_ index: Int, _ store: ShardStore, _ sequence: UInt64) {
        let complete = lock.withLock { () -> [(ShardStore, UInt64)]? in
            parts.stores[index] = (store, sequence)
            parts.left -= 1
            return parts.left == 0 ? parts.stores.map { $0! } : nil
        }
        guard let complete else { return }
        do {
            try log.runtime.blocking(lane: .long) { [self] in
                try write(complete)
            } completion: { [log] result in
                if case .failure(let error) = result { KVLog.write("compaction failed: \(error); the log keeps growing") }
                log.compactionEnded()
            }
        } catch {
            log.compactionEnded()
        }
    }

    /// Writes the snapshot and removes what it replaces. Pool worker.
    private func write(_ stores: [(ShardStore, UInt64)]) throws(KVStorageError) {
        let directory = log.directory
        let temporary = directory + "/" + DataDirectory.temporaryName(generation)
        let fd = try DataFile.open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC)
        do {
            var out = Record.fileHeader(shards: shards.count, generation: generation)
            for (index, (store, sequence)) in stores.enumerated() {
                var record = JournalWriter.reserving(Record.headerSize)
                func seal() {
                    Record.seal(&record.bytes, shard: index, sequence: sequence)
                    out.append(contentsOf: record.bytes)
                    record = .reserving(Record.headerSize)
                }
                store.forEachEntry { key, value, deadline in
                    switch value {
                    case .string(let bytes):
                        record.effect(.set, key)
                        record.field(bytes)
                    case .list(let items):
                        record.effect(.list, key)
                        record.items(items)
                    }
                    if let deadline {
                        record.effect(.deadline, key)
                        record.integer(KVClock.wall(deadline))
                    }
                    if record.bytes.count >= Self.recordBytes { seal() }
                }
                // Every shard gets a record, empty or not: it carries the shard's sequence.
                seal()
                if out.count >= 1 << 20 {
                    try DataFile.write(fd, out, path: temporary)
                    out.removeAll(keepingCapacity: true)
                }
            }
            out.append(contentsOf: Record.sealed(payload: DataDirectory.snapshotEnd))
            try DataFile.write(fd, out, path: temporary)
            try DataFile.syncData(fd, path: temporary)
            close(fd)
        } catch {
            close(fd)
            try? DataFile.remove(temporary)
            throw error
        }
        try DataFile.rename(temporary, to: directory + "/" + DataDirectory.snapshotName(generation))
        try DataFile.syncDirectory(directory)
        for name in try DataFile.list(directory) {
            let older = (DataDirectory.generation(of: name, kind: "log") ?? .max) < generation
                || (DataDirectory.generation(of: name, kind: "snapshot") ?? .max) < generation
            if older { try DataFile.remove(directory + "/" + name) }
        }
    }
}
