/// A loop's local FIFO of jobs: a growable ring buffer, touched only by the loop's thread.
///
/// A ring rather than an array of closures: a push and a pop move a few words and never
/// shift or reallocate in steady state. A plain struct living inside `LoopCore`'s manually
/// allocated memory, so using it never touches a reference count.
@usableFromInline
struct RunQueue {
    @usableFromInline var buffer: UnsafeMutablePointer<Job>
    @usableFromInline var mask: Int
    @usableFromInline var head = 0  // next job to pop; grows without wrapping (2⁶³ jobs is centuries)
    @usableFromInline var tail = 0  // next free slot

    init(capacity: Int = 1024) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "capacity must be a power of two")
        buffer = .allocate(capacity: capacity)
        mask = capacity - 1
    }

    /// Drops any jobs left and frees the buffer. Call once, when the loop is gone.
    mutating func destroy() {
        while !isEmpty {
            Job.discard(buffer + (head & mask))
            head &+= 1
        }
        buffer.deallocate()
    }

    @inline(__always) var isEmpty: Bool { head == tail }
    @inline(__always) var count: Int { tail &- head }

    @inlinable @inline(__always) mutating func push(_ job: consuming Job) {
        if tail &- head > mask { grow() }
        (buffer + (tail & mask)).initialize(to: consume job)
        tail &+= 1
    }

    /// Runs the front job and removes it. The queue must not be empty.
    ///
    /// An emptied queue restarts at slot 0, so a steady chain of callbacks reuses the same
    /// few slots (hot in L1) instead of sweeping the whole ring through the cache.
    @inline(__always) mutating func runFront() {
        let slot = buffer + (head & mask)
        head &+= 1
        if head == tail {
            head = 0
            tail = 0
        }
        Callback.run(job: slot)
    }

    /// Removes the jobs `take` accepts (given each job's color number) and appends them to
    /// `taken`, in queue order; the jobs kept stay in order too. Loop thread; for moving
    /// colors, never on the hot path.
    mutating func extract(into taken: inout [Job], where take: (UInt64) -> Bool) {
        var kept = head
        var i = head
        while i != tail {
            let slot = buffer + (i & mask)
            if take(slot.pointee.tagged & Job.colorMask) {
                taken.append(slot.move())
            } else {
                if kept != i { (buffer + (kept & mask)).moveInitialize(from: slot, count: 1) }
                kept &+= 1
            }
            i &+= 1
        }
        tail = kept
    }

    /// Calls `body` with the color number of each queued job, front to back, for at most
    /// `limit` jobs. Loop thread.
    func forEachColor(limit: Int, _ body: (UInt64) -> Void) {
        var i = head
        let end = head &+ min(limit, count)
        while i != end {
            body((buffer + (i & mask)).pointee.tagged & Job.colorMask)
            i &+= 1
        }
    }

    @usableFromInline mutating func grow() {
        let oldCapacity = mask + 1
        let newBuffer = UnsafeMutablePointer<Job>.allocate(capacity: oldCapacity * 2)
        let n = count
        for i in 0..<n {
            (newBuffer + i).initialize(to: (buffer + ((head &+ i) & mask)).move())
        }
        buffer.deallocate()
        buffer = newBuffer
        mask = oldCapacity * 2 - 1
        head = 0
        tail = n
    }
}
