/// The part of a loop the hot path touches, in manually allocated, cache-line-separated
/// memory (`LoopCore.allocate`). Queuing a callback then touches no reference count: a
/// shared count on a `Loop` or `Runtime` object would bounce between cores on every post
/// and stop the loops from scaling.
///
/// Threading: `runQueue`, `draining` and `wakeupActive` belong to the loop's thread;
/// `mailbox` is internally locked; `wakeup` and `loop` are written before the loop's
/// thread is published (the start latch orders them) and only read afterwards.
struct LoopCore {
    var runQueue = RunQueue()
    /// True while the loop runs jobs, so a local push needs no wakeup.
    var draining = false
    /// True while the wakeup event is already active.
    var wakeupActive = false
    var wakeup: Unmanaged<PersistentEvent>?
    let loop: Unmanaged<Loop>
    // Producers write the mailbox; keep it off the loop thread's line.
    private let padding: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
    var mailbox = Mailbox()
    private let paddingAfter: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)

    init(loop: Loop) {
        self.loop = .passUnretained(loop)
    }

    // Cores are each aligned to and padded past a 128-byte boundary (two lines, for
    /// the adjacent-line prefetcher).
    /// Memory for `count` cores; `initialize(_:loops:)` fills it.
    static func allocate(count: Int) -> UnsafeMutablePointer<LoopCore> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: stride * count, alignment: 128)
        for i in 0..<count { (raw + i * stride).bindMemory(to: LoopCore.self, capacity: 1) }
        return raw.assumingMemoryBound(to: LoopCore.self)
    }

    static func initialize(_ cores: UnsafeMutablePointer<LoopCore>, loops: [Loop]) {
        for (i, loop) in loops.enumerated() { at(cores, i).initialize(to: LoopCore(loop: loop)) }
    }

    static func deallocate(_ cores: UnsafeMutablePointer<LoopCore>, count: Int) {
        let raw = UnsafeMutableRawPointer(cores)
        for i in 0..<count {
            let core = (raw + i * stride).assumingMemoryBound(to: LoopCore.self)
            core.pointee.runQueue.destroy()
            core.pointee.mailbox.destroy()
            core.deinitialize(count: 1)
        }
        raw.deallocate()
    }

    /// MemoryLayout's stride rounded up to 128 bytes.
    static var stride: Int { (MemoryLayout<LoopCore>.stride + 127) & ~127 }

    /// The core at `index` in an array from `allocate`.
    @inline(__always) static func at(_ cores: UnsafeMutablePointer<LoopCore>, _ index: Int) -> UnsafeMutablePointer<LoopCore> {
        (UnsafeMutableRawPointer(cores) + index &* stride).assumingMemoryBound(to: LoopCore.self)
    }

    /// Wakes the loop: activates its one persistent wakeup event. Any thread.
    @inline(__always) func wake() {
        wakeup.unsafelyUnwrapped._withUnsafeGuaranteedRef { $0.activate() }
    }
}

extension UnsafeMutablePointer where Pointee == LoopCore {
    /// Queues `job`. On the loop's own thread (`isCurrent`) it goes to the local run queue;
    /// from other threads to the mailbox, and only the push that finds the mailbox empty
    /// wakes the loop. Returns false, dropping nothing, only when the mailbox is closed for
    /// shutdown; the caller reports that as `ChromaError.shutDown`.
    @inline(__always) func enqueue(_ job: __owned Job) -> Bool {
        if isCurrent {
            pointee.runQueue.push(job)
            if !pointee.draining && !pointee.wakeupActive {
                pointee.wakeupActive = true
                pointee.wake()
            }
            return true
        }
        switch pointee.mailbox.push(job) {
        case .queued(let wasEmpty):
            if wasEmpty { pointee.wake() }
            return true
        case .closed:
            return false
        }
    }

    /// True on this core's loop thread: the thread-local holds the core's address there.
    @inline(__always) var isCurrent: Bool { chroma_current_loop() == UnsafeMutableRawPointer(self) }
}

import CChroma
