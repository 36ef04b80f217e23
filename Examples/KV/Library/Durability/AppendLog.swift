@_spi(Engine) import Chroma
import Glibc
import Synchronization

/// When the append-only log reaches the disk, as Redis's `appendfsync` says.
public enum AppendFsync: String, Sendable, CaseIterable {
    /// A write is acknowledged only once its record is on disk (`fdatasync` returned).
    /// Writes that arrive while one `fdatasync` runs share the next (group commit).
    case always
    /// Records reach the kernel as soon as a pool worker can write them; `fdatasync` runs
    /// once a second. A crash of the process loses nothing the kernel has; a crash of the
    /// machine loses about the last second.
    case everysec
    /// Records reach the kernel as soon as a pool worker can write them; the kernel decides
    /// when they reach the disk.
    case no
}

/// The append-only log every shard writes its changes to, and its group commit.
///
/// One log for all shards (each record names its shard and carries the shard's sequence
/// number), so one `fdatasync` makes every shard's pending writes durable at once: with
/// `always`, the disk sees one flush per batch, not one per shard.
///
/// Threads: `append` and `whenDurable` from any shard's callback; the writing itself is one
/// pool job at a time (`flushing`), which is the only code that touches the file, so
/// records reach the file in the order appended. Compaction (`Compaction`) is started by
/// that job.
final class AppendLog: @unchecked Sendable {
    // Safe to share: the mutable state is in `shared` (under `lock`) or `durable` (atomic), or
    // the `file` fields, which only the one running flush job touches (`flushing`).
    let directory: String
    let fsync: AppendFsync
    let runtime: Runtime
    let shardCount: Int
    /// A log this many bytes past the live data's size (twice it, at least) is compacted.
    let compactionFloor: Int

    struct Waiter {
        var ticket: Int
        var deliver: @Sendable (Bool) -> Void
    }

    struct State {
        /// Sealed records appended and not yet written.
        var pending: [UInt8] = []
        /// Bytes ever appended (the ticket of the last record appended).
        var appended = 0
        var waiters: [Waiter] = []
        /// A flush job is queued or running.
        var flushing = false
        /// An `fdatasync` was asked for (everysec's timer, shutdown).
        var syncRequested = false
        /// Bytes written since the last `fdatasync`.
        var unsynced = 0
        var compacting = false
    }

    // A pthread lock (`EngineLock`), which ThreadSanitizer sees, unlike `Mutex`.
    private let lock = EngineLock()
    private var shared = State()

    /// Runs `body` on the shared state, under the lock. Any thread.
    private func withState<T>(_ body: (inout State) -> T) -> T {
        lock.withLock { body(&shared) }
    }
    /// Bytes appended that are on disk (`always`) or written (other modes): a ticket not
    /// above it needs no wait.
    let durable = Atomic<Int>(0)
    /// The live data's size, as the shards last published it.
    let liveBytes: @Sendable () -> Int
    /// Starts a compaction of generation `generation` (the new log's), given the log.
    let compact: @Sendable (AppendLog, Int) -> Void
    /// Set once the log failed: writes are refused.
    let failed = Atomic<Bool>(false)

    // Touched only by the running flush job (and `open`/`close`, when none can run).
    private var file: Int32 = -1
    private var path = ""
    private(set) var generation = 0
    private var fileBytes = 0

    init(directory: String, fsync: AppendFsync, runtime: Runtime, shardCount: Int, generation: Int,
         compactionFloor: Int, liveBytes: @escaping @Sendable () -> Int,
         compact: @escaping @Sendable (AppendLog, Int) -> Void) throws(KVStorageError) {
        self.compact = compact
        self.directory = directory
        self.fsync = fsync
        self.runtime = runtime
        self.shardCount = shardCount
        self.compactionFloor = compactionFloor
        self.liveBytes = liveBytes
        try start(generation: generation)
    }

    /// Opens the log of `generation`, header written and on disk. Flush job (or init) only.
    private func start(generation: Int) throws(KVStorageError) {
        let path = directory + "/" + DataDirectory.logName(generation)
        let fd = try DataFile.open(path, flags: O_WRONLY | O_CREAT | O_EXCL | O_APPEND)
        do {
            let header = Record.fileHeader(shards: shardCount, generation: generation)
            try DataFile.write(fd, header, path: path)
            try DataFile.syncData(fd, path: path)
            try DataFile.syncDirectory(directory)
            fileBytes = header.count
        } catch {
            Glibc.close(fd)
            throw error
        }
        if file >= 0 { Glibc.close(file) }
        file = fd
        self.path = path
        self.generation = generation
    }

    /// Without `always`, a flush job that starts on less than this waits `batchPause` µs.
    static let batchBytes = 64 << 10
    static let batchPause: UInt32 = 500

    /// True when a reply must wait for `whenDurable`.
    var waitsForDisk: Bool { fsync == .always }


    /// Appends a sealed record; returns its ticket. Any thread.
    func append(_ record: [UInt8]) -> Int {
        let (ticket, start) = withState { state -> (Int, Bool) in
            state.pending.append(contentsOf: record)
            state.appended += record.count
            let start = !state.flushing && !failed.load(ordering: .relaxed)
            if start { state.flushing = true }
            return (state.appended, start)
        }
        if start { startFlush() }
        return ticket
    }

