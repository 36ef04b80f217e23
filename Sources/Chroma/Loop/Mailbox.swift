import CChroma
import Glibc

/// Where threads other than the loop's own queue jobs for it.
///
/// Producers append under a `pthread_mutex_t`; the loop swaps the whole buffer out in one
/// short critical section, so the lock's cache line moves once per batch, not once per job.
/// `push` tells the producer whether it found the mailbox empty: only that producer wakes
/// the loop, so a burst of posts costs one `event_active`.
///
/// Records are 16 bytes, not a 24-byte `Job`: every record crosses from the producer's core
/// to the loop's through the cache, and that traffic is what bounds cross-thread posting
/// (the C peer slows by the same factor when its items grow). A job's color is written
/// only when it differs from the previous job's, as a marker record, so a producer posting
/// a run of jobs to one color pays 16 bytes a job. A record is either
/// - a marker: `word0 == Mailbox.marker`, `word1` = the color of the jobs that follow;
/// - a function job: `word0` = the C function with the top bit set, `word1` = its context;
/// - an executor job: `word0` = the Swift job with bit 62 set, `word1` = its `ColorExecutor`;
/// - a closure job: the closure's two words (entry point, retained context).
/// Code addresses never have the top bit set in a Linux user-space process, which `push`
/// checks for function pointers.
///
/// The mutex and everything it guards share ONE 64-byte cache line, so a producer's push
/// pulls one line from the consumer's core, not two. The loop's spare buffer lives apart,
/// since only the loop's thread touches it. A handle of pointers with non-mutating methods:
/// the shared state is touched only with the mutex held, so concurrent producers never make
/// overlapping Swift accesses to one variable (which ThreadSanitizer reports even when a
/// lock orders the actual writes), and no reference count is touched on the way.
@usableFromInline
struct Mailbox {
    @usableFromInline let shared: UnsafeMutablePointer<Shared>
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// The buffer the loop drains from, and its capacity: the loop's thread only.
    private let spare: UnsafeMutablePointer<(buffer: UnsafeMutablePointer<Record>, capacity: Int32)>

    @usableFromInline
    struct Record {
        @usableFromInline var word0: UInt
        @usableFromInline var word1: UInt
        @inlinable init(_ word0: UInt, _ word1: UInt) {
            self.word0 = word0
            self.word1 = word1
        }
    }

    @usableFromInline static var marker: UInt { .max }
    @usableFromInline static var functionBit: UInt { 1 << 63 }
    @usableFromInline static var executorBit: UInt { 1 << 62 }
    /// "No color yet": colors are below 2⁶², so this never matches a real one.
    @usableFromInline static var noColor: UInt64 { .max }

    @usableFromInline
    struct Shared {
        var mutex = pthread_mutex_t()
        @usableFromInline var buffer: UnsafeMutablePointer<Record>
        /// Records in `buffer`; negative once the mailbox is closed for shutdown.
        @usableFromInline var count: Int32 = 0
        @usableFromInline var capacity: Int32
        /// The color of the last record's job, or `noColor` at the start of a buffer.
        @usableFromInline var lastColor: UInt64 = Mailbox.noColor
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
        Mailbox.discard(UnsafeMutableBufferPointer(start: shared.pointee.buffer, count: max(0, Int(shared.pointee.count))))
        shared.pointee.buffer.deallocate()
        spare.pointee.buffer.deallocate()
        spare.deallocate()
        pthread_mutex_destroy(mutex)
        shared.deinitialize(count: 1)
        UnsafeMutableRawPointer(shared).deallocate()
    }

    /// Any thread. Refused once the loop has closed the mailbox for shutdown.
    @inlinable @inline(__always) func push(_ job: consuming Job) -> PushResult {
        let (color, record) = Mailbox.record(for: job)
        pthread_mutex_lock(mutex)
        let count = shared.pointee.count
        if count < 0 {
            pthread_mutex_unlock(mutex)
            return .closed
        }
        appendLocked(record, color: color, count: count)
        pthread_mutex_unlock(mutex)
        return .queued(wasEmpty: count == 0)
    }

    /// Any thread: queues `jobs` in order under one acquisition of the lock, so a batch of
    /// completions costs the loop's cache line one trip and, at most, one wakeup.
    func push(batch jobs: UnsafeBufferPointer<Job>) -> PushResult {
        pthread_mutex_lock(mutex)
        let first = shared.pointee.count
        if first < 0 {
            pthread_mutex_unlock(mutex)
            return .closed
        }
        var count = first
        for job in jobs {
            let (color, record) = Mailbox.record(for: job)
            appendLocked(record, color: color, count: count)
            count = shared.pointee.count
        }
        pthread_mutex_unlock(mutex)
        return .queued(wasEmpty: first == 0)
    }

