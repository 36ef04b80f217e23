import HeapModule
import Synchronization

/// A loop's timers: a min-heap of deadlines behind ONE persistent libevent timer event,
/// re-armed only when the earliest deadline changes. A timer per libevent event would pay
/// `event_add`/`event_del` (and their process-global write) per timer. A timer stays in the
/// queue it was scheduled on; if its color has moved to another loop since, the fire is
/// forwarded there (`Loop.runOrForward`), so timers never pin a color.
///
/// Threading: loop thread only, except `noteCancelled()`.
final class TimerQueue: @unchecked Sendable {
    // Safe to send: all fields but `cancelledInHeap` are used only on the owning loop's
    // thread (every entry point below is reached from that loop's callbacks).
    private struct Entry: Comparable {
        let deadline: UInt64
        let sequence: UInt64  // FIFO among equal deadlines
        let timer: Timer
        static func < (a: Entry, b: Entry) -> Bool {
            (a.deadline, a.sequence) < (b.deadline, b.sequence)
        }
        static func == (a: Entry, b: Entry) -> Bool {
            a.deadline == b.deadline && a.sequence == b.sequence
        }
    }

    private var heap = Heap<Entry>()
    private var sequence: UInt64 = 0
    private var event: PersistentEvent?
    private var armedDeadline = UInt64.max
    private unowned(unsafe) var loop: Loop?
    /// Cancelled timers still in the heap; when they are most of it, the heap is rebuilt.
    private let cancelledInHeap = Atomic<Int>(0)

    func attach(to base: EventBase, loop: Loop) throws(ChromaError) {
        self.loop = loop
        event = try base.makeEvent(fd: -1, flags: 0) { [unowned self] _ in self.fire() }
    }

    func detach() {
        event?.free()
        event = nil
    }

    func noteCancelled() {
        cancelledInHeap.add(1, ordering: .relaxed)
    }

    /// Adds `timer` to fire at `deadline` (monotonic ns). Loop thread.
    func insert(_ timer: Timer, deadline: UInt64) {
        loop!.preconditionOnLoop("TimerQueue.insert")
        sequence &+= 1
        heap.insert(Entry(deadline: deadline, sequence: sequence, timer: timer))
        if deadline < armedDeadline { arm(deadline) }
        compactIfMostlyCancelled()
    }

    private func arm(_ deadline: UInt64) {
        armedDeadline = deadline
        let now = monotonicNanoseconds()
        try? event?.add(afterNanoseconds: deadline > now ? deadline - now : 0)
    }

    /// The timer event's callback: runs every timer whose deadline has passed, in deadline
    /// order, then re-arms for the next. Never early: libevent's clock may lag ours, so a
    /// head that is not yet due just re-arms for the rest of its time.
    private func fire() {
        let now = monotonicNanoseconds()
        let lastSequence = sequence  // timers added by these bodies wait for the next pass
        armedDeadline = .max
        while let head = heap.min, head.deadline <= now, head.sequence <= lastSequence {
            heap.removeMin()
            let timer = head.timer
            if let interval = timer.intervalNanoseconds {
                guard timer.isPending else { continue }
                // Next deadline on the original grid; after a stall, skip the missed beats.
                var next = head.deadline &+ interval
                if next <= now { next = now &+ interval }
                sequence &+= 1
                heap.insert(Entry(deadline: next, sequence: sequence, timer: timer))
                loop!.runOrForward(as: timer.color, site: timer.site, timer.body)
            } else if timer.claimForFiring() {
                loop!.runOrForward(as: timer.color, site: timer.site, timer.body)
            }
        }
        if let head = heap.min {
            arm(head.deadline)
        } else {
            event?.remove()
        }
    }

    private func compactIfMostlyCancelled() {
        let cancelled = cancelledInHeap.load(ordering: .relaxed)
        guard cancelled > 64, cancelled * 2 > heap.count else { return }
        heap = Heap(heap.unordered.filter { $0.timer.isPending })
        cancelledInHeap.store(0, ordering: .relaxed)
    }

    /// Shutdown: cancels every pending timer; returns how many were pending.
    func cancelAll() -> Int {
        var cancelled = 0
        for entry in heap.unordered where entry.timer.cancelForShutdown() {
            cancelled += 1
            entry.timer.onShutdown?()
        }
        heap = Heap()
        event?.remove()
        armedDeadline = .max
        return cancelled
    }
}
