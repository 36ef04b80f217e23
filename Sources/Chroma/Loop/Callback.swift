import CChroma

/// Where every callback starts and ends: the one place that sets `Color.current` for user
/// code and clears it after. Queued jobs (closures, C functions, Swift executor jobs),
/// timers, watches, connections, listeners and HTTP handlers all start here, so whatever
/// must see each callback (priorities, moving colors, stall detection, budgets per pass of
/// callbacks) hooks in here alone.
///
/// Two shapes, one rule:
/// - `run(as:_:)` for a callback libevent calls on its own (an fd, a timer): start, run, end.
/// - `run(job:)` for the drain's batches: jobs run back to back, each start replaces the
///   previous color, and `endBatch()` clears it once when the batch ends (one thread-local
///   store per job instead of two).
///
/// Each start publishes the callback's color and enqueue site and counts the start, in the
/// thread's `chroma_thread_state`: the stall watchdog reads it from its own thread, a crash
/// handler on this one, and `Runtime.statistics()` counts callbacks from it.
///
/// Threading: loop threads only; the state lives in a C thread-local (`CChroma`).
@usableFromInline
enum Callback {
    /// How a loop runs a Swift executor job: passed in by the runtime (see `Runtime.init`)
    /// and kept in the loop's `LocalQueue`, so this layer never reaches up into
    /// `Concurrency/`. Arguments: the job, and its tagged executor pointer.
    typealias ExecutorJobs = @convention(c) (UnsafeRawPointer, UnsafeRawPointer) -> Void

    /// Runs `body` as `color` (queued at `site`, an `EnqueueSite` word), then clears the
    /// current color and ends the pass. Loop thread only. Called inside another callback (a
    /// job that starts a connection's first callback), it restores that callback's color and
    /// site afterwards instead, and the pass goes on.
    @inlinable @inline(__always) static func run(as color: Color, site: UInt64 = 0, _ body: () -> Void) {
        let outer = chroma_current_color()
        let outerSite = chroma_current_site()
        chroma_begin_callback(color.rawValue, site)
        body()
        if outer == Color.noneRawValue {
            chroma_end_pass()
        } else {
            chroma_set_current_color(outer)
            chroma_set_current_site(outerSite)
        }
    }

    /// Runs `body` as `color` inside the running callback (`Runtime.runHere`): the color
    /// and site switch and come back after, but no callback start is counted, so the
    /// statistics see one callback and the stall watchdog keeps timing the one that holds
    /// the loop. Loop thread, inside a callback.
    @inlinable @inline(__always) static func runNested(as color: Color, site: UInt64, _ body: () -> Void) {
        let outer = chroma_current_color()
        let outerSite = chroma_current_site()
        chroma_set_current_color(color.rawValue)
        chroma_set_current_site(site)
        body()
        chroma_set_current_color(outer)
        chroma_set_current_site(outerSite)
    }

    /// Runs the job in `slot` as its color, leaving the slot uninitialized; the color stays
    /// set until the next job or `endBatch()`. Reads what it needs before calling: the call
    /// may grow (move) the queue the slot lives in. Loop thread only.
    ///
    /// The executor-job runner is looked up only on that branch (through the thread's loop),
    /// not passed down the drain: a parameter live across every closure call cost the
    /// closure path its registers.
    @inline(__always) static func run(job slot: UnsafeMutablePointer<Job>) {
        let tagged = slot.pointee.tagged
        // The tagged word as it is: readers clear the tag bits (`Color.currentRawValue`). A
        // mask here kept a 64-bit constant in a register across the calls, where it competed
        // with the closure context's register.
        chroma_begin_callback(tagged, slot.pointee.site)
        if tagged & (Job.functionTag | Job.executorTag) == 0 {
            Job.runClosure(at: UnsafeMutableRawPointer(slot).advanced(by: 8))
        } else if tagged & Job.functionTag != 0 {
            Job.callFunction(slot.pointee.word0, slot.pointee.word1)
        } else {
            let local = chroma_current_loop().unsafelyUnwrapped.assumingMemoryBound(to: LoopCore.LocalQueue.self)
            local.pointee.executorJobs(slot.pointee.word0.unsafelyUnwrapped, slot.pointee.word1.unsafelyUnwrapped)
        }
    }

    /// Ends a batch of `run(job:)` calls: no color is current any more, and a new pass of
    /// callbacks begins (what is budgeted per pass, such as reads from the page cache on
    /// the loop, starts afresh; see `CachedReads`).
    @inline(__always) static func endBatch() {
        chroma_end_pass()
    }
}