    /// The record a job travels as, and its color.
    @inlinable @inline(__always) static func record(for job: borrowing Job) -> (UInt64, Record) {
        let color = job.tagged & Job.colorMask
        var word0 = UInt(bitPattern: job.word0)
        if job.tagged & Job.functionTag != 0 {
            precondition(word0 & Mailbox.functionBit == 0, "a code address with the top bit set")
            word0 |= Mailbox.functionBit
        } else if job.tagged & Job.executorTag != 0 {
            precondition(word0 & (Mailbox.functionBit | Mailbox.executorBit) == 0, "a job address with a top bit set")
            word0 |= Mailbox.executorBit
        }
        return (color, Record(word0, UInt(bitPattern: job.word1)))
    }

    /// With the mutex held and the mailbox open (`count` records in it): appends `record`,
    /// after a color marker if its color differs from the last record's.
    @inlinable @inline(__always) func appendLocked(_ record: Record, color: UInt64, count: Int32) {
        var count = count
        if count > shared.pointee.capacity &- 2 { grow() }
        if color != shared.pointee.lastColor {
            (shared.pointee.buffer + Int(count)).initialize(to: Record(Mailbox.marker, UInt(color)))
            shared.pointee.lastColor = color
            count &+= 1
        }
        (shared.pointee.buffer + Int(count)).initialize(to: record)
        shared.pointee.count = count &+ 1
    }

    /// Loop thread only: takes every queued record, in order, as one batch the caller must
    /// consume with `run(_:)` before the next `take`. With `closeIfEmpty`, an empty mailbox
    /// is closed. Running a batch in place saves copying it.
    func take(closeIfEmpty close: Bool = false) -> UnsafeMutableBufferPointer<Record> {
        let (empty, emptyCapacity) = spare.pointee
        pthread_mutex_lock(mutex)
        let n = Int(shared.pointee.count)
        if n <= 0 {
            if close { shared.pointee.count = -1 }
            pthread_mutex_unlock(mutex)
            return UnsafeMutableBufferPointer(start: empty, count: 0)
        }
        let full = shared.pointee.buffer
        let fullCapacity = shared.pointee.capacity
        shared.pointee.buffer = empty
        shared.pointee.capacity = emptyCapacity
        shared.pointee.count = 0
        shared.pointee.lastColor = Mailbox.noColor
        pthread_mutex_unlock(mutex)
        spare.pointee = (full, fullCapacity)
        return UnsafeMutableBufferPointer(start: full, count: n)
    }

    /// A batch from `take` being run, possibly across several drains: the per-tick budget
    /// can stop it part way. Until it is finished the loop takes no new batch (its buffer is
    /// the one the next `take` would hand back to producers, and a producer's later jobs
    /// must not overtake its earlier ones).
    struct Cursor {
        var batch = UnsafeMutableBufferPointer<Record>(start: nil, count: 0)
        var next = 0
        /// The color of the records at `next`, from the last marker passed.
        var color = Mailbox.noColor
        var isFinished: Bool { next >= batch.count }
    }

    /// Loop thread: runs jobs from the cursor's batch, each as its color, until `limit`
    /// jobs ran or the batch ends. Returns the number of jobs run (markers excluded).
    @inline(__always) static func run(_ cursor: inout Cursor, limit: Int) -> Int {
        var jobs = 0
        var i = cursor.next
        guard let base = cursor.batch.baseAddress else { return 0 }
        // A resumed batch continues with the color of its last marker.
        if cursor.color != noColor { chroma_set_current_color(cursor.color) }
        while i < cursor.batch.count && jobs < limit {
            let record = base + i
            let word0 = record.pointee.word0
            if word0 == marker {
                cursor.color = UInt64(record.pointee.word1)
                chroma_set_current_color(cursor.color)
            } else {
                jobs &+= 1
                if word0 & functionBit != 0 {
                    Job.callFunction(UnsafeRawPointer(bitPattern: word0 & ~functionBit),
                                     UnsafeRawPointer(bitPattern: record.pointee.word1))
                } else if word0 & executorBit != 0 {
                    ColorQueue.run(job: UnsafeRawPointer(bitPattern: word0 & ~executorBit).unsafelyUnwrapped,
                                      executor: UnsafeRawPointer(bitPattern: record.pointee.word1).unsafelyUnwrapped)
                } else {
                    Job.runClosure(at: UnsafeMutableRawPointer(record))
                }
            }
            i &+= 1
        }
        cursor.next = i
        return jobs
    }

    /// Drops the closures in a batch without running them (only at deinit).
    static func discard(_ batch: UnsafeMutableBufferPointer<Record>) {
        for i in 0..<batch.count {
            let word0 = batch[i].word0
            if word0 != marker && word0 & (functionBit | executorBit) == 0 {
                Job.discardClosure(at: UnsafeMutableRawPointer(batch.baseAddress! + i))
            }
        }
    }

    /// With the mutex held: at least two free records (a marker and a job) afterwards.
    @usableFromInline func grow() {
        let capacity = shared.pointee.capacity
        precondition(capacity < Int32.max / 2, "mailbox overflow")
        let bigger = UnsafeMutablePointer<Record>.allocate(capacity: Int(capacity) * 2)
        bigger.moveInitialize(from: shared.pointee.buffer, count: Int(shared.pointee.count))
        shared.pointee.buffer.deallocate()
        shared.pointee.buffer = bigger
        shared.pointee.capacity = capacity * 2
    }
}