    /// Calls `deliver(true)` once every record up to `ticket` is durable, or `deliver(false)`
    /// if the log failed first: at once when it already is, else from the flush job. Any thread.
    func whenDurable(_ ticket: Int, _ deliver: @escaping @Sendable (Bool) -> Void) {
        if durable.load(ordering: .acquiring) >= ticket { return deliver(true) }
        let now: Bool? = withState { state in
            if failed.load(ordering: .relaxed) { return false }
            if durable.load(ordering: .acquiring) >= ticket { return true }
            state.waiters.append(Waiter(ticket: ticket, deliver: deliver))
            return nil
        }
        if let now { deliver(now) }
    }

    /// Asks for an `fdatasync` of what was written (everysec's timer). Any thread.
    func requestSync() {
        let start = withState { state -> Bool in
            guard state.unsynced > 0 || !state.pending.isEmpty, !failed.load(ordering: .relaxed) else { return false }
            state.syncRequested = true
            let start = !state.flushing
            if start { state.flushing = true }
            return start
        }
        if start { startFlush() }
    }

    private func startFlush() {
        do {
            try runtime.blocking(lane: .long) { [self] in flush() } completion: { _ in }
        } catch {
            // Stopping: `close()` writes what is pending.
            withState { $0.flushing = false }
        }
    }

    /// The flush job: writes batches until none is pending; with `always`, each batch is
    /// synced before its writers hear of it. Pool worker, one at a time.
    private func flush() {
        // Without `always` nobody waits for the write: a job that starts on a small batch
        // lets it grow for a moment first, so the kernel sees fewer, larger writes and the
        // loops start fewer jobs (a few hundred microseconds more of records a kill could
        // lose). Only at the start: a job that kept pausing would hold its pool worker for
        // as long as writes come, and a compaction's snapshot would wait behind it.
        if fsync != .always && withState({ $0.pending.count < Self.batchBytes && !$0.syncRequested }) {
            usleep(Self.batchPause)
        }
        while true {
            let (batch, end, sync) = withState { state -> ([UInt8], Int, Bool) in
                let sync = state.syncRequested || (fsync == .always && !state.pending.isEmpty)
                if state.pending.isEmpty && !sync { state.flushing = false }
                defer {
                    state.pending = []
                    state.syncRequested = false
                }
                return (state.pending, state.appended, sync)
            }
            if batch.isEmpty && !sync { return }
            do {
                try DataFile.write(file, batch, path: path)
                fileBytes += batch.count
                if sync { try DataFile.syncData(file, path: path) }
            } catch {
                fail(error.description)
                return
            }
            durable.store(end, ordering: .releasing)
            let ready = withState { state -> [Waiter] in
                state.unsynced = sync ? 0 : state.unsynced + batch.count
                var ready: [Waiter] = []
                state.waiters.removeAll { waiter in
                    guard waiter.ticket <= end else { return false }
                    ready.append(waiter)
                    return true
                }
                return ready
            }
            for waiter in ready { waiter.deliver(true) }
            if shouldCompact() {
                do {
                    // The old log is whole on disk before records go to the new one: a
                    // crash must never keep later records and lose earlier ones.
                    try DataFile.syncData(file, path: path)
                    try start(generation: generation + 1)
                } catch {
                    fail(error.description)
                    return
                }
                compact(self, generation)
            }
        }
    }

    private func shouldCompact() -> Bool {
        guard fileBytes > compactionFloor, fileBytes > 2 * liveBytes() else { return false }
        return withState { state in
            guard !state.compacting else { return false }
            state.compacting = true
            return true
        }
    }

    /// A compaction ended (written, or failed and logged).
    func compactionEnded() {
        withState { $0.compacting = false }
    }

    /// After a failed write or sync the file's state is unknown (a failed fsync may have
    /// dropped the dirty pages), so the log refuses all further writes.
    private func fail(_ reason: String) {
        let waiters = withState { state -> [Waiter] in
            failed.store(true, ordering: .relaxed)
            state.flushing = false
            defer { state.waiters = [] }
            return state.waiters
        }
        KVLog.write("\(reason); refusing writes from now on")
        for waiter in waiters { waiter.deliver(false) }
    }

    /// Writes and syncs what is pending, then closes the file: after the runtime stopped, so
    /// no flush job runs. Throws if the last write fails.
    func close() throws(KVStorageError) {
        let (batch, broken) = withState { state -> ([UInt8], Bool) in
            defer { state.pending = [] }
            return (state.pending, failed.load(ordering: .relaxed))
        }
        guard file >= 0 else { return }
        defer {
            Glibc.close(file)
            file = -1
        }
        guard !broken else { return }
        try DataFile.write(file, batch, path: path)
        try DataFile.syncData(file, path: path)
    }
}

/// chroma-kv's operator messages, on standard error.
enum KVLog {
    static func write(_ line: String) {
        var text = line
        if !text.hasPrefix("chroma-kv") { text = "chroma-kv: " + text }
        text += "\n"
        _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
    }
}
