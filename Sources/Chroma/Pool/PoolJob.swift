import SystemPackage

/// Which of the pool's two queues a job waits in (see `BlockingPool` for the policy).
public enum BlockingLane: Sendable, Equatable {
    /// Calls that take microseconds: open, close, stat, reads and writes up to 1 MiB.
    /// Every worker serves this lane.
    case short
    /// Calls that may take milliseconds or more: fsync, big reads and writes, atomic file
    /// writes, and generic blocking work unless you say otherwise. At most
    /// `BlockingPool.Configuration.longLaneWorkers` workers run these at once, so they can
    /// never occupy the whole pool.
    case long
}

/// What the pool decided for a job that will not run.
enum PoolRefusal: Sendable {
    /// The queue was full when the job was submitted.
    case overloaded
    /// The job was cancelled while queued (by its handle, or by shutdown).
    case cancelled
}

/// One unit of work for the pool, with its completion: subclasses hold the call, its
/// result and the user's completion as plain fields, so a job costs one allocation (plus
/// its closures' captures), not a chain of wrapper closures.
///
/// Life: submitted (`queued`) → taken by one worker (`running`) → `run()` → posted to the
/// color's loop, where `complete()` calls the user's completion exactly once. Once its
/// completion is posted the pool never touches the job again, so `complete()` may restart
/// it (`FileReaderJob`). Or `queued`
/// → `cancelled` (by `BlockingJob.cancel()` or shutdown) → `refuse(.cancelled)` → posted.
/// A job whose `run()` returns false is not finished: it goes back to the long lane and
/// runs again (a whole-file read that outgrew the short lane does this); if it is refused
/// then, `refuse` releases what it holds.
class PoolJob: @unchecked Sendable {
    // Safe to share: `state`, `sequence` and `lane` are read and written only with the
    // pool's lock held (`lane` also by the worker running the job, which alone may change
    // it), except by a loop that finished the job itself before handing it out
    // (`postFinishedOnLoop`). Subclasses' results are written by the one thread that holds the job in its
    // current state (the worker running it, or the thread that refused it) before the job
    // is posted to its loop, and read there afterwards: the mailbox slot's release store
    // and the loop's acquire load of it order the two.
    // Those orderings are also why the mutable fields here and in subclasses are
    // `@exclusivity(unchecked)`: no two accesses can overlap, and the dynamic checks are a
    // real share of a loop's time per job.
    let color: Color
    /// True for user work (`Runtime.blocking`), which may wait on anything, even on the
    /// completion of an earlier job: a worker posts the completions it holds before
    /// running such a job.
    let mayWait: Bool
    @exclusivity(unchecked) var lane: BlockingLane
    @exclusivity(unchecked) var state: State = .queued
    @exclusivity(unchecked) var sequence: UInt64 = 0
    /// Where the call was made (an `EnqueueSite` word), for the completion's job; and with
    /// chains on, the chain the completion runs with. Set before the job is submitted.
    @exclusivity(unchecked) var site: UInt64 = 0
    @exclusivity(unchecked) var chain: Chain?

    enum State { case queued, running, cancelled, finished }

    init(color: Color, lane: BlockingLane, mayWait: Bool = false) {
        self.color = color
        self.lane = lane
        self.mayWait = mayWait
    }

    /// Worker thread: runs the call and keeps its result. False to continue in the long lane.
    func run() -> Bool { preconditionFailure("PoolJob.run is abstract") }

    /// Any thread, once: records the refusal as the result, without running the call.
    func refuse(_ refusal: PoolRefusal) { preconditionFailure("PoolJob.refuse is abstract") }

    /// On the job's color: hands the result to the user's completion. Exactly once.
    func complete() { preconditionFailure("PoolJob.complete is abstract") }

    /// The loop job that runs `complete()` on the job's color: a function job holding one
    /// reference to this object, released when it runs.
    final func completionJob() -> Job {
        Job(color: color.rawValue, site: site, function: { raw in
            let job = Unmanaged<PoolJob>.fromOpaque(raw!).takeRetainedValue()
            if let chain = job.chain {
                chain.run { job.complete() }
            } else {
                job.complete()
            }
        }, context: Unmanaged.passRetained(self).toOpaque())
    }

