import CChroma
import Glibc

/// A color as a Swift `SerialExecutor`: jobs enqueued here run on the color's owning
/// loop, as that color, in order, and never overlap the color's callbacks. Get one from
/// `runtime.executor(for:)`; pin an actor to it:
///
/// ```swift
/// actor Session {
///     let executor: ColorExecutor
///     nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
///     init(runtime: Runtime) { executor = runtime.executor(for: runtime.makeColor()) }
/// }
/// ```
///
/// The actor's methods then serialize with every `execute(on:)` callback, timer, watch and
/// pool completion of that color: one color, one sequence of work, whichever way it was
/// written. A runtime hands out one `ColorExecutor` per color (while any is alive), so
/// actors of one color share one executor and calls between them run inline, with no hop.
/// For nonisolated async code, use the color's `taskExecutor`.
///
/// Jobs go straight into the loop's queues as 32-byte records (no closure, no allocation):
/// from the loop's own thread into its run queue, from elsewhere through its mailbox, where
/// a burst of hops costs one wakeup.
///
/// Keep the executor alive while jobs are queued on it (an actor holding it in a stored
/// property does). Jobs enqueued before `start()` or after shutdown cannot reach a loop:
/// they run on one fallback thread ("chroma-stranded"), still one at a time, so a task
/// that outlives its runtime ends instead of hanging.
public final class ColorExecutor: SerialExecutor, @unchecked Sendable {
    // Safe to share: immutable after init.
    let queue: ColorQueue
    /// The color whose jobs this executor runs.
    public var color: Color { queue.color }
    /// The runtime the color belongs to.
    public var runtime: Runtime { queue.runtime }

    /// The task executor of the same color.
    public let taskExecutor: ColorTaskExecutor

    init(runtime: Runtime, color: Color) {
        queue = ColorQueue(runtime: runtime, color: color)
        taskExecutor = ColorTaskExecutor(queue: queue)
    }

    deinit {
        queue.runtime.executors.forget(queue.color)
    }

    /// Queues `job` on the color's loop. Any thread.
    public func enqueue(_ job: consuming ExecutorJob) {
        queue.enqueue(UnownedJob(job), executor: UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque()), isTaskExecutor: false)
    }

    /// Compares by color and runtime, so every executor of one color is one context.
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(complexEquality: self)
    }

    /// True for an executor of the same color of the same runtime.
    public func isSameExclusiveExecutionContext(other: ColorExecutor) -> Bool {
        other.queue.color == queue.color && other.queue.runtime === queue.runtime
    }

    /// Whether the calling code runs as this color: inside a callback or job of the color,
    /// on its loop.
    public func isIsolatingCurrentContext() -> Bool? {
        queue.isCurrent
    }

    /// Traps unless the calling code runs as this color. Lets `assumeIsolated` and
    /// `preconditionIsolated` succeed inside plain callbacks of the color.
    public func checkIsolated() {
        precondition(queue.isCurrent, "not running on \(queue.color): this code is not isolated to the color's executor")
    }
}

/// A color as a Swift `TaskExecutor`: nonisolated async code of a task that prefers it
/// (`Task(executorPreference:)`, `withTaskExecutorPreference`, `runtime.spawn`) runs on the
/// color's loop, as the color, serialized with its callbacks and its actors. Get one from
/// `runtime.taskExecutor(for:)`. Same queueing and shutdown rules as `ColorExecutor`.
public final class ColorTaskExecutor: TaskExecutor, @unchecked Sendable {
    // Safe to share: immutable after init.
    let queue: ColorQueue
    /// The color whose jobs this executor runs.
    public var color: Color { queue.color }

    init(queue: ColorQueue) {
        self.queue = queue
    }

    /// Queues `job` on the color's loop. Any thread.
    public func enqueue(_ job: consuming ExecutorJob) {
        queue.enqueue(UnownedJob(job), executor: UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque()), isTaskExecutor: true)
    }
}

/// What both executors of a color share: the color, and the runtime whose placement says
/// which loop runs it (asked at each enqueue, never cached).
struct ColorQueue: Sendable {
    let runtime: Runtime
    let color: Color

    init(runtime: Runtime, color: Color) {
        precondition(MemoryLayout<UnownedJob>.size == MemoryLayout<UnsafeRawPointer>.size,
                     "a Swift job reference travels as one pointer in a Job record")
        self.runtime = runtime
        self.color = color
    }

    /// An executor pointer's low bit (objects are 16-byte aligned) says which kind it is.
    static let taskExecutorBit: UInt = 1

    @inline(__always) func enqueue(_ job: UnownedJob, executor: UnsafeRawPointer, isTaskExecutor: Bool) {
        let raw = unsafeBitCast(job, to: UnsafeRawPointer.self)
        let tagged = isTaskExecutor ? executor + Int(ColorQueue.taskExecutorBit) : executor
        let accepted = runtime.isAcceptingWork && runtime.post(Job(color: color.rawValue, executorJob: raw, executor: tagged), color: color.rawValue)
        if !accepted { StrandedJobs.shared.run(raw, executor: tagged) }
    }

