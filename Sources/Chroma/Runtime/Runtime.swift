import CChroma
import Glibc
import Synchronization

/// A set of event loops, one per core, each on its own thread, and the colors that map
/// work onto them. The Swift form of libasync-smp's `amain`/`cpucb`/`delaycb`/`fdcb`/`sigcb`.
///
/// ```swift
/// let runtime = try Runtime()
/// try runtime.start()
/// try runtime.execute(on: .main) { print("on loop 0") }
/// let report = try runtime.shutdown()
/// ```
///
/// Lifecycle: `start()` (or `run()`) starts the loops; `stop()` asks them to drain and exit;
/// `shutdown()` stops and joins them. Every callback queued before the stop runs; every
/// request after it is refused with `ChromaError.shutDown`; timers and watches still
/// registered are cancelled and counted in the `ShutdownReport`. Nothing is dropped silently.
/// A runtime that is started must be shut down: its threads keep it alive until then.
///
/// Threading: every method may be called from any thread, inside or outside callbacks,
/// except `shutdown()` and `run()`, which block and so must not run on a loop thread.
public final class Runtime: @unchecked Sendable {
    // Safe to share: `loops`, `loopCount`, `placement` and `handles` are immutable after init
    // (but for the placement's atomic counters); the lifecycle is an atomic; the report is
    // guarded by `reportLock`, `joined` by `joinLock`.
    /// How many loops (threads) this runtime runs.
    public let loopCount: Int
    private(set) var loops: [Loop]  // assigned once, at the end of init
    /// The loops' hot state, without reference counting (see `LoopCore`).
    @usableFromInline let cores: UnsafeMutablePointer<LoopCore>  // loopCount of them, filled in init
    /// `cores[i].local` for each loop, one word apiece: a post finds and checks the owner's
    /// queue with one scaled load instead of indexing the wider `LoopCore`.
    @usableFromInline let localQueues: UnsafeMutablePointer<UnsafeMutablePointer<LoopCore.LocalQueue>>
    /// Which loop runs each color: the one place that decides it.
    @usableFromInline let placement: Placement
    let handles: HandleTable
    @usableFromInline let state = Atomic<UInt8>(Lifecycle.idle.rawValue)
    let stopped = Latch()
    /// Opened once `start()` has finished or the runtime stopped (`waitUntilStarted`).
    let startedOrStopped = Latch()
    private let reportLock = Lock()
    private let joinLock = Lock()  // held while joining; never taken by loop threads
    /// One `ColorExecutor` per color while it is in use.
    let executors = ExecutorTable()
    /// The worker-thread pool behind `blocking(on:lane:_:completion:)` and `files`.
    public let pool: BlockingPool
    private var report = ShutdownReport()
    private var joined = false
    /// Whether idle loops are given colors from busy ones.
    public let stealing: Stealing
    /// Test hook: loops move colors at every pause, at random, whether it pays or not. Set
    /// before `start()`.
    var testingForcedMigrations = false

    @usableFromInline enum Lifecycle: UInt8 { case idle, starting, running, stopping, stopped }
    /// Set in `state` beside `running` when jobs keep chains: the hot path's one check
    /// (`state == running`) then fails over to the chained path, so chains off cost nothing.
    @usableFromInline static var chainedBit: UInt8 { 0x80 }
    /// The state without `chainedBit`.
    @usableFromInline func lifecycle(_ raw: UInt8) -> UInt8 { raw & ~Runtime.chainedBit }
    /// What this runtime watches for and reports.
    public let diagnostics: Diagnostics
    /// The stall watchdog, when `diagnostics.stallThreshold` is not zero.
    private(set) var watchdog: Watchdog?