    /// For a job a loop ran itself (a read the page cache answered), before it is handed
    /// out: marks it finished (so `BlockingJob.cancel()` finds nothing to cancel) and
    /// queues its completion on its color the way the pool posts one, so the completion
    /// runs later, never inside the caller's call. Throws `.shutDown` when the color's
    /// loop has closed for shutdown; then the completion will never run.
    final func postFinishedOnLoop(_ runtime: Runtime, operation: StaticString) throws(ChromaError) {
        state = .finished
        if runtime.keepsChains { chain = Chain.forChild() }
        if !runtime.post(completionJob(), color: color.rawValue) {
            // A refused function job is ours again, with the reference it held.
            Unmanaged.passUnretained(self).release()
            throw .shutDown(operation: String(describing: operation))
        }
    }
}

/// A job on the blocking pool, as handed back by `Runtime.blocking` and the `Files` calls:
/// it can cancel the job while it still waits in the queue.
public struct BlockingJob: Sendable {
    let job: PoolJob
    let pool: BlockingPool

    /// Cancels the job if it is waiting in a queue. Returns true when it was cancelled: its
    /// completion then reports `cancelled` (on its color, soon, exactly once). Returns false
    /// when it runs or ran: its completion reports the call's result. Any thread.
    ///
    /// A whole-file read that outgrew the short lane waits a second time, for the long
    /// lane, and can be cancelled then too (it holds no descriptor while it waits).
    @discardableResult
    public func cancel() -> Bool {
        pool.cancel(job)
    }
}

/// `Runtime.blocking`: any throwing work, its result as `Result<T, any Error>`.
final class BlockingWork<T: Sendable>: PoolJob, @unchecked Sendable {
    // Safe to share: see `PoolJob`.
    private let work: @Sendable () throws -> T
    private let completion: @Sendable (Result<T, any Error>) -> Void
    private let capacity: Int
    @exclusivity(unchecked) private var result: Result<T, any Error>?

    init(color: Color, lane: BlockingLane, capacity: Int, work: @escaping @Sendable () throws -> T,
         completion: @escaping @Sendable (Result<T, any Error>) -> Void) {
        self.work = work
        self.completion = completion
        self.capacity = capacity
        super.init(color: color, lane: lane, mayWait: true)
    }

    override func run() -> Bool {
        result = Result { try work() }
        return true
    }

    override func refuse(_ refusal: PoolRefusal) {
        switch refusal {
        case .overloaded: result = .failure(ChromaError.overloaded(operation: "blocking", capacity: capacity))
        case .cancelled: result = .failure(ChromaError.cancelled(operation: "blocking"))
        }
    }

    override func complete() {
        completion(result.take().unsafelyUnwrapped)
    }
}

/// A file call that runs in one step: its result or `FileError`.
class FileJob<T: Sendable>: PoolJob, @unchecked Sendable {
    // Safe to share: see `PoolJob`.
    let operation: StaticString
    let path: FilePath?
    let descriptor: FileDescriptor?
    private let completion: Files.Completion<T>
    var result: Result<T, FileError>?

    init(_ operation: StaticString, _ lane: BlockingLane, _ color: Color, path: FilePath?, descriptor: FileDescriptor?,
         completion: @escaping Files.Completion<T>) {
        self.operation = operation
        self.path = path
        self.descriptor = descriptor
        self.completion = completion
        super.init(color: color, lane: lane)
    }

    override func refuse(_ refusal: PoolRefusal) {
        result = .failure(FileError(operation: String(describing: operation), path: path, descriptor: descriptor,
                                    code: refusal == .overloaded ? .overloaded : .cancelled))
    }

    override func complete() {
        completion(result.take().unsafelyUnwrapped)
    }
}

/// A file call given as a closure.
final class FileCallJob<T: Sendable>: FileJob<T>, @unchecked Sendable {
    // Safe to share: see `PoolJob`.
    private let call: @Sendable () throws(FileError) -> T

