import CChroma
import Glibc
import Synchronization

/// One event loop: a named pthread that owns an `event_base`, a run queue and mailbox (in
/// its `LoopCore`), and a timer queue. The colors `Placement` assigns to this loop run here,
/// one callback at a time.
///
/// Threading: `enqueue`, `requestStop` and `isCurrent` may be used from any thread.
/// Everything else runs on the loop's own thread (`preconditionOnLoop()`).
final class Loop: @unchecked Sendable {
    // Safe to send: `core` is set once by the runtime before the thread starts (and is
    // itself thread-safe, see `LoopCore`); `base`, `wakeupEvent` and `timers` are used only
    // on the loop's thread (or by `makeEvent` under `HandleTable`'s lock while the loop is
    // open, see there); `stopRequested` is atomic; the rest is immutable.
    let index: Int
    /// The runtime; the loop's thread keeps it alive (see `start`), so this need not.
    unowned(unsafe) let runtime: Runtime
    let handles: HandleTable
    private(set) var core: LoopCore!
    let timers = TimerQueue()
    /// Connections and listeners on this loop, closed by the shutdown sweep.
    let sockets = LoopSockets()
    /// How this loop runs Swift executor jobs (see `Callback.ExecutorJobs`); its core keeps a
    /// copy where the drain finds it.
    let executorJobs: Callback.ExecutorJobs
    /// Whether the mailbox may close for shutdown: false while the blocking pool still owes
    /// completions (see `finish`). Passed in, so the loop never reaches up into the pool.
    private let mayClose: () -> Bool
    private var base: EventBase?
    private var wakeupEvent: PersistentEvent?
    /// A zero-timeout timer that continues a drain the budget stopped: it fires only after
    /// libevent's next poll, so ready I/O and the rest of the queue take turns.
    private var continuationEvent: PersistentEvent?
    private let stopRequested = Atomic<Bool>(false)
    /// Set once `finish()` closed the mailbox and swept (loop thread only).
    private var finished = false
    /// Consecutive drains that ran nothing and stopped at a claimed, unfilled mailbox slot
    /// (loop thread only; see `pollDelay`).
    private var stalledPolls = 0
    /// Whether the last drain stopped because its budget was spent (loop thread only).
    private var budgetSpent = false
    private var thread: pthread_t?
    private let pinToCPU: Int?
    /// Moving colors to and from this loop (loop thread; see `Migration`).
    let migration: Migration
    /// Counts for `Runtime.statistics()` and the stall watchdog.
    let counters = LoopCounters()
    /// Jobs run per libevent callback before the loop lets libevent poll for I/O.
    static let budget = 4096

    init(index: Int, runtime: Runtime, handles: HandleTable, pinToCPU: Int?, stealing: Bool,
         executorJobs: Callback.ExecutorJobs, mayClose: @escaping () -> Bool) {
        migration = Migration(runtime: runtime, index: index, enabled: stealing)
        self.index = index
        self.runtime = runtime
        self.handles = handles
        self.pinToCPU = pinToCPU
        self.executorJobs = executorJobs
        self.mayClose = mayClose
    }

    /// Called once by the runtime, before `start`.
    func attach(core: LoopCore) {
        precondition(self.core == nil, "a loop's core is attached once")
        self.core = core
    }

    /// True on this loop's own thread.
    @inline(__always) var isCurrent: Bool { core.isCurrent }

    func preconditionOnLoop(_ what: @autoclosure () -> String = "", file: StaticString = #file, line: UInt = #line) {
        precondition(isCurrent, "must run on loop \(index)'s thread: \(what())", file: file, line: line)
    }

    /// Queues `job` on this loop (see `LoopCore.enqueue`). Any thread.
    @inline(__always) func enqueue(_ job: consuming Job) -> Bool {
        core.enqueue(job)
    }

