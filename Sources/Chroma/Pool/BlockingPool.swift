import CChroma
import DequeModule
import Glibc

/// Worker threads that run blocking calls (disk I/O, or any call that blocks) and post each
/// result back to the submitting color's loop: libasync's aiod and libuv's thread pool.
///
/// - **Bounded.** At most `queueCapacity` jobs wait. A job submitted to a full queue is not
///   queued: its completion reports `overloaded` at once (on its color, through the loop,
///   never inline and never by blocking the submitter). No job is ever dropped.
/// - **Wake-one.** Each worker sleeps on its own condition variable. A new job wakes one
///   idle worker, chosen by the submitter, and only if one is idle: a busy pool takes new
///   jobs without any wakeup, and no herd of workers races for one job.
/// - **Batched completions.** Workers post completions into the loop's mailbox, where only
///   a post that finds the loop asleep wakes it: a burst of completions costs the loop one
///   wakeup at most and runs in one drain.
/// - **Two lanes.** Short calls (stat, open, 4 KiB reads) and long ones (fsync, big reads,
///   atomic writes) wait in separate FIFO queues. Workers take the oldest job of either
///   lane, except that at most `longLaneWorkers` run long jobs at once: with more workers
///   than that (the default for two or more), the others always serve the short lane, so a
///   burst of fsyncs cannot starve a stat. (libuv learned
///   this the hard way: slow DNS lookups and fs calls once filled its whole pool; it now
///   caps its "slow I/O" class at half the threads.) A whole-file read starts short and,
///   past 1 MiB, continues in the long lane.
/// - **Cancellation.** A job still queued can be cancelled (`BlockingJob.cancel()`); its
///   completion reports `cancelled`. A running job always finishes.
/// - **Shutdown.** `Runtime.stop()` closes the pool: later submissions throw `.shutDown`,
///   queued jobs complete with `cancelled`, running ones finish, and every completion runs
///   before the loops exit. Every accepted job gets exactly one completion.
///
/// Workers start lazily, one per job that finds no idle worker, up to `workers`. If no
/// worker exists and none can be started, the job completes with `overloaded`.
///
/// Threading: every method may be called from any thread.
public final class BlockingPool: @unchecked Sendable {
    // Safe to share: every mutable field is read and written with `lock` held, except
    // `configuration` and `cachedReads` (immutable; the latter thread-safe itself), and
    // `runtime` (set once by the runtime's init, before any thread starts, and alive while
    // any worker runs: each worker thread holds a strong reference). The lock is also why the
    // fields are `@exclusivity(unchecked)`: accesses cannot overlap, and the dynamic checks
    // were a measurable share of each job's cost.

    /// The pool's size and limits, and which reads skip it.
    public struct Configuration: Sendable, Equatable {
        /// Worker threads, at most. Default: max(2, online CPUs).
        public var workers: Int
        /// Jobs that may wait in the queue (both lanes together). Default 4,096.
        public var queueCapacity: Int
        /// Workers that may run long-lane jobs at once. Default: max(1, workers / 2).
        public var longLaneWorkers: Int
        /// Whether file reads made on a loop first try the page cache right there, with no
        /// pool job: descriptor reads (`RWF_NOWAIT`) and whole-file reads (a cached open,
        /// `fstat`, and such a read). Only a read that needs the device goes to the pool.
        /// Completions are the same either way: queued on the caller's color, never run
        /// inside the call. Default true; off by itself on kernels without `RWF_NOWAIT`.
        public var cachedReads: Bool
        /// The largest read tried on the loop, in bytes; bigger ones go to the pool.
        /// Default 64 KiB, at most 1 MiB.
        public var cachedReadMaxBytes: Int
        /// The bytes each loop may read on the loop per pass (a drain's batch of callbacks,
        /// or one socket or timer callback; each read counts at least 4 KiB); past that,
        /// reads go to the pool for the rest of the pass, so the loop gets back to its
        /// sockets. Default 16 MiB: as many 4 KiB reads as a drain runs callbacks anyway,
        /// so only bigger reads meet it. At least `cachedReadMaxBytes`.
        public var cachedReadBytesPerPass: Int

