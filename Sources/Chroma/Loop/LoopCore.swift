import CChroma

/// The part of a loop the hot path touches: plain pointers into manually allocated,
/// cache-line-aligned memory, so queuing a callback touches no reference count. A shared
/// count on a `Loop` or `Runtime` object would bounce between cores on every post and stop
/// the loops from scaling.
///
/// Threading: `local` belongs to the loop's thread; `mailbox` is lock-free; `wakeup`
/// is written on the loop's thread before `Runtime.start()` returns (the start latch orders
/// it) and only read afterwards.
@usableFromInline
struct LoopCore {
    /// The run queue and its flags: the loop's thread only.
    @usableFromInline let local: UnsafeMutablePointer<LocalQueue>
    @usableFromInline let mailbox: Mailbox
    @usableFromInline let wakeupSlot: UnsafeMutablePointer<Unmanaged<PersistentEvent>?>

    @usableFromInline
    struct LocalQueue {
        /// The loop itself, for `Runtime.current` (the thread-local points here).
        let loop: Unmanaged<Loop>
        @usableFromInline var runQueue = RunQueue()
        /// True while the loop runs jobs, so a local push needs no wakeup.
        @usableFromInline var draining = false
        /// True while the wakeup event is already active.
        @usableFromInline var wakeupActive = false
        /// How the loop runs Swift executor jobs (`Callback.run(job:)`).
        let executorJobs: Callback.ExecutorJobs
        /// True while a `Runtime.runHere` body runs on this loop (they do not nest).
        @usableFromInline var runningHere = false
        /// The loop's wakeup event (`LoopCore.wakeupSlot`), for a local push's rare wake:
        /// reached from here, the common push never loads it. `LoopCore` keeps its own copy
        /// for other threads' wakes, which must not read this line the loop keeps writing.
        @usableFromInline let wakeupSlot: UnsafeMutablePointer<Unmanaged<PersistentEvent>?>
    }

    /// `holeColor`: the loop's own color, which the mailbox gives its holes.
    init(loop: Loop, holeColor: Color) {
        mailbox = Mailbox(holeColor: holeColor.rawValue)
        precondition(MemoryLayout<LocalQueue>.stride <= 128, "a loop's local queue must fit its 128-byte block")
        local = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 128).bindMemory(to: LocalQueue.self, capacity: 1)
        wakeupSlot = .allocate(capacity: 1)
        wakeupSlot.initialize(to: nil)
        local.initialize(to: LocalQueue(loop: .passUnretained(loop), executorJobs: loop.executorJobs, wakeupSlot: wakeupSlot))
    }

    /// Frees everything. Call once, after the loop's thread exited.
    func destroy() {
        local.pointee.runQueue.destroy()
        local.deinitialize(count: 1)
        UnsafeMutableRawPointer(local).deallocate()
        mailbox.destroy()
        wakeupSlot.deallocate()
    }

    /// The address the thread-local `chroma_tls_loop` holds on this loop's thread.
    @inlinable @inline(__always) var identity: UnsafeMutableRawPointer { UnsafeMutableRawPointer(local) }

    /// True on this loop's own thread.
    @inlinable @inline(__always) var isCurrent: Bool { chroma_current_loop() == identity }

    /// Wakes the loop: activates its one persistent wakeup event. Any thread, once started.
    @inlinable @inline(__always) func wake() {
        LoopCore.wake(wakeupSlot)
    }

    /// `wake()` given the loop's wakeup slot alone (as a local queue holds it). Any thread,
    /// once started.
    @inlinable @inline(__always) static func wake(_ slot: UnsafeMutablePointer<Unmanaged<PersistentEvent>?>) {
        slot.pointee.unsafelyUnwrapped._withUnsafeGuaranteedRef { $0.activate() }
    }

    /// Queues `job`. On the loop's own thread it goes to the local run queue; from other
    /// threads to the mailbox, and only a push that finds the loop asleep wakes it.
    /// Returns false only when the mailbox is closed for shutdown: the job is not queued (a
    /// closure's context is released; a function or executor job is the caller's again),
    /// and the caller reports that as `ChromaError.shutDown` or runs it elsewhere.
    @inlinable @inline(__always) func enqueue(_ job: consuming Job) -> Bool {
        if isCurrent {
            pushLocal(job)
            return true
        }
        switch mailbox.push(consume job) {
        case .queued(let wake):
            if wake { self.wake() }
            return true
        case .closed:
            return false
        case .moved:
            preconditionFailure("an unchecked push cannot find its color moved")
        }
    }

    /// Loop thread: pushes `job` onto the run queue, waking the loop if it is not draining.
    @inlinable @inline(__always) func pushLocal(_ job: consuming Job) {
        LoopCore.pushLocal(job, to: local)
    }

    /// `pushLocal` given the loop's local queue alone (`Runtime.localQueues`), so a post that
    /// found it there loads nothing else of the loop.
    @inlinable @inline(__always) static func pushLocal(_ job: consuming Job, to local: UnsafeMutablePointer<LocalQueue>) {
        local.pointee.runQueue.push(consume job)
        if !local.pointee.draining && !local.pointee.wakeupActive {
            local.pointee.wakeupActive = true
            wake(local.pointee.wakeupSlot)
        }
    }
}
