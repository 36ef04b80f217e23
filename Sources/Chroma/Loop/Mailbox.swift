import Glibc

/// Where threads other than the loop's own queue jobs for it.
///
/// Producers append under a `pthread_mutex_t`; the loop swaps the whole buffer out in one
/// short critical section, so the lock's cache line moves once per batch, not once per job.
/// `push` tells the producer whether it found the mailbox empty: only that producer wakes
/// the loop, so a burst of posts costs one `event_active`.
///
/// The mutex and everything it guards share ONE 64-byte cache line, so a producer's push
/// pulls one line from the consumer's core, not two. The loop's spare buffer lives apart
/// (in `spare`), since only the loop's thread touches it.
///
/// A handle of pointers with non-mutating methods: the shared state is touched only with
/// the mutex held, so concurrent producers never make overlapping Swift accesses to one
/// variable (which ThreadSanitizer reports even when a lock orders the actual writes), and
/// no reference count is touched on the way.
@usableFromInline
struct Mailbox {
    @usableFromInline let shared: UnsafeMutablePointer<Shared>
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// The buffer the loop drains from, and its capacity: the loop's thread only.
    private let spare: UnsafeMutablePointer<(buffer: UnsafeMutablePointer<Job>, capacity: Int32)>

    @usableFromInline
    struct Shared {
        var mutex = pthread_mutex_t()
        @usableFromInline var buffer: UnsafeMutablePointer<Job>
        @usableFromInline var count: Int32 = 0
        @usableFromInline var capacity: Int32
        @usableFromInline var closed = false
    }

    @usableFromInline enum PushResult { case queued(wasEmpty: Bool), closed }

    init(capacity: Int32 = 1024) {
        precondition(MemoryLayout<Shared>.size <= 64, "the mailbox's shared state must fit one cache line")
        shared = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64).bindMemory(to: Shared.self, capacity: 1)
        shared.initialize(to: Shared(buffer: .allocate(capacity: Int(capacity)), capacity: capacity))
        mutex = (UnsafeMutableRawPointer(shared) + MemoryLayout<Shared>.offset(of: \.mutex)!)
            .assumingMemoryBound(to: pthread_mutex_t.self)
        pthread_mutex_init(mutex, nil)
        spare = .allocate(capacity: 1)
        spare.initialize(to: (.allocate(capacity: Int(capacity)), capacity))
    }

    /// Drops any jobs left and frees everything. Call once, when the loop is gone.
    func destroy() {
        for i in 0..<Int(shared.pointee.count) { Job.discard(shared.pointee.buffer + i) }
        shared.pointee.buffer.deallocate()
        spare.pointee.buffer.deallocate()
        spare.deallocate()
        pthread_mutex_destroy(mutex)
        shared.deinitialize(count: 1)
        UnsafeMutableRawPointer(shared).deallocate()
    }

    /// Any thread. Refused once the loop has closed the mailbox for shutdown.
    @inlinable @inline(__always) func push(_ job: consuming Job) -> PushResult {
        pthread_mutex_lock(mutex)
        if shared.pointee.closed {
            pthread_mutex_unlock(mutex)
            return .closed
        }
        let count = shared.pointee.count
        if count == shared.pointee.capacity { grow() }
        (shared.pointee.buffer + Int(count)).initialize(to: consume job)
        shared.pointee.count = count &+ 1
        pthread_mutex_unlock(mutex)
        return .queued(wasEmpty: count == 0)
    }

    /// Loop thread only: takes every queued job, in order, as one batch the caller must
    /// consume (run in place, move out or deinitialize) before the next `take`. With
    /// `closeIfEmpty`, an empty mailbox is closed. Running a batch in place saves copying it.
    func take(closeIfEmpty close: Bool = false) -> UnsafeMutableBufferPointer<Job> {
        let (empty, emptyCapacity) = spare.pointee
        pthread_mutex_lock(mutex)
        let n = Int(shared.pointee.count)
        if n == 0 {
            if close { shared.pointee.closed = true }
            pthread_mutex_unlock(mutex)
            return UnsafeMutableBufferPointer(start: empty, count: 0)
        }
        let full = shared.pointee.buffer
        let fullCapacity = shared.pointee.capacity
        shared.pointee.buffer = empty
        shared.pointee.capacity = emptyCapacity
        shared.pointee.count = 0
        pthread_mutex_unlock(mutex)
        spare.pointee = (full, fullCapacity)
        return UnsafeMutableBufferPointer(start: full, count: n)
    }

    /// With the mutex held.
    @usableFromInline func grow() {
        let capacity = shared.pointee.capacity
        precondition(capacity < Int32.max / 2, "mailbox overflow")
        let bigger = UnsafeMutablePointer<Job>.allocate(capacity: Int(capacity) * 2)
        bigger.moveInitialize(from: shared.pointee.buffer, count: Int(shared.pointee.count))
        shared.pointee.buffer.deallocate()
        shared.pointee.buffer = bigger
        shared.pointee.capacity = capacity * 2
    }
}