    /// The number of CPUs online: the default loop count.
    public static var onlineCPUCount: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Creates a runtime with `loops` event loops (default: one per online CPU). With
    /// `pinToCPUs`, loop `i` is pinned to CPU `i % onlineCPUCount`. `pool` sizes the
    /// blocking pool, whose workers start on first use. `stealing` says whether colors move
    /// from busy loops to idle ones (see `Stealing` and docs/ARCHITECTURE.md, "Moving
    /// colors"). `diagnostics` sets the stall watchdog, chains and crash context (see
    /// `Diagnostics`). No thread starts yet.
    public init(loops: Int = Runtime.onlineCPUCount, pinToCPUs: Bool = false,
                pool: BlockingPool.Configuration = .init(), stealing: Stealing = .on,
                diagnostics: Diagnostics = Diagnostics()) throws(ChromaError) {
        guard loops >= 1, loops <= 4096 else {
            throw .invalidArgument(operation: "Runtime.init", detail: "loops must be in 1...4096, got \(loops)")
        }
        try pool.validate()
        try diagnostics.validate()
        self.diagnostics = diagnostics
        self.pool = BlockingPool(configuration: pool)
        loopCount = loops
        self.stealing = stealing
        placement = Placement(loopCount: loops)
        handles = HandleTable(loopCount: loops)
        cores = .allocate(capacity: loops)  // initialized below, once the loops exist
        localQueues = .allocate(capacity: loops)
        var made: [Loop] = []
        self.loops = []
        let cpus = Runtime.onlineCPUCount
        let pool = self.pool
        for i in 0..<loops {
            made.append(Loop(index: i, runtime: self, handles: handles, pinToCPU: pinToCPUs ? i % cpus : nil,
                             stealing: stealing == .on && loops > 1,
                             executorJobs: { job, executor in ColorQueue.run(job: job, executor: executor) },
                             mayClose: { pool.hasPostedEverything }))
        }
        self.loops = made
        for (i, loop) in made.enumerated() {
            (cores + i).initialize(to: LoopCore(loop: loop, holeColor: placement.loopColor(i)))
            (localQueues + i).initialize(to: cores[i].local)
            loop.attach(core: cores[i])
        }
        self.pool.attach(self)
    }

    deinit {
        // Threads hold the runtime while they run, so every started loop was joined by now.
        for loop in loops { loop.join(); loop.releaseBase() }
        pool.joinWorkers()
        for i in 0..<loopCount { cores[i].destroy() }
        cores.deinitialize(count: loopCount)
        cores.deallocate()
        localQueues.deallocate()
    }

    // MARK: Lifecycle

    /// Starts every loop's thread; returns once all of them can take work. Throws
    /// `invalidState` if the runtime was already started.
    public func start() throws(ChromaError) {
        let (started, found) = state.compareExchange(expected: Lifecycle.idle.rawValue, desired: Lifecycle.starting.rawValue,
                                                     ordering: .acquiringAndReleasing)
        guard started else {
            let reason = found >= Lifecycle.stopping.rawValue
                ? "the runtime was stopped; a runtime runs once, create a new one"
                : "the runtime was already started"
            throw .invalidState(operation: "Runtime.start", reason: reason)
        }
        for (i, loop) in loops.enumerated() {
            do throws(ChromaError) {
                try loop.start()
            } catch {
                pool.close()
                for started in loops[..<i] { started.requestStop() }
                for started in loops[..<i] { started.join() }
                state.store(Lifecycle.stopped.rawValue, ordering: .releasing)
                stopped.open()
                startedOrStopped.open()
                throw error
            }
        }
        // A peer that resets a connection mid-write must not kill the process: writes to it
        // fail with EPIPE instead (libevent writes sockets with writev, which has no
        // MSG_NOSIGNAL).
        signal(SIGPIPE, SIG_IGN)
        if diagnostics.crashContext { _ = chroma_install_crash_context() }
        if diagnostics.stallThreshold > .zero {
            let watchdog = Watchdog(runtime: self, threshold: diagnostics.stallThreshold)
            self.watchdog = watchdog
            watchdog.start()
        }
        let running = Lifecycle.running.rawValue | (diagnostics.chains ? Runtime.chainedBit : 0)
        state.store(running, ordering: .releasing)
        startedOrStopped.open()
    }

    /// Runs the loops until `stop()`, then shuts down and returns the report. Starts the
    /// runtime first unless `start()` was already called. Blocks; not on a loop thread.
    @discardableResult
    public func run() throws(ChromaError) -> ShutdownReport {
        if state.load(ordering: .acquiring) == Lifecycle.idle.rawValue { try start() }
        try refuseOnLoopThread("Runtime.run")
        stopped.wait()
        return try shutdown()
    }

