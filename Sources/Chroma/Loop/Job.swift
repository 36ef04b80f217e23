/// One queued callback: the color it runs as, what to run, and where it was queued, in four
/// plain words.
///
/// Two kinds of work share the queues. A Swift closure costs its context's reference count
/// (nothing for a closure that captures nothing). A C-convention function with a raw
/// context pointer touches no reference count and allocates nothing, which makes it the
/// fastest path (libasync's `cpucb(cb, arg)`).
///
/// The record is trivial and 32 bytes: `tagged` is the color, with the top bit set for a
/// function job and the next for an executor job; `word0`/`word1` are the function and its
/// context, a closure's two words (entry point, retained context), or a Swift concurrency
/// job and its `ColorExecutor`; `site` is the `EnqueueSite` word (0: unknown). Size
/// matters: in cross-thread posting every job crosses between cores through the cache;
/// four words make two records a cache line, with none straddling two.
/// Ownership: a closure job's record owns one reference to the closure's context; the
/// queues move records bitwise, and `Callback.run(job:)` consumes it exactly once.
@usableFromInline
struct Job {
    @usableFromInline let tagged: UInt64
    @usableFromInline let word0: UnsafeRawPointer?
    @usableFromInline let word1: UnsafeRawPointer?
    @usableFromInline let site: UInt64

    @usableFromInline static var functionTag: UInt64 { 1 << 63 }
    /// The tag of an executor job: a Swift concurrency job for a `ColorExecutor`.
    @usableFromInline static var executorTag: UInt64 { 1 << 62 }
    /// The color bits of `tagged`.
    @usableFromInline static var colorMask: UInt64 { (1 << 62) - 1 }

    /// A closure at its natural abstraction: a struct field, so it is stored as the two
    /// words of a thick function (a bare generic pointee would be reabstracted).
    @usableFromInline
    struct Closure {
        @usableFromInline let body: @Sendable () -> Void
        @inlinable init(_ body: consuming @escaping @Sendable () -> Void) { self.body = body }
        /// Calls the closure on a borrow of the owned value, then drops it: no retain
        /// around the call, one release after it.
        @inline(__always) consuming func runAndRelease() { body() }
    }

    /// Takes ownership of `body`: its context reference moves into the record.
    @inlinable @inline(__always)
    init(color: UInt64, site: UInt64 = 0, body: consuming @escaping @Sendable () -> Void) {
        let closure = Closure(consume body)
        let words = unsafeBitCast(closure, to: (UnsafeRawPointer?, UnsafeRawPointer?).self)
        // `closure` is released when it goes out of scope; this retain keeps the record's
        // reference. The optimizer pairs and removes the two.
        if let context = words.1 { _ = Unmanaged<AnyObject>.fromOpaque(context).retain() }
        tagged = color
        word0 = words.0
        word1 = words.1
        self.site = site
    }

    @inlinable @inline(__always)
    init(color: UInt64, site: UInt64 = 0, function: @convention(c) (UnsafeMutableRawPointer?) -> Void, context: UnsafeMutableRawPointer?) {
        tagged = color | Job.functionTag
        word0 = unsafeBitCast(function, to: UnsafeRawPointer.self)
        word1 = UnsafeRawPointer(context)
        self.site = site
    }

    /// A Swift concurrency job for `executor` (a `ColorExecutor`, not retained: a color
    /// executor lives as long as the actors and tasks that use it, which outlive their jobs).
    /// Its site is the job itself, marked as a task's: a task `spawn` started is found in
    /// the table of task sites when a report needs it (see `EnqueueSite`).
    @inlinable @inline(__always)
    init(color: UInt64, executorJob job: UnsafeRawPointer, executor: UnsafeRawPointer) {
        tagged = color | Job.executorTag
        word0 = job
        word1 = executor
        site = UInt64(UInt(bitPattern: job)) | EnqueueSite.taskBit
    }

    /// Calls a function job's function with its context.
    @inline(__always) static func callFunction(_ word0: UnsafeRawPointer?, _ word1: UnsafeRawPointer?) {
        let function = unsafeBitCast(word0, to: (@convention(c) (UnsafeMutableRawPointer?) -> Void).self)
        function(UnsafeMutableRawPointer(mutating: word1))
    }

    /// Moves the closure stored as two words at `words` out (no retain), runs it and
    /// releases its context once. A closure without a context (a global function, a closure
    /// that captures nothing) is rebuilt from its entry point and a literal nil instead, so
    /// the compiler sees there is nothing to release and calls no runtime function at all.
    @inline(__always) static func runClosure(at words: UnsafeMutableRawPointer) {
        if words.load(fromByteOffset: 8, as: UnsafeRawPointer?.self) == nil {
            let entry = words.load(as: UnsafeRawPointer?.self)
            unsafeBitCast((entry, UnsafeRawPointer?.none), to: Closure.self).runAndRelease()
        } else {
            words.bindMemory(to: Closure.self, capacity: 1).move().runAndRelease()
        }
    }

    /// Drops a closure stored as two words at `words` without running it.
    static func discardClosure(at words: UnsafeMutableRawPointer) {
        _ = words.bindMemory(to: Closure.self, capacity: 1).move()
    }

    /// Drops the job without running it (only at deinit, for jobs that never ran).
    static func discard(_ slot: UnsafeMutablePointer<Job>) {
        if slot.pointee.tagged & (functionTag | executorTag) == 0 {
            discardClosure(at: UnsafeMutableRawPointer(slot).advanced(by: 8))
        }
    }
}