    /// Runs `body` as `color` right here if this loop owns the color now, else posts it to the
    /// color's owner (a timer whose color moved since it was scheduled). Loop thread, outside
    /// other callbacks. Only this loop could move a color it owns, so the answer cannot
    /// change before `body` runs. A post refused at shutdown drops the fire, as shutdown
    /// cancels pending timers.
    func runOrForward(as color: Color, site: UInt64, _ body: @escaping @Sendable () -> Void) {
        let word = runtime.placement.ownerSlot(of: color.rawValue).pointee.load(ordering: .acquiring)
        if OwnerWord.loop(word) == index && word & OwnerWord.inTransit == 0 {
            Callback.run(as: color, site: site, body)
        } else {
            _ = runtime.post(Job(color: color.rawValue, site: site, body: body), color: color.rawValue)
        }
    }

    /// Asks the loop to drain its queues and exit. Any thread; returns at once.
    func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        core.wake()
    }

    // MARK: Thread

    /// Starts the thread; returns once the base exists (or with the error that stopped it).
    /// The thread holds a strong reference to the runtime until it exits.
    func start() throws(ChromaError) {
        let box = StartBox()
        let runtime: Runtime = self.runtime
        switch startThread({ [self] in
            _ = runtime  // held until the thread exits
            threadMain(box)
        }) {
        case .success(let tid):
            thread = tid
        case .failure(let error):
            throw .system(operation: "Runtime.start", call: "pthread_create", errno: error.code)
        }
        box.started.wait()
        if let error = box.error { throw error }
    }

    /// Waits for the thread to exit.
    /// From the loop's own thread (the runtime's last reference can drop there), detaches.
    func join() {
        if let thread {
            if pthread_equal(thread, pthread_self()) != 0 {
                pthread_detach(thread)
            } else {
                pthread_join(thread, nil)
            }
            self.thread = nil
        }
    }

    private final class StartBox: @unchecked Sendable {
        // Safe to send: `error` is written by the loop thread before `started.open()` and
        // read by the starter after `started.wait()`; the latch orders the two.
        let started = Latch()
        var error: ChromaError?
    }

    private func threadMain(_ box: StartBox) {
        _ = chroma_name_current_thread("chroma-loop-\(index)")
        if let cpu = pinToCPU { _ = chroma_pin_current_thread(Int32(cpu)) }
        chroma_set_current_loop(core.identity)
        chroma_set_loop_index(Int32(truncatingIfNeeded: index))
        if runtime.diagnostics.crashContext { _ = chroma_use_alternate_signal_stack() }
        counters.attachThread()
        do throws(ChromaError) {
            let base = try EventBase()
            self.base = base
            let wakeup = try base.makeEvent(fd: -1, flags: 0) { [unowned self] _ in self.drain() }
            continuationEvent = try base.makeEvent(fd: -1, flags: 0) { [unowned self] _ in self.drain() }
            wakeupEvent = wakeup
            core.wakeupSlot.pointee = .passUnretained(wakeup)
            try wakeup.add()
            try timers.attach(to: base, loop: self)
        } catch {
            box.error = error
            teardown()
            box.started.open()
            return
        }
        // From here on other threads may read `base` (HandleTable.register, under its lock).
        box.started.open()
        _ = base!.dispatch()
        // libevent frees bufferevents and listeners through finalizers that run in the
        // loop; the shutdown sweep queued some just before the loop broke. One more
        // non-blocking pass runs them, so their sockets are closed now, not at base free.
        base!.runPending()
        teardown()
    }

    /// The loop thread's last act. The wakeup event and the base stay allocated: a producer
    /// whose push was accepted just before the mailbox closed may still be about to call
    /// `event_active` on them. `releaseBase()` frees them once no producer can be in flight.
    private func teardown() {
        timers.detach()
        counters.detachThread()
        ChainedJob.releaseCachedRecords()
        chroma_release_alternate_signal_stack()
        chroma_set_current_loop(nil)
    }

    /// Frees the wakeup event and the base. Called by `Runtime.deinit`: no call into the
    /// runtime can be in flight then, and the loop's thread has exited (the base is not
    /// running), so freeing from this thread cannot race the loop. (When the runtime's last
    /// reference drops on a loop thread, that thread has left `dispatch()` for good.)
    func releaseBase() {
        core.wakeupSlot.pointee = nil
        wakeupEvent?.free()
        wakeupEvent = nil
        continuationEvent?.free()
        continuationEvent = nil
        base = nil
    }

    // MARK: Draining (loop thread)

    /// The wakeup event's callback: runs queued jobs, at most `budget` of them. If work is
    /// left, the continuation timer (zero timeout) runs the next drain after libevent's
    /// next poll: I/O that became ready meanwhile runs first, and a loop whose sockets are
    /// always ready still reaches its queue.
    ///
    /// The fairness rule, stated here once: every libevent event of a loop (sockets, timers,
    /// signals, the wakeup, the continuation, and the events libevent makes itself) has the
    /// base's one priority, and fairness comes from this budget and the continuation, not
    /// from priorities: libevent serves a lower priority only when no higher one is active,
    /// so putting the drain below I/O would let busy sockets starve queued work.
    private func drain() {
        let core = self.core!
        let local = core.local
        local.pointee.wakeupActive = false
        local.pointee.draining = true
        var remaining = Loop.budget
        // The loop sleeps only after finding the run queue empty and marking the mailbox
        // asleep while it held nothing unrun: from then on the next post wakes it. Any other
        // way out (the budget spent, or a slot claimed whose producer has not filled it yet)
        // goes through the continuation, so no job waits for a wakeup nobody will send.
        var idle = false
        var waiting = false
        var tookFromMailbox = 0
        // With stealing on, the drain pauses every `migration.chunk` jobs, between two
        // callbacks, where colors may move (`Migration.pause`).
        let stealing = migration.enabled
        if stealing { migration.beginDrain(continuing: budgetSpent) }
        while remaining > 0 {
            let chunk = stealing ? migration.chunk : Int.max
            if migration.hasTaken {
                // Jobs a move took from the mailbox are older than all that is left there,
                // so they run first, and before the run queue again (see `Migration`).
                let ran = migration.runTaken(limit: min(remaining, chunk))
                remaining &-= ran
                migration.pause(core, ran: ran, mayGive: !stopRequested.load(ordering: .relaxed))
                continue
            }
            let limit = remaining
            // With local jobs waiting, the mailbox gets half the pass: producers that stay
            // ahead of the loop must not keep the run queue from its turn.
            let share = min(local.pointee.runQueue.isEmpty ? limit : max(1, limit / 2), chunk)
            let fromMailbox = core.mailbox.run(limit: share)
            tookFromMailbox &+= fromMailbox
            let fromRing = min(limit &- fromMailbox, chunk)
            remaining = limit &- fromMailbox &- fromRing &+ Loop.runJobs(local, limit: fromRing)
            if stealing {
                migration.pause(core, ran: limit &- remaining, mayGive: !stopRequested.load(ordering: .relaxed))
            }
            if fromMailbox < share && local.pointee.runQueue.isEmpty && !migration.hasTaken {
                if core.mailbox.sleepIfEmpty() {
                    idle = true
                    break
                }
                // A producer is between claiming a slot and filling it: the loop has caught
                // up with it. Back off a moment so it gets ahead (reading the slot it is
                // writing would pull its cache line away from it at every post); if it was
                // descheduled, poll again after libevent's next pass instead.
                if !core.mailbox.awaitNext(checks: 32) {
                    waiting = true
                    break
                }
            }
        }
        // Polls that found nothing but a slot still unfilled back off to a real timer, so a
        // producer descheduled mid-post (one the scheduler ranks below this loop, even) is
        // not competed with by a loop spinning through libevent passes for it.
        stalledPolls = waiting && remaining == Loop.budget ? stalledPolls &+ 1 : 0
        budgetSpent = remaining == 0
        Callback.endBatch()
        counters.noteDrain(mailboxJobs: tookFromMailbox, depth: local.pointee.runQueue.count &+ core.mailbox.approximateCount)
        local.pointee.draining = false
        if stopRequested.load(ordering: .acquiring) { finish() }
        if !idle && !finished {
            // `wakeupActive` stays true: the continuation drains what local pushes add.
            local.pointee.wakeupActive = true
            try? continuationEvent!.add(afterNanoseconds: Loop.pollDelay(afterStalledPolls: stalledPolls))
        }
    }

    /// The continuation's delay: none, unless the last `stalled` drains all found only an
    /// unfilled slot; then 20 µs, doubling up to 1 ms.
    static func pollDelay(afterStalledPolls stalled: Int) -> UInt64 {
        guard stalled > 4 else { return 0 }
        return min(20_000 << UInt64(min(stalled - 5, 6)), 1_000_000)
    }

    /// Runs up to `limit` jobs from the run queue; returns how much of the limit is left.
    @inline(never) private static func runJobs(_ local: UnsafeMutablePointer<LoopCore.LocalQueue>, limit: Int) -> Int {
        var remaining = limit
        while remaining > 0 && !local.pointee.runQueue.isEmpty {
            local.pointee.runQueue.runFront()
            remaining &-= 1
        }
        return remaining
    }

    /// Shutdown, on the loop thread: every job queued before the mailbox closes runs; then
    /// watches and timers still registered here are cancelled and counted, and the loop exits.
    ///
    /// The mailbox may close only once the blocking pool has posted every completion it
    /// owes (`mayClose`; jobs running when `stop()` closed the pool still finish and post). Until then
    /// this returns without closing, and the loop keeps dispatching: timers and fd events
    /// still fire, so pool work that waits for one of them cannot deadlock shutdown. The
    /// pool wakes every loop when its last completion is posted, and the drain calls this
    /// again.
    private func finish() {
        let core = self.core!
        let local = core.local
        local.pointee.draining = true
        defer {
            Callback.endBatch()
            local.pointee.draining = false
        }
        var waits = 0
        while true {
            _ = migration.runTaken(limit: Int.max)
            let ran = core.mailbox.run(limit: Int.max)
            while !local.pointee.runQueue.isEmpty { _ = Loop.runJobs(local, limit: Int.max) }
            if !mayClose() { return }
            if core.mailbox.closeIfEmpty() { break }  // closed: nothing can be queued here any more
            // A producer is filling a slot it claimed: let it run (yield first, then sleep a
            // little, in case the scheduler does not rank it above this thread).
            if ran > 0 {
                waits = 0
            } else {
                waits += 1
                if waits > 16 { usleep(50) } else { sched_yield() }
            }
        }
        guard !finished else { return }
        finished = true
        sockets.closeAll()
        let cancelledWatches = handles.closeLoop(self)
        let cancelledTimers = timers.cancelAll()
        // The sweep wakes waiters (a connection's readers and senders, a sleep): their
        // resumptions were queued here, on this loop's run queue. Run them (and what they
        // queue) before the loop exits; the mailbox is closed, so nothing else can arrive.
        while !local.pointee.runQueue.isEmpty { _ = Loop.runJobs(local, limit: Int.max) }
        runtime.recordShutdown(cancelledTimers: cancelledTimers, cancelledWatches: cancelledWatches)
        base!.breakLoop()
    }

    /// Creates a persistent event on this loop's base. Any thread, while the loop is open
    /// (`HandleTable` calls it under its lock, which orders it before the loop's teardown).
    func makeEvent(fd: Int32, flags: Int16, handler: @escaping (Int16) -> Void) throws(ChromaError) -> PersistentEvent {
        guard let base else { throw .shutDown(operation: "event_new") }
        return try base.makeEvent(fd: fd, flags: flags, handler: handler)
    }

    /// A bufferevent on `fd` (-1 for an outgoing connection). Loop thread only.
    func makeSocketBuffer(fd: Int32) throws(ChromaError) -> SocketBuffer {
        preconditionOnLoop("makeSocketBuffer")
        guard let base else { throw .shutDown(operation: "connection") }
        return try SocketBuffer(base: base, fd: fd)
    }

    /// A listening socket on this loop's base. Any thread while the loop is open (the
    /// caller registers it in `sockets`, whose lock orders it before the loop's sweep).
    func makeListener(address: UnsafePointer<sockaddr>, length: socklen_t, backlog: Int32,
                      onAccept: @escaping (Int32) -> Void, onError: @escaping (SocketListener, Int32) -> Void) throws(ChromaError) -> SocketListener {
        guard let base else { throw .shutDown(operation: "listen") }
        return try SocketListener.make(on: base, address: address, length: length, backlog: backlog, onAccept: onAccept, onError: onError)
    }
}

