import CChroma
import Glibc
import Synchronization

/// Where threads other than the loop's own queue jobs for it: a lock-free queue of 32-byte
/// `Job` slots for many producers and one consumer (the loop), in linked segments of
/// `slotsPerSegment` slots. (Why not a mutex, and what it costs: docs/ARCHITECTURE.md,
/// "The mailbox".)
///
/// Invariants:
/// - **The tail word** (one atomic, alone on its cache line) holds the segment being filled
///   (bits 0–47), the next unclaimed slot in it (bits 48–61), `sleepingBit` and `closedBit`.
///   One fetch-add claims a slot and tells the producer whether the mailbox is closed and
///   whether the loop sleeps; only the producer whose clear of `sleepingBit` finds it set
///   wakes the loop (one `event_active` per sleep).
/// - **A slot is filled** when its publication word (`Job.word0`, never zero for a real job)
///   is, by a release store; the loop zeroes it after running the slot.
/// - **Order**: slots are claimed in one global order, so jobs from one thread run in the
///   order posted, and jobs ordered by happens-before run in that order.
/// - **The loop sleeps or closes** only by a compare-exchange against exactly the tail it has
///   run up to, so no claim slips in unseen. A slot claimed but not yet filled stops the
///   loop, which then polls (`awaitNext`, then `Loop.pollDelay`): a descheduled producer
///   costs latency, never a job.
/// - **Segments**: the producer whose claim lands one past a segment's end links the next
///   (a spare the loop recycled, else a fresh one) and swings the tail; producers landing
///   further past wait for it, touching only the tail word. Only one producer links at a
///   time, so each spare slot has one writer (the loop) and one taker at a time.
///
/// A handle of pointers with non-mutating methods, like `RunQueue`'s owner `LoopCore`:
/// using it touches no reference count.
@usableFromInline
struct Mailbox {
    /// The tail word, alone on a 64-byte line: producers claim with read-modify-writes on it.
    @usableFromInline let tail: UnsafeMutablePointer<Atomic<UInt>>
    /// The loop's read position: the loop's thread only.
    private let head: UnsafeMutablePointer<(segment: UnsafeMutableRawPointer, offset: Int)>
    /// Finished segments, clean, for producers that link one (0: an empty spare slot).
    /// Filled by the loop, taken by the linking producer with an exchange; on their own line.
    @usableFromInline let spares: UnsafeMutablePointer<Atomic<UInt>>
    static var spareCount: Int { 8 }

    @usableFromInline static var slotsPerSegment: Int { 1024 }
    /// How far ahead `awaitNext` watches: a quarter segment, about 100 cache lines.
    static var gap: Int { 256 }
    /// Spin-wait hints between two checks in `awaitNext`, so the watched line is not pulled
    /// from the producer's core continuously.
    static var pausesPerCheck: Int { 2 }
    /// Segment layout: a 64-byte header whose first word is the next segment's address (0
    /// until linked), then the slots.
    @usableFromInline static var headerBytes: Int { 64 }
    @usableFromInline static var slotBytes: Int { MemoryLayout<Job>.stride }
    @usableFromInline static var segmentBytes: Int { headerBytes + slotsPerSegment * slotBytes }
    @usableFromInline static var addressMask: UInt { (1 << 48) - 1 }
    @usableFromInline static var offsetShift: UInt { 48 }
    @usableFromInline static var offsetUnit: UInt { 1 << 48 }
    @usableFromInline static var offsetMask: UInt { ((1 << 14) - 1) << 48 }
    @usableFromInline static var sleepingBit: UInt { 1 << 62 }
    @usableFromInline static var closedBit: UInt { 1 << 63 }

    /// The color of a hole (see `push(_:unlessMoved:from:)`): the loop's own color, which
    /// never moves.
    @usableFromInline let holeColor: UInt64

    @usableFromInline enum PushResult {
        /// Queued; with `wake`, the loop was asleep and this producer must wake it.
        case queued(wake: Bool)
        /// Refused: the loop closed the mailbox for shutdown. The job was dropped unrun.
        case closed
        /// Not queued: the color's bucket moved while the slot was being claimed. The slot
        /// holds a hole instead, the job is still the caller's; with `wake`, wake the loop.
        case moved(wake: Bool)
    }