    /// Asks every loop to finish: from now on new work is refused with `.shutDown`, work
    /// already queued still runs. Returns at once; any thread, also inside callbacks.
    public func stop() {
        while true {
            let current = state.load(ordering: .acquiring)
            switch Lifecycle(rawValue: lifecycle(current))! {
            case .idle, .starting:
                // Nothing runs yet; a start() racing with this sees .stopped and fails.
                if state.compareExchange(expected: current, desired: Lifecycle.stopped.rawValue,
                                         ordering: .acquiringAndReleasing).exchanged {
                    pool.close()
                    stopped.open()
                    startedOrStopped.open()
                    return
                }
            case .running:
                if state.compareExchange(expected: current, desired: Lifecycle.stopping.rawValue,
                                         ordering: .acquiringAndReleasing).exchanged {
                    watchdog?.stop()
                    // The pool first: its queued jobs' completions must reach open loops.
                    pool.close()
                    for loop in loops { loop.requestStop() }
                    stopped.open()
                    startedOrStopped.open()
                    return
                }
            case .stopping, .stopped:
                return
            }
        }
    }

    /// Stops the runtime and waits for every loop to drain and exit. Returns what was
    /// cancelled. Idempotent. Throws `invalidState` on a loop thread, where it would wait
    /// for itself: call `stop()` there.
    @discardableResult
    public func shutdown() throws(ChromaError) -> ShutdownReport {
        try refuseOnLoopThread("Runtime.shutdown")
        stop()
        joinLock.withLock {
            if !joined {
                watchdog?.join()
                for loop in loops { loop.join() }
                pool.joinWorkers()
                joined = true
            }
        }
        let cancelledJobs = pool.cancelledByShutdown
        return reportLock.withLock {
            var final = report
            final.cancelledBlockingJobs = cancelledJobs
            return final
        }
    }

    func refuseOnLoopThread(_ operation: String) throws(ChromaError) {
        if chroma_current_loop() != nil {
            throw .invalidState(operation: operation, reason: "called on a loop thread, it would wait for itself; call stop()")
        }
        if chroma_is_pool_worker() != 0 {
            throw .invalidState(operation: operation,
                                reason: "called from blocking-pool work, which shutdown waits for; call stop()")
        }
    }

    func recordShutdown(cancelledTimers: Int, cancelledWatches: Int) {
        reportLock.withLock {
            report.cancelledTimers += cancelledTimers
            report.cancelledWatches += cancelledWatches
        }
    }

    /// True between a successful `start()` and `stop()`.
    public var isRunning: Bool { lifecycle(state.load(ordering: .acquiring)) == Lifecycle.running.rawValue }

    // MARK: Colors

    /// The index of the loop that runs `color` now (see `Placement` for the rule). Any thread.
    /// With stealing on, a color that is not pinned may be on another loop a moment later.
    @inlinable @inline(__always) public func loopIndex(of color: Color) -> Int {
        placement.loopIndex(of: color)
    }

    /// The loop to create loop-bound libevent state on for `color`, which pins the color there
    /// for the runtime's life (see `Placement.pin`).
    func pinnedLoop(for color: Color) -> Loop {
        loops[placement.pin(color)]
    }

    /// Keeps `color` on the loop that runs it now, for the runtime's life, and returns that
    /// loop's index: for a color whose work must stay on one thread (thread-local state, a
    /// library with thread affinity). Colors that own connections, fd watches or listeners
    /// are pinned by those calls already; `Color.main` is pinned from the start (timers and
    /// signal handlers do not pin: their fires are forwarded). Pinning covers the color's bucket (`rawValue % bucketCount`, about
    /// 8,192 buckets), so a few other colors stay put with it. Any thread.
    @discardableResult
    public func pin(_ color: Color) -> Int {
        placement.pin(color)
    }

    /// What stealing has done so far, summed over the loops. Any thread; relaxed counts.
    public var stealingCounts: StealingCounts {
        var counts = StealingCounts()
        for loop in loops {
            counts.moves += loop.migration.moves.load(ordering: .relaxed)
            counts.bucketsMoved += loop.migration.bucketsGiven.load(ordering: .relaxed)
        }
        return counts
    }

    /// A color no other call of this runtime has returned, owned by the next loop in
    /// round-robin order: give one to each connection or task to spread them across cores.
    /// Any thread.
    public func makeColor() -> Color {
        placement.makeColor()
    }

