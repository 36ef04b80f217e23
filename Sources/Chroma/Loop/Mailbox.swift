import Glibc

/// Where threads other than the loop's own queue jobs for it.
///
/// Producers append under a `pthread_mutex_t`; the loop swaps the whole buffer out in one
/// short critical section, so the lock's cache line moves once per batch, not once per job.
/// `push` tells the producer whether it found the mailbox empty: only that producer wakes
/// the loop, so a burst of posts costs one `event_active`.
///
/// A handle of two pointers with non-mutating methods: the mutable state lives behind
/// `state` and is touched only with the mutex held, so concurrent producers never make
/// overlapping Swift accesses to one variable (which ThreadSanitizer reports even when a
/// lock orders the actual writes), and no reference count is touched on the way.
struct Mailbox {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let state: UnsafeMutablePointer<State>

    private struct State {
        var buffer: UnsafeMutablePointer<Job>
        var count = 0
        var capacity: Int
        var closed = false
        /// The buffer the loop drains from; only the loop thread uses its contents.
        var spare: UnsafeMutablePointer<Job>
        var spareCapacity: Int
    }

    enum PushResult { case queued(wasEmpty: Bool), closed }

    init(capacity: Int = 1024) {
        // Own cache lines for the lock and the state: producers write them, the loop's
        // thread writes its run queue elsewhere.
        mutex = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 128).bindMemory(to: pthread_mutex_t.self, capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        // Adaptive: the critical sections are a few stores, so a contended producer spins
        // briefly instead of sleeping in the kernel.
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
        pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
        state = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 128).bindMemory(to: State.self, capacity: 1)
        state.initialize(to: State(buffer: .allocate(capacity: capacity), capacity: capacity,
                                   spare: .allocate(capacity: capacity), spareCapacity: capacity))
    }

    /// Drops any jobs left and frees everything. Call once, when the loop is gone.
    func destroy() {
        state.pointee.buffer.deinitialize(count: state.pointee.count)
        state.pointee.buffer.deallocate()
        state.pointee.spare.deallocate()
        state.deinitialize(count: 1)
        UnsafeMutableRawPointer(state).deallocate()
        pthread_mutex_destroy(mutex)
        UnsafeMutableRawPointer(mutex).deallocate()
    }

    /// Any thread. Refused once the loop has closed the mailbox for shutdown.
    @inline(__always) func push(_ job: consuming Job) -> PushResult {
        pthread_mutex_lock(mutex)
        if state.pointee.closed {
            pthread_mutex_unlock(mutex)
            return .closed
        }
        let count = state.pointee.count
        if count == state.pointee.capacity { grow() }
        (state.pointee.buffer + count).initialize(to: consume job)
        state.pointee.count = count &+ 1
        pthread_mutex_unlock(mutex)
        return .queued(wasEmpty: count == 0)
    }

    /// Loop thread only: takes every queued job, in order, as one batch the caller must
    /// consume (run in place, move out or deinitialize) before the next `take`. With
    /// `closeIfEmpty`, an empty mailbox is closed. Running a batch in place saves copying it.
    func take(closeIfEmpty close: Bool = false) -> UnsafeMutableBufferPointer<Job> {
        pthread_mutex_lock(mutex)
        let n = state.pointee.count
        if n == 0 {
            if close { state.pointee.closed = true }
            let spare = state.pointee.spare
            pthread_mutex_unlock(mutex)
            return UnsafeMutableBufferPointer(start: spare, count: 0)
        }
        let full = state.pointee.buffer
        let fullCapacity = state.pointee.capacity
        state.pointee.buffer = state.pointee.spare
        state.pointee.capacity = state.pointee.spareCapacity
        state.pointee.spare = full
        state.pointee.spareCapacity = fullCapacity
        state.pointee.count = 0
        pthread_mutex_unlock(mutex)
        return UnsafeMutableBufferPointer(start: full, count: n)
    }

    /// With the mutex held.
    private func grow() {
        let capacity = state.pointee.capacity
        let bigger = UnsafeMutablePointer<Job>.allocate(capacity: capacity * 2)
        bigger.moveInitialize(from: state.pointee.buffer, count: state.pointee.count)
        state.pointee.buffer.deallocate()
        state.pointee.buffer = bigger
        state.pointee.capacity = capacity * 2
    }
}