extension Loop {
    /// The watchdog's probe of this loop's queue delay, sent at `sent` (monotonic ns) when
    /// the loop had started `startsAtSend` callbacks, as a job of the loop's own color:
    /// through the mailbox (behind what other threads queued), then once more through the
    /// run queue (behind what this loop queued itself). The longer wait of the two is the
    /// delay a job queued then would have seen; the jobs that ran ahead of it in that leg
    /// are the depth of the queue it waited in. Any thread.
    ///
    /// Both legs are function jobs whose state is in `counters`: a probe allocates nothing,
    /// so no memory the watchdog thread allocated ever reaches the loop's allocator caches.
    func probe(sentAt sent: UInt64, startsAtSend: UInt64) -> Bool {
        counters.probeSentAt.store(sent, ordering: .relaxed)
        counters.probeStartsAtSend.store(startsAtSend, ordering: .relaxed)
        return enqueue(Job(color: runtime.loopColor(index).rawValue, function: Loop.probeArrived,
                           context: Unmanaged.passUnretained(self).toOpaque()))
    }

    private static let probeArrived: @convention(c) (UnsafeMutableRawPointer?) -> Void = { raw in
        let loop = Unmanaged<Loop>.fromOpaque(raw.unsafelyUnwrapped).takeUnretainedValue()
        let counters = loop.counters
        counters.probeArrivedAt = monotonicNanoseconds()
        // This probe's own start is counted too.
        counters.probeAheadInMailbox = Int(truncatingIfNeeded: chroma_current_starts() &- counters.probeStartsAtSend.load(ordering: .relaxed) &- 1)
        counters.probeAheadInRunQueue = loop.core.local.pointee.runQueue.count
        loop.core.pushLocal(Job(color: loop.runtime.loopColor(loop.index).rawValue, function: Loop.probeBack, context: raw))
    }

    private static let probeBack: @convention(c) (UnsafeMutableRawPointer?) -> Void = { raw in
        let counters = Unmanaged<Loop>.fromOpaque(raw.unsafelyUnwrapped).takeUnretainedValue().counters
        let back = monotonicNanoseconds()
        let (first, second) = (counters.probeArrivedAt &- counters.probeSentAt.load(ordering: .relaxed), back &- counters.probeArrivedAt)
        counters.noteProbe(delay: max(first, second), depth: first >= second ? counters.probeAheadInMailbox : counters.probeAheadInRunQueue)
    }

    /// Lends the raw base to an engine (`EngineLoop.withRawBase`; see
    /// `EventBase.withRawBase`). Any thread while the loop is open.
    func withRawBase<R>(_ body: (OpaquePointer) throws(ChromaError) -> R) throws(ChromaError) -> R {
        guard let base else { throw .shutDown(operation: "serveHTTP") }
        return try base.withRawBase(body)
    }
}