    /// A fresh color owned by loop `index` (apart from `makeColor()`'s): for work that
    /// should start where something already lives, such as an accepted connection. Any thread.
    public func makeColor(onLoop index: Int) -> Color {
        placement.makeColor(onLoop: index)
    }

    /// Loop `index`'s own color, shared with no user color (see `Placement.loopColor`).
    func loopColor(_ index: Int) -> Color {
        placement.loopColor(index)
    }

    /// The index of the loop running on this thread when it is one of this runtime's, else
    /// nil. No reference count is touched. Any thread. (For per-loop state found from the
    /// loop it is used on, whatever color runs: cached-read budgets, a file route's cache.)
    @_spi(Engine) public var currentLoopIndex: Int? {
        guard let raw = chroma_current_loop() else { return nil }
        let index = raw.assumingMemoryBound(to: LoopCore.LocalQueue.self).pointee.loop._withUnsafeGuaranteedRef { $0.index }
        guard index < loopCount, cores[index].identity == raw else { return nil }
        return index
    }

    /// The runtime whose callback is running on this thread, or nil outside callbacks.
    public static var current: Runtime? {
        guard let raw = chroma_current_loop() else { return nil }
        return raw.assumingMemoryBound(to: LoopCore.LocalQueue.self).pointee.loop.takeUnretainedValue().runtime
    }

    // MARK: Work

    /// Throws unless the runtime is running. One relaxed load on the hot path.
    @inlinable @inline(__always) func checkRunning(_ operation: StaticString) throws(ChromaError) {
        let current = state.load(ordering: .relaxed)
        if current != Lifecycle.running.rawValue { try checkRunningSlowly(current, operation) }
    }

    /// `checkRunning` when the state is not plain `running`: returns when it is running
    /// with chains on, else throws.
    @usableFromInline func checkRunningSlowly(_ current: UInt8, _ operation: StaticString) throws(ChromaError) {
        if lifecycle(current) != Lifecycle.running.rawValue { throw notRunning(current, operation) }
    }

    /// True when jobs keep chains (see `Diagnostics.chains`).
    var keepsChains: Bool { diagnostics.chains }

    @usableFromInline func notRunning(_ raw: UInt8, _ operation: StaticString) -> ChromaError {
        let current = lifecycle(raw)
        if current < Lifecycle.running.rawValue {
            return .invalidState(operation: "\(operation)", reason: "the runtime is not started; call start() first")
        }
        return .shutDown(operation: "\(operation)")
    }

    /// Queues `body` to run on `color` (libasync's `cpucb`). Bodies of one color never
    /// overlap, and those queued from one thread run in the order queued.
    ///
    /// Cost: no allocation beyond the closure's own context; none at all for a closure that
    /// captures nothing or one stored and re-queued. From the color's own loop it is a ring
    /// buffer push; from other threads one atomic fetch-add claims a slot in the loop's
    /// lock-free mailbox, and only a post that finds the loop asleep wakes it.
    ///
    /// `fileID` and `line` are the call's `EnqueueSite`: leave them to their defaults.
    ///
    /// Throws `.shutDown` once `stop()` was called, `.invalidState` before `start()`.
    @inlinable @inline(__always)
    public func execute(on color: Color = .main, fileID: StaticString = #fileID, line: UInt = #line,
                        _ body: consuming @escaping @Sendable () -> Void) throws(ChromaError) {
        let site = EnqueueSite.word(fileID, line)
        let current = state.load(ordering: .relaxed)
        if current != Lifecycle.running.rawValue { return try executeSlowly(current, color: color, site: site, body) }
        if !post(Job(color: color.rawValue, site: site, body: consume body), color: color.rawValue) {
            throw .shutDown(operation: "execute")
        }
    }

    /// `execute` when the state is not plain `running`: with chains on, the body is wrapped
    /// so that it runs with the chain of the callback queuing it; otherwise a throw.
    @usableFromInline @inline(never)
    func executeSlowly(_ current: UInt8, color: Color, site: UInt64, _ body: @escaping @Sendable () -> Void) throws(ChromaError) {
        try checkRunningSlowly(current, "execute")
        // Outside callbacks there is no chain to pass on: a plain job, no record.
        guard chroma_current_color() != Color.noneRawValue else {
            if !post(Job(color: color.rawValue, site: site, body: body), color: color.rawValue) { throw .shutDown(operation: "execute") }
            return
        }
        let job = ChainedJob.make(color: color.rawValue, site: site, body: body)
        if !post(job, color: color.rawValue) {
            ChainedJob.discard(job)
            throw .shutDown(operation: "execute")
        }
    }