        /// The defaults, with any of them overridden.
        public init(workers: Int = max(2, Runtime.onlineCPUCount), queueCapacity: Int = 4096, longLaneWorkers: Int? = nil,
                    cachedReads: Bool = true, cachedReadMaxBytes: Int = 64 << 10, cachedReadBytesPerPass: Int = 16 << 20) {
            self.workers = workers
            self.queueCapacity = queueCapacity
            self.longLaneWorkers = longLaneWorkers ?? max(1, workers / 2)
            self.cachedReads = cachedReads
            self.cachedReadMaxBytes = cachedReadMaxBytes
            self.cachedReadBytesPerPass = cachedReadBytesPerPass
        }

        func validate() throws(ChromaError) {
            guard workers >= 1, workers <= 4096 else {
                throw .invalidArgument(operation: "BlockingPool", detail: "workers must be in 1...4096, got \(workers)")
            }
            guard queueCapacity >= 1 else {
                throw .invalidArgument(operation: "BlockingPool", detail: "queueCapacity must be at least 1, got \(queueCapacity)")
            }
            guard longLaneWorkers >= 1, longLaneWorkers <= workers else {
                throw .invalidArgument(operation: "BlockingPool",
                                       detail: "longLaneWorkers must be in 1...workers (\(workers)), got \(longLaneWorkers)")
            }
            guard cachedReadMaxBytes >= 0, cachedReadMaxBytes <= FileCalls.shortLaneBytes else {
                throw .invalidArgument(operation: "BlockingPool",
                                       detail: "cachedReadMaxBytes must be in 0...\(FileCalls.shortLaneBytes), got \(cachedReadMaxBytes)")
            }
            guard cachedReadBytesPerPass >= max(cachedReadMaxBytes, CachedReads.minimumCost) else {
                throw .invalidArgument(operation: "BlockingPool",
                                       detail: "cachedReadBytesPerPass must be at least cachedReadMaxBytes and 4096, got \(cachedReadBytesPerPass)")
            }
        }
    }

    /// The size and limits this pool was made with.
    public let configuration: Configuration
    /// Set once by the runtime at the end of its init, before any submission.
    unowned(unsafe) private(set) var runtime: Runtime!
    /// Reads answered from the page cache on the loop.
    let cachedReads: CachedReads

    private let lock = Lock(adaptive: true)
    @exclusivity(unchecked) private var short = Deque<PoolJob>()
    @exclusivity(unchecked) private var long = Deque<PoolJob>()
    /// Jobs queued and not cancelled (cancelled ones stay in the deques until a worker
    /// passes them, but no longer count).
    @exclusivity(unchecked) private var queued = 0
    @exclusivity(unchecked) private var nextSequence: UInt64 = 0
    @exclusivity(unchecked) private var longRunning = 0
    /// Jobs accepted (or refused as overloaded) whose completion is not yet in a mailbox.
    @exclusivity(unchecked) private var unposted = 0
    @exclusivity(unchecked) private var closed = false
    @exclusivity(unchecked) private var workers: [Worker] = []
    @exclusivity(unchecked) private var idle: [Worker] = []
    @exclusivity(unchecked) private var cancelledAtShutdown = 0
    /// Cancelled jobs still in the deques.
    @exclusivity(unchecked) private var tombstones = 0
    /// Returns from a worker's condition wait: with wake-one signalling, one per job
    /// that found an idle worker (tests check there is no herd).
    @exclusivity(unchecked) private var wakeups = 0
    /// Jobs submitted, refused ones included (tests check that a cached read made none).
    @exclusivity(unchecked) private var submissions = 0
    /// For `statistics`: jobs a worker is running, jobs run to their end, jobs refused as
    /// overloaded, jobs cancelled (by `cancel()` or at shutdown).
    @exclusivity(unchecked) private var running = 0
    @exclusivity(unchecked) private var completed = 0
    @exclusivity(unchecked) private var overloadedJobs = 0
    @exclusivity(unchecked) private var cancelledJobs = 0

    init(configuration: Configuration) {
        self.configuration = configuration
        cachedReads = CachedReads(configuration: configuration)
    }