    /// A callback or job of the color runs on this thread, a loop of this runtime. The color
    /// alone says so: its jobs run only where it lives, one at a time, even while it moves
    /// (`Migration`), so the owner word need not be consulted (mid-move it may still name
    /// the old owner while the new one already runs the color's first jobs).
    @inline(__always) var isCurrent: Bool {
        Color.currentRawValue == color.rawValue && runtime.currentLoopIndex != nil
    }

    /// Runs a job from the loop's queues (loop thread, with the current color set: the
    /// runtime hands this to its loops as their `Callback.ExecutorJobs`), or from the
    /// fallback thread.
    @inline(__always) static func run(job: UnsafeRawPointer, executor tagged: UnsafeRawPointer) {
        let unowned = unsafeBitCast(job, to: UnownedJob.self)
        let bits = UInt(bitPattern: tagged)
        if bits & taskExecutorBit != 0 {
            let executor = Unmanaged<ColorTaskExecutor>.fromOpaque(UnsafeRawPointer(bitPattern: bits & ~taskExecutorBit)!).takeUnretainedValue()
            unowned.runSynchronously(on: executor.asUnownedTaskExecutor())
        } else {
            let executor = Unmanaged<ColorExecutor>.fromOpaque(tagged).takeUnretainedValue()
            unowned.runSynchronously(on: executor.asUnownedSerialExecutor())
        }
    }
}

extension Runtime {
    /// The executor for `color`: actors pinned to it run on the color's loop, serialized
    /// with the color's callbacks. The same object for the same color while one is alive
    /// (so same-color calls never hop). Any thread.
    public func executor(for color: Color) -> ColorExecutor {
        executors.executor(for: color, runtime: self)
    }

    /// The task executor for `color`: tasks preferring it run their nonisolated code on the
    /// color's loop, serialized with the color's callbacks. Any thread.
    public func taskExecutor(for color: Color) -> ColorTaskExecutor {
        executor(for: color).taskExecutor
    }

    /// True while the loops run and take work (from the end of `start()` until they close
    /// their queues during shutdown, when `enqueue` starts refusing).
    var isAcceptingWork: Bool {
        let current = lifecycle(state.load(ordering: .acquiring))
        return current == Lifecycle.running.rawValue || current == Lifecycle.stopping.rawValue
    }
}

/// Where executor jobs go when their runtime no longer runs: one thread that runs them one
/// at a time, so they still never overlap, and tasks end instead of hanging forever.
final class StrandedJobs: @unchecked Sendable {
    // Safe to share: `queue` and `started` are guarded by `lock`.
    static let shared = StrandedJobs()
    private let lock = Lock()
    private let ready = Condition()
    private var queue: [(job: UnsafeRawPointer, executor: UnsafeRawPointer)] = []
    private var started = false

    func run(_ job: UnsafeRawPointer, executor: UnsafeRawPointer) {
        lock.lock()
        queue.append((job, executor))
        if !started {
            started = true
            _ = startThread { [self] in loop() }
        }
        ready.signal()
        lock.unlock()
    }

    private func loop() {
        _ = chroma_name_current_thread("chroma-stranded")
        lock.lock()
        while true {
            while queue.isEmpty { ready.wait(lock) }
            let batch = queue
            queue.removeAll()
            lock.unlock()
            for entry in batch { ColorQueue.run(job: entry.job, executor: entry.executor) }
            lock.lock()
        }
    }
}

/// A runtime's live color executors, one per color, held weakly: an executor lives as long
/// as the actors and tasks that use it, and leaves the table when it goes.
final class ExecutorTable: @unchecked Sendable {
    // Safe to share: `table` is only touched with `lock` held.
    private let lock = Lock()
    private var table: [UInt64: Weak] = [:]

    private struct Weak {
        weak var executor: ColorExecutor?
    }

    func executor(for color: Color, runtime: Runtime) -> ColorExecutor {
        lock.lock()
        defer { lock.unlock() }
        if let live = table[color.rawValue]?.executor { return live }
        let made = ColorExecutor(runtime: runtime, color: color)
        table[color.rawValue] = Weak(executor: made)
        return made
    }

    /// From a dying executor: drops its entry unless a new executor took the color already.
    func forget(_ color: Color) {
        // The weak load makes a strong reference; if it were the last one when released,
        // its deinit would call back in here. Release it only after unlocking.
        var live: ColorExecutor?
        lock.lock()
        live = table[color.rawValue]?.executor
        if live == nil { table[color.rawValue] = nil }
        lock.unlock()
        live = nil
    }
}
