import Glibc

/// Where threads other than the loop's own queue jobs for it.
///
/// Producers append under a `pthread_mutex_t`; the loop swaps the whole buffer out in one
/// short critical section, so the lock's cache line moves once per batch, not once per job.
/// `push` tells the producer whether it found the mailbox empty: only that producer wakes
/// the loop, so a burst of posts costs one `event_active`. A plain struct inside
/// `LoopCore`'s memory: no reference counting on the producer's path.
struct Mailbox {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var buffer: UnsafeMutablePointer<Job>
    private var count = 0
    private var capacity: Int
    private var closed = false
    /// The buffer the loop drains from; only the loop thread touches it (in `take`).
    private var spare: UnsafeMutablePointer<Job>
    private var spareCapacity: Int

    enum PushResult { case queued(wasEmpty: Bool), closed }

    init(capacity: Int = 1024) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        // Adaptive: the critical sections are a few stores, so a contended producer spins
        // briefly instead of sleeping in the kernel.
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
        pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
        self.capacity = capacity
        buffer = .allocate(capacity: capacity)
        spareCapacity = capacity
        spare = .allocate(capacity: capacity)
    }

    /// Drops any jobs left and frees the buffers. Call once, when the loop is gone.
    mutating func destroy() {
        buffer.deinitialize(count: count)
        buffer.deallocate()
        spare.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Any thread. Refused once the loop has closed the mailbox for shutdown.
    @inline(__always) mutating func push(_ job: __owned Job) -> PushResult {
        pthread_mutex_lock(mutex)
        if closed {
            pthread_mutex_unlock(mutex)
            return .closed
        }
        if count == capacity { grow() }
        (buffer + count).initialize(to: job)
        count &+= 1
        let wasEmpty = count == 1
        pthread_mutex_unlock(mutex)
        return .queued(wasEmpty: wasEmpty)
    }

    /// Loop thread only: takes every queued job, in order, as one batch the caller must
    /// consume (move out or deinitialize) before the next `take`. With `closeIfEmpty`, an
    /// empty mailbox is closed. Running a batch in place saves copying it into the run queue.
    mutating func take(closeIfEmpty close: Bool = false) -> UnsafeMutableBufferPointer<Job> {
        pthread_mutex_lock(mutex)
        let n = count
        if n == 0 {
            if close { closed = true }
            pthread_mutex_unlock(mutex)
            return UnsafeMutableBufferPointer(start: spare, count: 0)
        }
        swap(&buffer, &spare)
        swap(&capacity, &spareCapacity)
        count = 0
        pthread_mutex_unlock(mutex)
        return UnsafeMutableBufferPointer(start: spare, count: n)
    }

    private mutating func grow() {
        let bigger = UnsafeMutablePointer<Job>.allocate(capacity: capacity * 2)
        bigger.moveInitialize(from: buffer, count: count)
        buffer.deallocate()
        buffer = bigger
        capacity *= 2
    }
}