    func attach(_ runtime: Runtime) {
        self.runtime = runtime
        cachedReads.attach(runtime)
    }

    private final class Worker: @unchecked Sendable {
        // Safe to share: `woken` is guarded by the pool's lock; `thread` is written by the
        // spawner under the lock and read by `join` after the pool closed.
        let index: Int
        let wake = Condition()
        @exclusivity(unchecked) var woken = false
        var thread: pthread_t?
        init(index: Int) { self.index = index }
    }

    // MARK: Submitting

    /// Queues `job`, or completes it with `overloaded` when the queue is full. Throws
    /// `.shutDown` once the runtime is stopping: then the job was not accepted and will
    /// never complete.
    func submit(_ job: PoolJob, operation: StaticString) throws(ChromaError) {
        if runtime.keepsChains { job.chain = Chain.forChild() }
        lock.lock()
        if closed {
            lock.unlock()
            throw .shutDown(operation: String(describing: operation))
        }
        unposted += 1
        submissions += 1
        if queued >= configuration.queueCapacity {
            overloadedJobs += 1
            lock.unlock()
            job.state = .finished
            job.refuse(.overloaded)
            post(job)
            return
        }
        job.sequence = nextSequence
        nextSequence &+= 1
        queued += 1
        if job.lane == .short { short.append(job) } else { long.append(job) }
        // Wake a worker only if one could take this job now: a long job beyond the cap waits
        // for a running long job's worker, which takes it when it finishes.
        if job.lane == .short || longRunning < configuration.longLaneWorkers {
            if let worker = idle.popLast() {
                worker.woken = true
                worker.wake.signal()
            } else if workers.count < configuration.workers && !spawnWorker() && workers.isEmpty {
                // No thread could be started and none exists to run the job: refuse it
                // rather than leave it waiting for a worker that may never come.
                if job.lane == .short { short.removeLast() } else { long.removeLast() }
                queued -= 1
                overloadedJobs += 1
                job.state = .finished
                lock.unlock()
                job.refuse(.overloaded)
                post(job)
                return
            }
        }
        lock.unlock()
    }

    /// Cancels `job` if it is still queued. Any thread.
    func cancel(_ job: PoolJob) -> Bool {
        lock.lock()
        guard job.state == .queued else {
            lock.unlock()
            return false
        }
        job.state = .cancelled
        queued -= 1
        cancelledJobs += 1
        tombstones += 1
        // Cancelled jobs stay in their deque until a worker passes them; when they outnumber
        // the live ones (a lane at its cap, cancelled over and over), sweep them out.
        if tombstones > 64 && tombstones > queued {
            short.removeAll { $0.state != .queued }
            long.removeAll { $0.state != .queued }
            tombstones = 0
        }
        lock.unlock()
        job.refuse(.cancelled)
        post(job)
        return true
    }

    /// Hands a finished job to its color's loop and counts it posted.
    private func post(_ job: PoolJob) {
        let queuedOnLoop = runtime.post(job.completionJob(), color: job.color.rawValue)
        // The loops wait for `unposted` to reach zero before they close their mailboxes.
        precondition(queuedOnLoop, "a pool completion was refused: the loops closed before the pool drained")
        lock.lock()
        unposted -= 1
        let last = unposted == 0 && closed
        lock.unlock()
        if last { wakeLoops() }
    }

    // MARK: Workers

    /// With the lock held: starts one more worker thread. False if the thread could not be
    /// created (the pool goes on with the workers it has).
    private func spawnWorker() -> Bool {
        let worker = Worker(index: workers.count)
        let runtime: Runtime = self.runtime
        guard case .success(let tid) = startThread({ [self] in
            _ = runtime  // held until the thread exits
            workerMain(worker)
        }) else { return false }
        worker.thread = tid
        workers.append(worker)
        return true
    }