    init(_ operation: StaticString, _ lane: BlockingLane, _ color: Color, path: FilePath?, descriptor: FileDescriptor?,
         completion: @escaping Files.Completion<T>, call: @escaping @Sendable () throws(FileError) -> T) {
        self.call = call
        super.init(operation, lane, color, path: path, descriptor: descriptor, completion: completion)
    }

    override func run() -> Bool {
        result = Result { () throws(FileError) in try call() }
        return true
    }
}

/// `pread`, the hottest file call. Not generic, so its methods are specialized (a method
/// of a generic class runs unspecialized, looking up type metadata on every call). Its
/// buffer is allocated by the submitting thread, which is also the thread that frees it
/// after the completion: malloc's per-thread cache serves both, where a buffer allocated
/// on the worker and freed on the loop would miss that cache every time (cross-arena
/// frees on the loop).
final class PreadJob: PoolJob, @unchecked Sendable {
    // Safe to share: see `PoolJob`; `buffer` and `filled` are touched by the submitter
    // before submission (which may read part of it from the page cache first), then only
    // by the worker running the job, then by the completion (the lock and mailbox
    // handoffs order the three).
    private let fd: FileDescriptor
    private let offset: Int64
    private let count: Int
    private let completion: Files.Completion<[UInt8]>
    @exclusivity(unchecked) private var buffer: [UInt8]
    /// Bytes already in `buffer`: the part a read on the loop found cached.
    @exclusivity(unchecked) private var filled = 0
    @exclusivity(unchecked) private var failure: FileError?

    init(_ fd: FileDescriptor, offset: Int64, count: Int, lane: BlockingLane, color: Color, completion: @escaping Files.Completion<[UInt8]>) {
        self.fd = fd
        self.offset = offset
        self.count = count
        self.completion = completion
        // Bytes are claimed initialized without being written: `run` overwrites them (or
        // trims what the read did not reach) before anyone can see them.
        // (Capacity 0 would write the shared empty array's count: a race TSan reports.)
        buffer = count == 0 ? [] : ByteArray.make(count: count, ClaimedBytes())
        super.init(color: color, lane: lane)
    }

    override func run() -> Bool {
        let fd = self.fd, offset = self.offset, start = filled
        var error: Int32 = 0
        let read = buffer.withUnsafeMutableBytes { raw in
            FileCalls.preadFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[start...]), offset: offset + Int64(start), errno: &error)
        }
        finish(filled: start + read, errno: error)
        return true
    }

    /// Loop thread, before submission: reads what the page cache holds. True when that
    /// finished the read (with its bytes or its error); false when the rest needs the pool,
    /// which continues where this stopped.
    func readCached(_ reads: CachedReads) -> Bool {
        var filled = self.filled
        let outcome = buffer.withUnsafeMutableBytes { raw in
            reads.read(fd.rawValue, into: raw.baseAddress, count: count, offset: offset, filled: &filled)
        }
        self.filled = filled
        switch outcome {
        case .wouldBlock: return false
        case .done: finish(filled: filled, errno: 0)
        case .failed(let code): finish(filled: filled, errno: code)
        }
        return true
    }

    private func finish(filled: Int, errno error: Int32) {
        if error != 0 {
            failure = FileCalls.fail("read", fd: fd, errno: error)
        } else if filled < count {
            buffer.removeLast(count - filled)
        }
    }

    override func refuse(_ refusal: PoolRefusal) {
        failure = FileError(operation: "read", descriptor: fd, code: refusal == .overloaded ? .overloaded : .cancelled)
        buffer = []  // a cancelled job may wait in its queue a while; its buffer need not
    }

    override func complete() {
        if let failure {
            completion(.failure(failure))
        } else {
            // Handed over, not shared: the completion holds the only reference to the bytes.
            var bytes: [UInt8] = []
            swap(&bytes, &buffer)
            completion(.success(bytes))
        }
    }
}

/// Claims all `count` bytes written without writing them: for a buffer that is written
/// (or trimmed to what was) before anyone reads it. Bytes are trivial, so nothing leaks.
struct ClaimedBytes: ByteArraySource {
    func write(into start: UnsafeMutableRawPointer, count: Int) -> Int { count }
}
