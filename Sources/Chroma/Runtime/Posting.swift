import CChroma
import Glibc
import Synchronization

/// Whether a runtime moves colors from busy loops to idle ones (see `Migration`).
public enum Stealing: Sendable, Equatable {
    /// Every color stays on the loop `rawValue % loopCount`, for the runtime's life.
    case off
    /// A loop that goes to sleep while another has queued work worth moving is given half
    /// of that loop's movable colors, at the busy loop's next pause between callbacks. The
    /// default.
    case on
}

/// What a runtime's stealing has done (`Runtime.stealingCounts`).
public struct StealingCounts: Sendable, Equatable {
    /// Moves made: each hands one or more color buckets from a busy loop to a sleeping one.
    public var moves = 0
    /// Color buckets moved, over all moves (a bucket holds the colors equal modulo the
    /// bucket count, about 8,192).
    public var bucketsMoved = 0
    /// No moves yet.
    public init() {}
}

extension Runtime {
    /// Queues `job` (of color number `raw`) on the loop that owns the color now: the one
    /// way every job of a color is queued, so a color's jobs are all in its owner's queues
    /// when that owner moves it. Returns false only when that loop's mailbox is closed for
    /// shutdown (the job is then the caller's again, see `LoopCore.enqueue`). Any thread.
    ///
    /// On the owner's thread, a run-queue push: only the owner moves a color, so the owner
    /// word cannot change under it. Elsewhere, a mailbox push that reads the owner word once
    /// more after claiming its slot: if a move began in between, the slot gets a hole and
    /// the post starts over (`postMoving`), so no job is ever left behind by a move.
    @inlinable @inline(__always)
    func post(_ job: consuming Job, color raw: UInt64) -> Bool {
        let job = job
        let slot = placement.ownerSlot(of: raw)
        let word = slot.pointee.load(ordering: .acquiring)
        if word & OwnerWord.inTransit == 0 {
            let local = localQueues[OwnerWord.loop(word)]
            // Compared as addresses: a nil thread-local (no loop thread) is 0, never a queue's.
            if UInt(bitPattern: chroma_current_loop()) == UInt(bitPattern: local) {
                LoopCore.pushLocal(job, to: local)
                return true
            }
            return postRemote(job, slot: slot, word: word)
        }
        return postMoving(job, color: raw)
    }

    /// `post` from another thread than the owner's: out of line, so that the local push
    /// beside it keeps its registers (inlined, the mailbox push and its recheck cost the
    /// local path spills).
    @usableFromInline @inline(never)
    func postRemote(_ job: Job, slot: UnsafeMutablePointer<Atomic<UInt64>>, word: UInt64) -> Bool {
        if let done = push(job, to: cores[OwnerWord.loop(word)], slot: slot, word: word) { return done }
        return postMoving(job, color: job.tagged & Job.colorMask)
    }

    /// One mailbox push that rechecks the owner word: true when queued, false when the
    /// mailbox is closed, nil when the color moved under the claim (post again). Wakes the
    /// loop when the push says so.
    @inline(__always)
    private func push(_ job: Job, to core: LoopCore, slot: UnsafeMutablePointer<Atomic<UInt64>>, word: UInt64) -> Bool? {
        switch core.mailbox.push(job, unlessMoved: slot, from: word) {
        case .queued(let wake):
            if wake { core.wake() }
            return true
        case .closed:
            return false
        case .moved(let wake):
            if wake { core.wake() }
            return nil
        }
    }

    /// `post` for a color in the middle of a move: waits while its old owner gathers its
    /// jobs (`moving`, microseconds), posts to the new owner's mailbox while it is
    /// `arriving` (even from that owner's own thread, so its own earlier posts stay ahead),
    /// and starts over whenever the word changed under a claim.
    @usableFromInline @inline(never)
    func postMoving(_ job: Job, color raw: UInt64) -> Bool {
        let slot = placement.ownerSlot(of: raw)
        var word = slot.pointee.load(ordering: .acquiring)
        var spins = 0
        while true {
            if word & OwnerWord.moving != 0 {
                spins += 1
                if spins > 64 { sched_yield() } else { chroma_cpu_relax() }
                word = slot.pointee.load(ordering: .acquiring)
                continue
            }
            let core = cores[OwnerWord.loop(word)]
            if core.isCurrent && word & OwnerWord.arriving == 0 {
                core.pushLocal(job)
                return true
            }
            if let done = push(job, to: core, slot: slot, word: word) { return done }
            word = slot.pointee.load(ordering: .acquiring)
        }
    }
}