    /// `body`, run with the chain of the callback queuing it now (see `Chain`).
    static func chained(_ body: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
        let chain = Chain.forChild()
        return { chain.run(body) }
    }

    /// `body` with chains when they are on, else itself: for work registered now that runs
    /// later (timers, watches, pool completions).
    func chainedIfOn(_ body: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
        keepsChains ? Runtime.chained(body) : body
    }

    /// Queues `body` on `color` with a site word given (internal callers that forward a
    /// registration's site). Same rules as `execute`.
    func execute(on color: Color, site: UInt64, _ body: @escaping @Sendable () -> Void) throws(ChromaError) {
        try checkRunning("execute")
        if !post(Job(color: color.rawValue, site: site, body: body), color: color.rawValue) {
            throw .shutDown(operation: "execute")
        }
    }

    /// Queues `function(context)` to run on `color`: the same guarantees as
    /// `execute(on:_:)`, with no allocation and no reference counting at all, since a
    /// C-convention function and a raw pointer are plain values. A Swift closure literal that
    /// captures nothing converts to `@convention(c)` by itself.
    ///
    /// `context` is yours: keep what it points to alive, and unshared except through colors,
    /// until the function has run (a callback queued before `stop()` always runs).
    /// (With chains on, a function job carries its own site but no chain: it has no closure
    /// to carry one.)
    @inlinable @inline(__always)
    public func execute(on color: Color = .main, context: UnsafeMutableRawPointer?, fileID: StaticString = #fileID, line: UInt = #line,
                        _ function: @convention(c) (UnsafeMutableRawPointer?) -> Void) throws(ChromaError) {
        try checkRunning("execute")
        if !post(Job(color: color.rawValue, site: EnqueueSite.word(fileID, line), function: function, context: context), color: color.rawValue) {
            throw .shutDown(operation: "execute")
        }
    }

    /// Runs `body` on `color` after `delay`, and then every `interval` if one is given
    /// (libasync's `delaycb`). Never early; in deadline order, FIFO among equal deadlines.
    /// The returned `Timer` cancels it from any thread.
    @discardableResult
    public func schedule(after delay: Duration, repeating interval: Duration? = nil, on color: Color = .main,
                         fileID: StaticString = #fileID, line: UInt = #line,
                         _ body: @escaping @Sendable () -> Void) throws(ChromaError) -> Timer {
        try schedule(after: delay, repeating: interval, on: color, site: EnqueueSite.word(fileID, line), onShutdown: nil, body)
    }

    /// `schedule`, with `onShutdown` run (on the loop) if the runtime shuts down while the
    /// timer is pending.
    func schedule(after delay: Duration, repeating interval: Duration?, on color: Color, site: UInt64,
                  onShutdown: (@Sendable () -> Void)?, _ body: @escaping @Sendable () -> Void) throws(ChromaError) -> Timer {
        guard let delayNs = delay.chromaNanoseconds else {
            throw .invalidArgument(operation: "schedule", detail: "delay must be non-negative, got \(delay)")
        }
        var intervalNs: UInt64?
        if let interval {
            guard let ns = interval.chromaNanoseconds, ns > 0 else {
                throw .invalidArgument(operation: "schedule", detail: "repeat interval must be positive, got \(interval)")
            }
            intervalNs = ns
        }
        try checkRunning("schedule")
        // The heap entry goes on the queue of the loop that runs the color now; if the color
        // moves later, the fire is forwarded (`Loop.runOrForward`), so it does not pin.
        let loop = loops[placement.loopIndex(of: color)]
        let timer = Timer(color: color, site: site, intervalNanoseconds: intervalNs, queue: loop.timers, onShutdown: onShutdown,
                          body: chainedIfOn(body))
        let deadline = monotonicNanoseconds() &+ delayNs
        if loop.isCurrent {
            loop.timers.insert(timer, deadline: deadline)
        } else {
            // As the loop's own color: the insertion touches only that loop's timer queue.
            guard loop.enqueue(Job(color: loopColor(loop.index).rawValue) { loop.timers.insert(timer, deadline: deadline) }) else {
                throw .shutDown(operation: "schedule")
            }
        }
        return timer
    }

