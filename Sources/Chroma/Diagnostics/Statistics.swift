/// A runtime's counters at one moment (`Runtime.statistics()`): each loop's and the pool's.
/// Each count is read with a relaxed load from the thread that keeps it, so they are cheap
/// to keep on, and a snapshot is consistent per counter, not across counters.
public struct RuntimeStatistics: Sendable {
    /// One loop's counters.
    public struct Loop: Sendable, Equatable {
        /// The loop's index.
        public var index: Int
        /// Callbacks started on the loop: queued jobs, timer fires, fd and socket events.
        /// Counted as each starts, so a callback that has run is always in it.
        public var callbacks: Int
        /// Jobs the loop took from its mailbox (queued from other threads). Added at the
        /// end of each drain: a job whose callback is running, or has just run, may not be
        /// in it yet; after `Runtime.shutdown()` it is complete.
        public var mailboxJobs: Int
        /// Drains run by the loop's wakeup: each is one batch of queued jobs. Counted
        /// when the drain ends, as `mailboxJobs` is.
        public var wakeups: Int
        /// Jobs queued on the loop when its last drain ended.
        public var queueDepth: Int
        /// The share of the watchdog's samples that found the loop inside a callback (nil
        /// with the watchdog off, or before its first sample).
        public var busyShare: Double?
        /// The longest and the 99th-percentile queue delay the watchdog's probes measured
        /// (nil with the watchdog off, or before the first probe). Sampled: a probe per
        /// watchdog period while the loop is awake.
        public var maxQueueDelay: Duration?
        public var p99QueueDelay: Duration?
        /// Moves this loop made and color buckets it gave away (see `Stealing`).
        public var moves: Int
        public var bucketsGiven: Int
    }

    /// The loops, by index.
    public var loops: [Loop]
    /// The blocking pool.
    public var pool: PoolStatistics

    /// Callbacks over all loops.
    public var callbacks: Int { loops.reduce(0) { $0 + $1.callbacks } }
}

/// The blocking pool's counters (`BlockingPool.statistics`).
public struct PoolStatistics: Sendable, Equatable {
    /// Jobs waiting in the queue (both lanes).
    public var queued: Int
    /// Jobs a worker is running now.
    public var running: Int
    /// Jobs run to their end.
    public var completed: Int
    /// Jobs refused because the queue was full (or no worker could start).
    public var overloaded: Int
    /// Jobs cancelled while queued, by `BlockingJob.cancel()` or at shutdown.
    public var cancelled: Int
    /// Worker threads started.
    public var workers: Int
}

extension Runtime {
    /// The counters now. Any thread; costs a lock per loop (held for a few loads) and the
    /// pool's lock.
    public func statistics() -> RuntimeStatistics {
        let perLoop = loops.map { loop -> RuntimeStatistics.Loop in
            let c = loop.counters
            let samples = c.samples.load(ordering: .relaxed)
            let maxDelay = c.maxDelay.load(ordering: .relaxed)
            return RuntimeStatistics.Loop(
                index: loop.index, callbacks: c.callbacks, mailboxJobs: c.mailboxJobs.load(ordering: .relaxed),
                wakeups: c.wakeups.load(ordering: .relaxed), queueDepth: c.queueDepth.load(ordering: .relaxed),
                busyShare: samples > 0 ? Double(c.busySamples.load(ordering: .relaxed)) / Double(samples) : nil,
                maxQueueDelay: c.probes > 0 ? .nanoseconds(Int64(maxDelay)) : nil, p99QueueDelay: c.p99Delay,
                moves: loop.migration.moves.load(ordering: .relaxed), bucketsGiven: loop.migration.bucketsGiven.load(ordering: .relaxed))
        }
        return RuntimeStatistics(loops: perLoop, pool: pool.statistics)
    }
}
