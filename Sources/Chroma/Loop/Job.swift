import CChroma

/// One queued callback: the color it runs as, and what to run.
///
/// Two kinds of work share the queues. A Swift closure costs its context's reference count
/// (nothing for a closure that captures nothing). A C-convention function with a raw
/// context pointer is trivially copyable: queuing and running it touches no reference
/// count and allocates nothing, which makes it the fastest path (libasync's `cpucb(cb, arg)`).
/// Plain fields rather than an enum: an enum with a closure payload is copied and destroyed
/// through outlined value witnesses, and an optional closure is stored reabstracted (a
/// thunk context allocated per job); both cost more than the branch here.
@usableFromInline
struct Job {
    @usableFromInline let color: UInt64
    @usableFromInline let function: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?
    @usableFromInline let context: UnsafeMutableRawPointer?
    @usableFromInline let closure: @Sendable () -> Void

    @inlinable @inline(__always)
    init(color: UInt64, body: consuming @escaping @Sendable () -> Void) {
        self.color = color
        self.function = nil
        self.context = nil
        self.closure = consume body
    }

    @inlinable @inline(__always)
    init(color: UInt64, function: @convention(c) (UnsafeMutableRawPointer?) -> Void, context: UnsafeMutableRawPointer?) {
        self.color = color
        self.function = function
        self.context = context
        self.closure = {}  // a literal capturing nothing: no context, so no retain here
    }

    /// Runs the closure, then drops the job. `consuming`, so the closure is called on a
    /// borrow of the owned value: no retain around the call, one release after it.
    @inline(__always) consuming func consumeByRunning() {
        closure()
    }

    /// Sets the thread's current color and runs the job in `slot`, leaving the slot
    /// uninitialized. Reads what it needs before calling: the call may grow (move) the
    /// queue the slot lives in.
    ///
    /// A function job is not moved out or destroyed: its only non-trivial field is
    /// an empty closure literal, which holds no reference, so leaving it in the slot leaks nothing and
    /// saves a release call per job.
    @inline(__always) static func run(consuming slot: UnsafeMutablePointer<Job>) {
        chroma_set_current_color(slot.pointee.color)
        if let function = slot.pointee.function {
            function(slot.pointee.context)
        } else {
            slot.move().consumeByRunning()
        }
    }
}