    /// Runs `body` on `color` each time `fd` becomes ready for something in `interest`
    /// (libasync's `fdcb`, but persistent). `body` gets the readiness that fired.
    ///
    /// Throws `.badDescriptor` for a negative or closed fd, `.unpollable` for one epoll
    /// refuses (a regular file, a directory), `.alreadyWatched` when `fd` is already watched
    /// for part of `interest` or by another color, `.invalidArgument` for an empty interest.
    ///
    /// As with any epoll program: watching a descriptor and closing a `dup()` of it can lose
    /// or misreport events (epoll tracks the open file, not the number); libevent's batched
    /// interest changes, which Chroma's loops use, make that more likely.
    @discardableResult
    public func watch(_ fd: Int32, for interest: Interest, on color: Color = .main,
                      fileID: StaticString = #fileID, line: UInt = #line,
                      _ body: @escaping @Sendable (Interest) -> Void) throws(ChromaError) -> Watch {
        guard !interest.isEmpty else {
            throw .invalidArgument(operation: "watch", detail: "interest must name .readable or .writable")
        }
        guard fd >= 0 else { throw .badDescriptor(operation: "watch", fd: fd, errno: EBADF) }
        if fcntl(fd, F_GETFD) == -1 { throw .badDescriptor(operation: "watch", fd: fd, errno: errno) }
        // The loops batch their epoll changes (libevent's changelist), so epoll's refusal
        // would otherwise come only at the next poll, after `watch` returned.
        let refusal = chroma_epoll_refusal(fd)
        if refusal != 0 { throw .unpollable(operation: "watch", fd: fd, call: "epoll_ctl", errno: refusal) }
        try checkRunning("watch")
        var watched = body
        if keepsChains {
            let chain = Chain.forChild()
            watched = { ready in chain.run { body(ready) } }
        }
        let watch = Watch(target: .fd(fd), interest: interest, color: color, site: EnqueueSite.word(fileID, line),
                          loop: pinnedLoop(for: color), runtime: self, body: watched)
        try handles.register(watch, operation: "watch")
        return watch
    }

    /// Runs `body` on `color` each time the process receives `signal` (libasync's `sigcb`),
    /// as an ordinary callback rather than inside a signal handler. While watched, the
    /// signal's default action (such as exiting on SIGINT) is replaced.
    ///
    /// Throws `.invalidArgument` for a signal number out of range, or SIGKILL/SIGSTOP.
    @discardableResult
    public func onSignal(_ signal: Int32, on color: Color = .main, fileID: StaticString = #fileID, line: UInt = #line,
                         _ body: @escaping @Sendable () -> Void) throws(ChromaError) -> Watch {
        guard signal > 0, signal < 65, signal != SIGKILL, signal != SIGSTOP else {
            throw .invalidArgument(operation: "onSignal", detail: "signal \(signal) cannot be caught")
        }
        try checkRunning("onSignal")
        // libevent delivers signals to one base only; loop 0 takes them all and forwards each
        // to its color with `execute`, so the color itself is not pinned.
        let chained = chainedIfOn(body)
        let watch = Watch(target: .signal(signal), interest: [], color: color, site: EnqueueSite.word(fileID, line),
                          loop: loops[0], runtime: self) { _ in chained() }
        try handles.register(watch, operation: "onSignal")
        return watch
    }
}

/// What `shutdown()` cancelled: work that could not run because the runtime stopped.
/// Callbacks queued with `execute` are never here: all of them run before the loops exit.
public struct ShutdownReport: Sendable, Equatable {
    /// Timers still pending at shutdown (their `isCancelled` is now true).
    public var cancelledTimers = 0
    /// Watches (fd and signal) still registered at shutdown (their `isCancelled` is now true).
    public var cancelledWatches = 0
    /// Blocking-pool jobs still queued at shutdown: each one's completion reported
    /// `cancelled` (jobs already running finished normally).
    public var cancelledBlockingJobs = 0
    /// An empty report.
    public init() {}
}