    private func workerMain(_ worker: Worker) {
        _ = chroma_name_current_thread("chroma-pool-\(worker.index)")
        chroma_set_pool_worker(1)
        var batch = CompletionBatch()
        lock.lock()
        while true {
            if let job = takeNext() {
                let lane = job.lane
                // Hand completions over once the batch holds as many jobs as still wait:
                // their loops then queue the next jobs while the workers still have work,
                // instead of the whole window going round in one wave.
                let waitingNow = queued
                lock.unlock()
                // Completions wait in the batch only while the worker runs short file calls:
                // a long call would hold them for its whole length, and user work may even
                // wait for one of them.
                if lane == .long || job.mayWait { flush(&batch) }
                let finished = job.run()
                if finished { batch.append(job) }
                if batch.isFull || batch.count >= waitingNow { flush(&batch) }
                lock.lock()
                if lane == .long { longRunning -= 1 }
                running -= 1
                if finished {
                    // The job stays `.running` (not cancellable): its completion may already
                    // be posted, and once it is the pool never touches the job again (a
                    // `FileReader` restarts its job from the completion).
                    completed += 1
                } else if closed {
                    job.state = .cancelled
                    cancelledAtShutdown += 1
                    cancelledJobs += 1
                    job.refuse(.cancelled)
                    batch.append(job)
                } else {
                    // Continues in the long lane, as an already-accepted job: not bound by
                    // the capacity, and queued behind the jobs already waiting.
                    job.lane = .long
                    job.state = .queued
                    job.sequence = nextSequence
                    nextSequence &+= 1
                    queued += 1
                    long.append(job)
                }
                continue
            }
            if !batch.isEmpty {
                // Nothing left to run: hand the batch over before sleeping, then look again.
                lock.unlock()
                flush(&batch)
                lock.lock()
                continue
            }
            if closed && queued == 0 { break }
            worker.woken = false
            idle.append(worker)
            while !worker.woken {
                worker.wake.wait(lock)
                wakeups += 1
            }
        }
        lock.unlock()
    }

    /// Posts a worker's finished jobs, each loop's share in order with at most one wakeup,
    /// and counts them posted. Without the pool lock.
    private func flush(_ batch: inout CompletionBatch) {
        guard !batch.isEmpty else { return }
        let count = batch.count
        batch.post(runtime)
        lock.lock()
        unposted -= count
        let last = unposted == 0 && closed
        lock.unlock()
        if last { wakeLoops() }
    }

    /// With the lock held: the next job to run, marked running, or nil. The oldest job of
    /// either lane, unless it is long and the long lane is at its cap.
    private func takeNext() -> PoolJob? {
        while let first = short.first, first.state != .queued { short.removeFirst(); tombstones -= 1 }
        while let first = long.first, first.state != .queued { long.removeFirst(); tombstones -= 1 }
        let longAllowed = longRunning < configuration.longLaneWorkers
        let job: PoolJob
        if let l = long.first, longAllowed, short.first.map({ l.sequence < $0.sequence }) ?? true {
            job = long.removeFirst()
            longRunning += 1
        } else if !short.isEmpty {
            job = short.removeFirst()
        } else {
            return nil
        }
        job.state = .running
        queued -= 1
        running += 1
        return job
    }

    // MARK: Shutdown

    /// Refuses new jobs, cancels queued ones and lets idle workers exit. Returns at once;
    /// running jobs finish and post their completions. Called by `Runtime.stop()` before
    /// the loops are told to stop, so every completion finds its loop open.
    func close() {
        lock.lock()
        if closed {
            lock.unlock()
            return
        }
        closed = true
        var cancelled: [PoolJob] = []
        for job in short where job.state == .queued { cancelled.append(job) }
        for job in long where job.state == .queued { cancelled.append(job) }
        cancelled.sort { $0.sequence < $1.sequence }
        for job in cancelled { job.state = .cancelled }
        queued = 0
        tombstones = 0
        short.removeAll()
        long.removeAll()
        cancelledAtShutdown = cancelled.count
        cancelledJobs += cancelled.count
        for worker in idle {
            worker.woken = true
            worker.wake.signal()
        }
        idle.removeAll()
        lock.unlock()
        for job in cancelled {
            job.refuse(.cancelled)
            post(job)
        }
    }