    init(holeColor: UInt64) {
        self.holeColor = holeColor
        precondition(MemoryLayout<Job>.size == 32 && MemoryLayout<Job>.offset(of: \.word0) == 8,
                     "a mailbox slot is a 32-byte Job whose second word marks it filled")
        let first = Mailbox.makeSegment()
        tail = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64).bindMemory(to: Atomic<UInt>.self, capacity: 1)
        // Asleep: the loop starts with nothing to run, so the first post must wake it.
        tail.initialize(to: Atomic(UInt(bitPattern: first) | Mailbox.sleepingBit))
        head = .allocate(capacity: 1)
        head.initialize(to: (first, 0))
        spares = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
            .bindMemory(to: Atomic<UInt>.self, capacity: Mailbox.spareCount)
        for i in 0..<Mailbox.spareCount { (spares + i).initialize(to: Atomic(0)) }
    }

    /// Drops any jobs never run and frees everything. Call once, when no thread can post any
    /// more and the loop is gone.
    func destroy() {
        var (segment, offset) = head.pointee
        while true {
            for i in offset..<Mailbox.slotsPerSegment {
                let slot = Mailbox.slot(i, of: segment)
                if Mailbox.filled(slot) { Job.discard(slot) }
            }
            let next = Mailbox.next(of: segment).pointee.load(ordering: .acquiring)
            segment.deallocate()
            guard let following = UnsafeMutableRawPointer(bitPattern: next) else { break }
            (segment, offset) = (following, 0)
        }
        head.deallocate()
        tail.deinitialize(count: 1)
        UnsafeMutableRawPointer(tail).deallocate()
        for i in 0..<Mailbox.spareCount {
            UnsafeMutableRawPointer(bitPattern: spares[i].load(ordering: .acquiring))?.deallocate()
        }
        spares.deinitialize(count: Mailbox.spareCount)
        UnsafeMutableRawPointer(spares).deallocate()
    }

    // MARK: Producers (any thread but the loop's)

    /// Queues `job`. Any thread other than the loop's own (which uses its run queue).
    ///
    /// Inlined into every `execute`, so only the common case is here: one fetch-add, the
    /// slot's three stores, and the sleeping check. A closed mailbox and a full segment go
    /// out of line: the less code sits beside the local run queue's push in the caller, the
    /// less that path pays (a loop in here would give it a stack protector and spills).
    @inlinable @inline(__always) func push(_ job: consuming Job) -> PushResult {
        push(job, unlessMoved: nil, from: 0)
    }

    /// Queues `job` unless the owner word at `owner` no longer reads `expected` once a slot
    /// is claimed: then the slot gets a hole (a no-op job of the loop's own color) and the
    /// result is `.moved`. A bucket's mover claims (`cut()`) before it gathers, so a claim
    /// after the cut always sees the move here, and one before it is gathered: no job of a
    /// moving color is ever left behind in the old owner's mailbox (see `Migration`).
    @inlinable @inline(__always)
    func push(_ job: consuming Job, unlessMoved owner: UnsafeMutablePointer<Atomic<UInt64>>?, from expected: UInt64) -> PushResult {
        let job = job
        let claimed = tail.pointee.wrappingAdd(Mailbox.offsetUnit, ordering: .acquiringAndReleasing).oldValue
        let offset = Mailbox.offset(in: claimed)
        guard claimed & Mailbox.closedBit == 0 && offset < Mailbox.slotsPerSegment else {
            return pushPastTheEnd(job, claimed: claimed, owner: owner, expected: expected)
        }
        return place(job, claimed: claimed, offset: offset, owner: owner, expected: expected)
    }

    /// Fills the slot a claim got (`offset` < `slotsPerSegment`) and reports whether this
    /// post must wake the loop.
    @inlinable @inline(__always)
    func place(_ job: Job, claimed: UInt, offset: Int, owner: UnsafeMutablePointer<Atomic<UInt64>>?, expected: UInt64) -> PushResult {
        let segment = UnsafeMutableRawPointer(bitPattern: claimed & Mailbox.addressMask).unsafelyUnwrapped
        // The claim's read-modify-write follows any mover's cut on this tail word, so a
        // relaxed load here sees that mover's `moving` store (see `Migration.give`).
        if let owner, owner.pointee.load(ordering: .relaxed) != expected {
            return placeHole(Mailbox.slot(offset, of: segment), claimed: claimed)
        }
        Mailbox.fill(Mailbox.slot(offset, of: segment), with: job)
        if claimed & Mailbox.sleepingBit == 0 { return .queued(wake: false) }
        return .queued(wake: clearSleeping())
    }

    /// Fills a claimed slot with a hole, for a post whose color moved meanwhile.
    @usableFromInline @inline(never) func placeHole(_ slot: UnsafeMutablePointer<Job>, claimed: UInt) -> PushResult {
        Mailbox.fill(slot, with: Job(color: holeColor, function: { _ in }, context: nil))
        return .moved(wake: claimed & Mailbox.sleepingBit != 0 && clearSleeping())
    }

    /// Queues `job` like `push`, but a refused job is not dropped: after `.closed` it is the
    /// caller's again (for jobs a move hands over, which must not be lost).
    func pushKeepingRefused(_ job: Job) -> PushResult {
        let claimed = tail.pointee.wrappingAdd(Mailbox.offsetUnit, ordering: .acquiringAndReleasing).oldValue
        let offset = Mailbox.offset(in: claimed)
        guard claimed & Mailbox.closedBit == 0 && offset < Mailbox.slotsPerSegment else {
            return pushPastTheEnd(job, claimed: claimed, owner: nil, expected: 0, keepRefused: true)
        }
        return place(job, claimed: claimed, offset: offset, owner: nil, expected: 0)
    }

    /// `push` when its claim found the mailbox closed, or landed past the end of a segment:
    /// refuses, or waits for (or does) the linking of the next segment and claims again.
    @usableFromInline @inline(never)
    func pushPastTheEnd(_ job: Job, claimed first: UInt, owner: UnsafeMutablePointer<Atomic<UInt64>>?, expected: UInt64,
                        keepRefused: Bool = false) -> PushResult {
        var claimed = first
        while true {
            if claimed & Mailbox.closedBit != 0 {
                if keepRefused {
                    tail.pointee.wrappingSubtract(Mailbox.offsetUnit, ordering: .relaxed)
                    return .closed
                }
                return refuse(job)
            }
            let offset = Mailbox.offset(in: claimed)
            // Past the end only by the claims in flight: one per thread at most.
            assert(offset < Mailbox.slotsPerSegment + 8192, "mailbox offset near the flag bits")
            if offset < Mailbox.slotsPerSegment { return place(job, claimed: claimed, offset: offset, owner: owner, expected: expected) }
            passFullSegment(UnsafeMutableRawPointer(bitPattern: claimed & Mailbox.addressMask).unsafelyUnwrapped,
                            claimedOffset: offset)
            claimed = tail.pointee.wrappingAdd(Mailbox.offsetUnit, ordering: .acquiringAndReleasing).oldValue
        }
    }

    /// A refused push: gives back the slot it counted (repeated posts to a closed mailbox
    /// must not carry the count into the flag bits) and drops the job.
    func refuse(_ job: Job) -> PushResult {
        tail.pointee.wrappingSubtract(Mailbox.offsetUnit, ordering: .relaxed)
        var job = job
        withUnsafeMutablePointer(to: &job) { Job.discard($0) }
        return .closed
    }

    /// Clears `sleepingBit`; true for the one producer whose clear found it set, which must
    /// wake the loop.
    @usableFromInline func clearSleeping() -> Bool {
        tail.pointee.bitwiseAnd(~Mailbox.sleepingBit, ordering: .acquiringAndReleasing).oldValue & Mailbox.sleepingBit != 0
    }

    /// A claim landed past the last slot of `segment`. Exactly one past: this producer links
    /// a new segment and moves the tail word to it. Further past: it waits until the tail word
    /// has moved on. Either way the caller then claims again. Never touches a full segment
    /// after linking it, and the waiters never touch it at all: the loop may free it.
    @usableFromInline func passFullSegment(_ segment: UnsafeMutableRawPointer, claimedOffset: Int) {
        let address = UInt(bitPattern: segment)
        if claimedOffset == Mailbox.slotsPerSegment {
            let fresh = takeSpare() ?? Mailbox.makeSegment()
            Mailbox.next(of: segment).pointee.store(UInt(bitPattern: fresh), ordering: .releasing)
            var expected = tail.pointee.load(ordering: .relaxed)
            // Only this producer moves the word off `segment`; other producers only add to
            // its offset and the loop only sets flags, so this ends.
            while expected & Mailbox.addressMask == address {
                let desired = (expected & (Mailbox.sleepingBit | Mailbox.closedBit)) | UInt(bitPattern: fresh)
                let (exchanged, original) = tail.pointee.compareExchange(
                    expected: expected, desired: desired, ordering: .acquiringAndReleasing)
                if exchanged { break }
                expected = original
            }
            return
        }
        // Wait while the word still names a full `segment`. (The address alone could come
        // back: a freed segment's memory may become a later segment; that one is not full.)
        var spins = 0
        while true {
            let word = tail.pointee.load(ordering: .acquiring)
            if word & Mailbox.addressMask != address
                || Mailbox.offset(in: word) < Mailbox.slotsPerSegment {
                return
            }
            spins += 1
            if spins > 64 { sched_yield() }
        }
    }

    // MARK: The loop

    /// Loop thread: runs ready jobs in order, each as its color, until `limit` ran or the
    /// next slot is not filled yet. Returns the number run.
    ///
    /// Not inlined: it loops over many jobs per call, and inlined into `Loop.drain` beside
    /// the run queue's loop it would take that loop's registers.
    @inline(never) func run(limit: Int) -> Int {
        var (segment, offset) = head.pointee
        var jobs = 0
        while jobs < limit {
            if offset == Mailbox.slotsPerSegment {
                let next = Mailbox.next(of: segment).pointee.load(ordering: .acquiring)
                guard let following = UnsafeMutableRawPointer(bitPattern: next) else { break }
                retire(segment)
                (segment, offset) = (following, 0)
            }
            let slot = Mailbox.slot(offset, of: segment)
            guard Mailbox.filled(slot) else { break }
            offset &+= 1
            jobs &+= 1
            // Saved before the job runs: nothing a job does may see a stale position.
            head.pointee = (segment, offset)
            Callback.run(job: slot)
            // Clean for reuse; a spare's release store publishes it with the segment.
            Mailbox.publication(of: slot).pointee.store(0, ordering: .relaxed)
        }
        head.pointee = (segment, offset)
        return jobs
    }

    /// Loop thread, moving colors away: a read-modify-write of the tail word that changes
    /// nothing and returns it. Every claim after it synchronizes with it (the tail word's
    /// modifications are all read-modify-writes), so a producer claiming later sees what the
    /// loop stored before the cut; every claim before it lies below the position returned.
    func cut() -> UInt {
        tail.pointee.wrappingAdd(0, ordering: .acquiringAndReleasing).oldValue
    }

    /// Loop thread: moves every job claimed before `cut` (the tail word `cut()` returned)
    /// into `ring`, in order, without running them, waiting for slots still being filled
    /// (a producer between its claim and its fill, a few stores). Returns how many moved.
    func take(upTo cut: UInt, into ring: inout RunQueue) -> Int {
        let endSegment = UnsafeMutableRawPointer(bitPattern: cut & Mailbox.addressMask).unsafelyUnwrapped
        let endOffset = min(Mailbox.offset(in: cut), Mailbox.slotsPerSegment)
        var (segment, offset) = head.pointee
        var moved = 0
        while !(segment == endSegment && offset >= endOffset) {
            if offset == Mailbox.slotsPerSegment {
                var spins = 0
                var next = Mailbox.next(of: segment).pointee.load(ordering: .acquiring)
                while next == 0 {
                    spins += 1
                    if spins > 64 { sched_yield() } else { chroma_cpu_relax() }
                    next = Mailbox.next(of: segment).pointee.load(ordering: .acquiring)
                }
                retire(segment)
                (segment, offset) = (UnsafeMutableRawPointer(bitPattern: next).unsafelyUnwrapped, 0)
                continue
            }
            let slot = Mailbox.slot(offset, of: segment)
            var spins = 0
            while !Mailbox.filled(slot) {
                spins += 1
                if spins > 64 { sched_yield() } else { chroma_cpu_relax() }
            }
            ring.push(slot.move())
            Mailbox.publication(of: slot).pointee.store(0, ordering: .relaxed)
            offset &+= 1
            moved &+= 1
        }
        head.pointee = (segment, offset)
        return moved
    }

    /// Loop thread: a segment whose slots all ran (and were zeroed) becomes a spare, or is
    /// freed if the spares are full. No producer touches it any more (see the type's
    /// comment on segments).
    private func retire(_ segment: UnsafeMutableRawPointer) {
        Mailbox.next(of: segment).pointee.store(0, ordering: .relaxed)
        for i in 0..<Mailbox.spareCount where spares[i].load(ordering: .relaxed) == 0 {
            // Only the loop fills a spare slot, so it is still empty.
            spares[i].store(UInt(bitPattern: segment), ordering: .releasing)
            return
        }
        segment.deallocate()
    }

    /// The linking producer: a spare segment, if the loop left one.
    @usableFromInline func takeSpare() -> UnsafeMutableRawPointer? {
        for i in 0..<Mailbox.spareCount where spares[i].load(ordering: .relaxed) != 0 {
            if let segment = UnsafeMutableRawPointer(bitPattern: spares[i].exchange(0, ordering: .acquiringAndReleasing)) {
                return segment
            }
        }
        return nil
    }

    /// Loop thread, caught up with producers (the next slot is claimed but not filled):
    /// waits a moment for a run of slots to fill, then returns whether the next one is.
    ///
    /// It watches the slot `gap` ahead rather than the next one: reading the slot a
    /// producer is writing pulls that cache line away from it at every post, so a loop
    /// right behind a producer halves both. Waiting for the slot ahead lets the producer
    /// fill a run of lines undisturbed, which the loop then reads once each. Spins at most
    /// `checks` times a few pauses (microseconds); a producer that was descheduled is
    /// polled again after libevent's next pass instead.
    func awaitNext(checks: Int) -> Bool {
        let (segment, offset) = head.pointee
        guard offset < Mailbox.slotsPerSegment else {
            for _ in 0..<checks {
                for _ in 0..<Mailbox.pausesPerCheck { chroma_cpu_relax() }
                if Mailbox.next(of: segment).pointee.load(ordering: .acquiring) != 0 { return true }
            }
            return false
        }
        let ahead = Mailbox.slot(min(offset + Mailbox.gap, Mailbox.slotsPerSegment - 1), of: segment)
        for _ in 0..<checks {
            for _ in 0..<Mailbox.pausesPerCheck { chroma_cpu_relax() }
            if Mailbox.filled(ahead) { break }
        }
        // The answer is about the NEXT slot: with a later one filled by another producer
        // and the next one's producer descheduled, "true" would spin the drain in place.
        return Mailbox.filled(Mailbox.slot(offset, of: segment))
    }

    /// Whether the loop has marked itself asleep. Any thread; a hint (relaxed), for loops
    /// looking for an idle one.
    var isAsleep: Bool { tail.pointee.load(ordering: .relaxed) & Mailbox.sleepingBit != 0 }

    /// Loop thread: about how many claimed jobs wait (exact when they are in one segment,
    /// fewer otherwise).
    var approximateCount: Int {
        let word = tail.pointee.load(ordering: .relaxed)
        let (segment, offset) = head.pointee
        let claimed = min(Mailbox.offset(in: word), Mailbox.slotsPerSegment)
        if word & Mailbox.addressMask == UInt(bitPattern: segment) { return max(0, claimed - offset) }
        return Mailbox.slotsPerSegment - offset + claimed
    }

    /// Loop thread, after `run` stopped short of its limit: if nothing was claimed beyond
    /// what ran, marks the loop asleep (the next post wakes it) and returns true. False: a
    /// slot is claimed and, if `run` just found it empty, about to be filled.
    func sleepIfEmpty() -> Bool { setIfEmpty(Mailbox.sleepingBit) }

    /// Loop thread, at shutdown: closes the mailbox if nothing was claimed beyond what ran;
    /// every later push is refused. False: jobs are still arriving; run them and try again.
    /// True at once if it is already closed (a refused producer may have its claim counted
    /// in the tail word for a moment, which would fail the emptiness check).
    func closeIfEmpty() -> Bool {
        if tail.pointee.load(ordering: .acquiring) & Mailbox.closedBit != 0 { return true }
        return setIfEmpty(Mailbox.closedBit)
    }

    private func setIfEmpty(_ flag: UInt) -> Bool {
        let (segment, offset) = head.pointee
        let position = UInt(bitPattern: segment) | UInt(offset) &<< Mailbox.offsetShift
        var word = tail.pointee.load(ordering: .acquiring)
        while word & ~(Mailbox.sleepingBit | Mailbox.closedBit) == position {
            let (exchanged, original) = tail.pointee.compareExchange(
                expected: word, desired: word | flag, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            word = original
        }
        return false
    }

    // MARK: Slots and segments

    @usableFromInline static func makeSegment() -> UnsafeMutableRawPointer {
        let segment = UnsafeMutableRawPointer.allocate(byteCount: segmentBytes, alignment: 64)
        // Zero: an unfilled slot reads as 0 in its `word0`, and the header's next link is 0.
        segment.initializeMemory(as: UInt8.self, repeating: 0, count: segmentBytes)
        precondition(UInt(bitPattern: segment) & ~addressMask == 0, "a heap address above 2^48")
        return segment
    }

    /// The slot offset a tail word holds.
    @inlinable @inline(__always) static func offset(in word: UInt) -> Int {
        Int(truncatingIfNeeded: (word & offsetMask) &>> offsetShift)
    }

    @inlinable @inline(__always)
    static func slot(_ offset: Int, of segment: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Job> {
        (segment + headerBytes + offset &* slotBytes).assumingMemoryBound(to: Job.self)
    }

    /// The header word linking a segment to the next.
    @inlinable @inline(__always)
    static func next(of segment: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt>> {
        segment.assumingMemoryBound(to: Atomic<UInt>.self)
    }

    /// The word whose release store publishes a filled slot: `Job.word0`.
    @inlinable @inline(__always)
    static func publication(of slot: UnsafeMutablePointer<Job>) -> UnsafeMutablePointer<Atomic<UInt>> {
        (UnsafeMutableRawPointer(slot) + 8).assumingMemoryBound(to: Atomic<UInt>.self)
    }

    /// Writes `job` into its claimed slot: the color, the context and the site first, then
    /// the code word with a release store, which is what the loop checks.
    @inlinable @inline(__always) static func fill(_ slot: UnsafeMutablePointer<Job>, with job: Job) {
        let raw = UnsafeMutableRawPointer(slot)
        raw.storeBytes(of: job.tagged, as: UInt64.self)
        raw.storeBytes(of: job.word1, toByteOffset: 16, as: UnsafeRawPointer?.self)
        raw.storeBytes(of: job.site, toByteOffset: 24, as: UInt64.self)
        precondition(job.word0 != nil, "a job without code")
        publication(of: slot).pointee.store(UInt(bitPattern: job.word0), ordering: .releasing)
    }

    @inline(__always) static func filled(_ slot: UnsafeMutablePointer<Job>) -> Bool {
        publication(of: slot).pointee.load(ordering: .acquiring) != 0
    }
}

// Safe to share: producers touch only the atomic tail word, spare slots and the slots they
// claimed; `run`, `awaitNext`, `sleepIfEmpty`, `closeIfEmpty` and `destroy` belong to one
// consumer thread (the loop), which alone reads `head`.
extension Mailbox: @unchecked Sendable {}
