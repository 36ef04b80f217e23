import Synchronization

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

/// What the pool decided for a job: run it, or complete it with a failure without running.
@usableFromInline
enum PoolVerdict: Sendable {
    /// Run the blocking call (on a worker thread).
    case run
    /// The queue was full when the job was submitted.
    case overloaded
    /// The job was cancelled while queued (by its handle, or by shutdown).
    case cancelled
}

/// One unit of work for the pool, with its completion.
///
/// Life: submitted (`queued`) → taken by one worker (`running`) → `body(.run)` → completion
/// posted to the color's loop, where `complete()` calls the user's completion exactly once.
/// Or `queued` → `cancelled` (by `BlockingJob.cancel()` or shutdown) → `body(.cancelled)`
/// → completion posted. A job whose body returns `nil` is not finished: it goes back to the
/// long lane and runs again (a whole-file read that outgrew the short lane does this).
///
/// `body` sees every verdict so one closure holds the call and its cleanup: a job stopped
/// part way (an open descriptor, a half-read file) releases what it holds when it hears
/// `.cancelled`.
@usableFromInline
final class PoolJob: @unchecked Sendable {
    // Safe to share: `state` and `sequence` are read and written only with the pool's lock
    // held; `pending` is written by the one thread that holds the job in its current state
    // (the worker running it, or the thread that cancelled or refused it) before the job is
    // posted to its loop, and read there afterwards: the loop's mailbox lock orders the two.
    // `lane` can change only while the job is running, on the worker that runs it.
    let color: Color
    var lane: BlockingLane
    var state: State = .queued
    var sequence: UInt64 = 0
    private let body: @Sendable (PoolVerdict) -> (@Sendable () -> Void)?
    private var pending: (@Sendable () -> Void)?

    enum State { case queued, running, cancelled, finished }

    /// `body` returns the completion to run on `color` (a closure that calls the user's
    /// completion with the result), or `nil` to continue later in the long lane.
    init(color: Color, lane: BlockingLane, body: @escaping @Sendable (PoolVerdict) -> (@Sendable () -> Void)?) {
        self.color = color
        self.lane = lane
        self.body = body
    }

    /// Runs the call (a worker thread). Returns false when the job wants to continue in the
    /// long lane.
    func run() -> Bool {
        guard let completion = body(.run) else { return false }
        pending = completion
        return true
    }

    /// Records a failure without running the call (any thread, once).
    func refuse(_ verdict: PoolVerdict) {
        let completion = body(verdict)
        precondition(completion != nil, "a refused job must produce its completion")
        pending = completion
    }

    /// On the job's color: delivers the result. Exactly once per job.
    func complete() {
        let completion = pending.take()
        completion.unsafelyUnwrapped()
    }
}

/// A job on the blocking pool, as handed back by `Runtime.blocking` and the `Files` calls:
/// it can cancel the job while it still waits in the queue.
public struct BlockingJob: Sendable {
    let job: PoolJob
    let pool: BlockingPool

    /// Cancels the job if no worker has taken it yet. Returns true when it was cancelled:
    /// its completion then reports `cancelled` (on its color, soon, exactly once). Returns
    /// false when it already runs or ran: its completion reports the call's result. Any
    /// thread.
    @discardableResult
    public func cancel() -> Bool {
        pool.cancel(job)
    }
}