    /// True when every accepted job's completion is in a loop's mailbox. Once the pool is
    /// closed this stays true; a loop finishing its shutdown closes its mailbox only then.
    var hasPostedEverything: Bool { lock.withLock { unposted == 0 } }

    /// After the pool closed, when its last completion is posted: lets every loop's
    /// pending shutdown go on (see `Loop.finish`). Without the lock.
    private func wakeLoops() {
        for i in 0..<runtime.loopCount { runtime.cores[i].wake() }
    }

    /// Waits for every worker thread to exit; after `close()`. On a worker thread (the
    /// runtime's last reference can drop there, when the worker exits) that worker is
    /// detached instead.
    func joinWorkers() {
        lock.lock()
        let all = workers
        workers.removeAll()
        lock.unlock()
        for worker in all {
            guard let thread = worker.thread else { continue }
            if pthread_equal(thread, pthread_self()) != 0 {
                pthread_detach(thread)
            } else {
                pthread_join(thread, nil)
            }
        }
    }

    /// Jobs cancelled because they were still queued when the pool closed.
    var cancelledByShutdown: Int { lock.withLock { cancelledAtShutdown } }

    /// Jobs submitted so far, refused ones included.
    var submittedJobs: Int { lock.withLock { submissions } }

    /// How reads tried the page cache on the loops (see `Configuration.cachedReads`), all
    /// loops together or loop `loop`'s. Any thread; the counts are each loop's own,
    /// read without stopping it.
    @_spi(CachedReads)
    public func cachedReadCounts(loop: Int? = nil) -> CachedReadCounts {
        cachedReads.counts(loop: loop)
    }

    /// How many times a sleeping worker woke up (see `wakeups`).
    var workerWakeups: Int { lock.withLock { wakeups } }

    /// Idle workers now.
    var idleWorkers: Int { lock.withLock { idle.count } }

    /// Entries in the deques, cancelled ones included (tests check they are swept).
    var storedJobs: Int { lock.withLock { short.count + long.count } }

    /// Jobs waiting in the queue now (both lanes).
    public var queuedCount: Int { lock.withLock { queued } }

    /// Worker threads started so far.
    public var workerCount: Int { lock.withLock { workers.count } }

    /// The pool's counts now, read together under its lock. Any thread.
    public var statistics: PoolStatistics {
        lock.withLock {
            PoolStatistics(queued: queued, running: running, completed: completed, overloaded: overloadedJobs,
                           cancelled: cancelledJobs, workers: workers.count)
        }
    }
}

/// A worker's finished jobs on their way to their loops: posted together, so a burst of
/// completions costs each loop at most one wakeup instead of one per job (only the first
/// post that finds a loop asleep wakes it). A batch is posted when it holds `capacity` jobs
/// or as many as still wait in the queue, before a long call or user work, and before the
/// worker sleeps: a completion waits for at most `capacity - 1` further short file calls on
/// its worker (so a file system that hangs one call also delays the completions that worker
/// holds).
struct CompletionBatch: ~Copyable {
    static let capacity = 32
    private let jobs = UnsafeMutablePointer<Job>.allocate(capacity: CompletionBatch.capacity)
    private(set) var count = 0

    deinit {
        precondition(count == 0, "a completion batch was dropped with jobs in it")
        jobs.deallocate()
    }

    var isEmpty: Bool { count == 0 }
    var isFull: Bool { count == CompletionBatch.capacity }

    /// Adds a finished (or refused) job; the batch holds one reference to it.
    mutating func append(_ job: PoolJob) {
        precondition(count < CompletionBatch.capacity, "append to a full completion batch")
        (jobs + count).initialize(to: job.completionJob())
        count += 1
    }

    /// Posts every job to its color's loop, in order, and empties the batch. Each goes
    /// through `Runtime.post`, which finds the loop that owns the color now.
    mutating func post(_ runtime: Runtime) {
        for i in 0..<count {
            let job = (jobs + i).move()
            let queued = runtime.post(job, color: job.tagged & Job.colorMask)
            // The loops wait for every accepted job to be posted before they close.
            precondition(queued, "a pool completion was refused: the loops closed before the pool drained")
        }
        count = 0
    }
}
