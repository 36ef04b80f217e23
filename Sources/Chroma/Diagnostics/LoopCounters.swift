import CChroma
import Glibc
import Synchronization

/// One loop's counters for `Runtime.statistics()` and the watchdog. Written by one thread
/// each (the loop, or the watchdog for its samples) with relaxed stores, read from any
/// thread with relaxed loads: plain moves, so they stay on.
///
/// The loop's callback count lives in its thread's `chroma_thread_state` (each callback
/// start counts itself there); readers reach it through `state`, which the loop clears,
/// under `stateLock`, before its thread exits, leaving the final count in `finalCallbacks`.
final class LoopCounters: @unchecked Sendable {
    // Safe to share: atomics, `state`/`thread`, which are guarded by `stateLock`, and the
    // probe's leg fields, touched only on the loop's thread.
    /// Jobs the loop took from its mailbox (posted from other threads).
    let mailboxJobs = Atomic<Int>(0)
    /// Drains the loop's wakeup (or continuation) event ran.
    let wakeups = Atomic<Int>(0)
    /// Jobs queued (run queue and mailbox) when the last drain ended.
    let queueDepth = Atomic<Int>(0)
    /// Watchdog samples, and those that found the loop inside a callback.
    let samples = Atomic<Int>(0)
    let busySamples = Atomic<Int>(0)
    /// Queue delays the probes measured, in log₂ buckets of microseconds (bucket `b` holds
    /// delays below 2^b µs), and the largest one in nanoseconds.
    private let buckets = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: LoopCounters.bucketCount)
    static let bucketCount = 40
    let maxDelay = Atomic<UInt64>(0)
    /// The last probe's delay (ns) and the queue depth it saw; `probeSeq` moves on at each.
    let lastProbeDelay = Atomic<UInt64>(0)
    let lastProbeDepth = Atomic<Int>(0)
    let probeSeq = Atomic<Int>(0)
    /// True from the watchdog's post of a probe until the probe's second leg ran.
    let probeInFlight = Atomic<Bool>(false)
    /// The probe in flight: when the watchdog sent it and the loop's start count then
    /// (written before the post, which orders them for the loop).
    let probeSentAt = Atomic<UInt64>(0)
    let probeStartsAtSend = Atomic<UInt64>(0)
    /// Its first leg's arrival and the jobs ahead of it in each leg; the loop thread only.
    var probeArrivedAt: UInt64 = 0
    var probeAheadInMailbox = 0
    var probeAheadInRunQueue = 0

    private let stateLock = Lock()
    private var state: UnsafeMutablePointer<chroma_thread_state>?
    private var thread: pthread_t?
    private var finalCallbacks = 0

    init() {
        for i in 0..<LoopCounters.bucketCount { (buckets + i).initialize(to: Atomic(0)) }
    }

    deinit {
        buckets.deinitialize(count: LoopCounters.bucketCount)
        buckets.deallocate()
    }

    /// The loop thread, at start: publishes its state block and thread.
    func attachThread() {
        stateLock.withLock {
            state = chroma_thread_state_address()
            thread = pthread_self()
        }
    }

    /// The loop thread, before it exits: keeps the final count; no reader touches its state
    /// block after this returns.
    func detachThread() {
        stateLock.withLock {
            finalCallbacks = Int(chroma_current_starts())
            state = nil
            thread = nil
        }
    }

    /// Calls `body` with the loop thread's state block and thread while it runs (the thread
    /// cannot exit meanwhile), or returns nil.
    func withThread<R>(_ body: (UnsafeMutablePointer<chroma_thread_state>, pthread_t) -> R) -> R? {
        stateLock.withLock {
            guard let state, let thread else { return nil }
            return body(state, thread)
        }
    }

    /// Callbacks started on the loop so far.
    var callbacks: Int {
        stateLock.withLock { state.map { Int(chroma_state_starts($0)) } ?? finalCallbacks }
    }

    /// The loop thread: adds a drain's counts.
    @inline(__always) func noteDrain(mailboxJobs taken: Int, depth: Int) {
        wakeups.store(wakeups.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        if taken != 0 { mailboxJobs.store(mailboxJobs.load(ordering: .relaxed) &+ taken, ordering: .relaxed) }
        queueDepth.store(depth, ordering: .relaxed)
    }

    /// The loop thread, from a probe: one queue delay seen, with the depth behind it.
    func noteProbe(delay: UInt64, depth: Int) {
        let micros = delay / 1000
        let bucket = min(micros == 0 ? 0 : 64 - micros.leadingZeroBitCount, LoopCounters.bucketCount - 1)
        buckets[bucket].store(buckets[bucket].load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        if delay > maxDelay.load(ordering: .relaxed) { maxDelay.store(delay, ordering: .relaxed) }
        lastProbeDelay.store(delay, ordering: .relaxed)
        lastProbeDepth.store(depth, ordering: .relaxed)
        probeSeq.store(probeSeq.load(ordering: .relaxed) &+ 1, ordering: .releasing)
        probeInFlight.store(false, ordering: .releasing)
    }

    /// The 99th percentile of the probes' delays (the upper bound of its bucket), or nil
    /// before any probe.
    var p99Delay: Duration? {
        var counts: [Int] = []
        for i in 0..<LoopCounters.bucketCount { counts.append(buckets[i].load(ordering: .relaxed)) }
        let total = counts.reduce(0, +)
        guard total > 0 else { return nil }
        var seen = 0
        for (bucket, count) in counts.enumerated() {
            seen += count
            if seen * 100 >= total * 99 { return .microseconds(bucket == 0 ? 1 : 1 << bucket) }
        }
        return .microseconds(1 << (LoopCounters.bucketCount - 1))
    }

    /// Probes measured so far.
    var probes: Int { probeSeq.load(ordering: .acquiring) }
}
