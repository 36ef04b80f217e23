import CChroma
import Synchronization

/// Which loop runs each color: the one place that decides it. Everything else asks here;
/// nothing computes `% loopCount` or keeps a color's loop on the side.
///
/// **The rule.** Colors fall into `bucketCount` buckets (`rawValue % bucketCount`), and an
/// atomic word per bucket names the loop that owns every color of it. A bucket starts on
/// loop `bucket % loopCount`, which is `rawValue % loopCount` (the bucket count is a
/// multiple of the loop count). All of a color's work runs on its owner's thread, so no two
/// callbacks of a color overlap without a lock per color. With stealing on, an idle loop can
/// be given whole buckets between two callbacks (`Migration` moves them); only the owner
/// moves a bucket, so "the owner is this thread" cannot change under a callback.
///
/// **The owner word** (`OwnerWord`): the owner's index, and the flags of a move in
/// progress: `moving` (the old owner is gathering the bucket's queued jobs: producers wait)
/// and `arriving` (the new owner has not yet put them ahead of its own run queue: everyone,
/// the new owner included, posts through its mailbox). A version counts moves, so a
/// producer that read the word before claiming a mailbox slot and again after it sees any
/// move in between (see `Runtime.post`).
///
/// **Pinning.** A color that owns loop-bound libevent state (a connection's bufferevent, a
/// watch's event, a listener, an HTTP connection) must stay on the loop that state was
/// created on: libevent events belong to one base and are freed only on its thread. Code
/// that creates such state takes the loop from `pin(_:)`, which marks the bucket pinned for
/// the runtime's life. `Color.main`'s bucket, and the buckets of `makeColor(onLoop:)` and
/// of the loops' own colors (the last `loopCount` buckets, one per loop), are pinned from
/// the start.
///
/// **Fresh colors** come from three disjoint ranges: `makeColor()` counts up from 2³²
/// (consecutive colors land on consecutive loops, never in a reserved bucket),
/// `makeColor(onLoop:)` from 2⁴⁰ (in the loop's reserved bucket), and each loop's own color
/// (`loopColor(_:)`) from 2⁶¹. Colors written by hand (`Color(7)`) are expected below 2³².
///
/// Threading: immutable but for atomics; any thread.
@usableFromInline
struct Placement: ~Copyable {
    /// How many loops there are.
    @usableFromInline let loopCount: Int
    /// How many buckets: `loopCount` times a power of two, about 8,192 in all.
    @usableFromInline let bucketCount: Int
    /// `bucketCount - 1` when the count is a power of two, else -1.
    @usableFromInline let bucketMask: Int
    /// One owner word per bucket (see `OwnerWord`).
    @usableFromInline let owners: UnsafeMutablePointer<Atomic<UInt64>>
    /// Buckets below this may move; the rest are the loops' reserved buckets.
    let movableBuckets: Int
    private let nextFresh = Atomic<UInt64>(0)
    /// One counter per loop for `makeColor(onLoop:)`, each on its own cache line: loops
    /// accepting connections at once never share one.
    private let nextOnLoop: UnsafeMutablePointer<Atomic<UInt64>>
    private static var counterStride: Int { 64 / MemoryLayout<Atomic<UInt64>>.stride }
    private let freshBase: UInt64
    private let onLoopBase: UInt64
    private let loopColorBase: UInt64

    init(loopCount: Int) {
        precondition(loopCount >= 1 && loopCount <= Int(OwnerWord.loopBits), "a runtime has 1...4096 loops")
        self.loopCount = loopCount
        var perLoop = 2
        while loopCount * perLoop < 8192 { perLoop *= 2 }
        bucketCount = loopCount * perLoop
        bucketMask = bucketCount & (bucketCount - 1) == 0 ? bucketCount - 1 : -1
        movableBuckets = bucketCount - loopCount
        freshBase = Placement.multiple(of: bucketCount, from: 1 << 32)
        onLoopBase = Placement.multiple(of: bucketCount, from: 1 << 40)
        loopColorBase = Placement.multiple(of: bucketCount, from: 1 << 61)
        owners = UnsafeMutableRawPointer.allocate(byteCount: bucketCount * MemoryLayout<Atomic<UInt64>>.stride, alignment: 64)
            .bindMemory(to: Atomic<UInt64>.self, capacity: bucketCount)
        for b in 0..<bucketCount {
            let reserved = b == 0 || b >= movableBuckets
            (owners + b).initialize(to: Atomic(UInt64(b % loopCount) | (reserved ? OwnerWord.pinned : 0)))
        }
        let count = loopCount * Placement.counterStride
        nextOnLoop = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Atomic<UInt64>>.stride, alignment: 64)
            .bindMemory(to: Atomic<UInt64>.self, capacity: count)
        for i in 0..<count { (nextOnLoop + i).initialize(to: Atomic(0)) }
    }

    deinit {
        owners.deinitialize(count: bucketCount)
        UnsafeMutableRawPointer(owners).deallocate()
        nextOnLoop.deinitialize(count: loopCount * Placement.counterStride)
        UnsafeMutableRawPointer(nextOnLoop).deallocate()
    }

    /// The bucket of a color number. One mask (or one division).
    @inlinable @inline(__always) func bucket(of raw: UInt64) -> Int {
        _fastPath(bucketMask >= 0) ? Int(truncatingIfNeeded: raw) & bucketMask : Int(raw % UInt64(bucketCount))
    }

    /// The owner word of a color number's bucket.
    @inlinable @inline(__always) func ownerSlot(of raw: UInt64) -> UnsafeMutablePointer<Atomic<UInt64>> {
        owners + bucket(of: raw)
    }

    /// The index of the loop that runs `color` now (during a move, the loop it is leaving
    /// or the one it is arriving at). Any thread; a moment later it may have moved.
    @inlinable @inline(__always) func loopIndex(of color: Color) -> Int {
        OwnerWord.loop(ownerSlot(of: color.rawValue).pointee.load(ordering: .relaxed))
    }

    /// Pins `color`'s bucket where it is and returns that loop: the loop on which
    /// loop-bound libevent state for `color` is created (see "Pinning" above). Waits out a
    /// move in progress (a few microseconds). Any thread.
    func pin(_ color: Color) -> Int {
        let slot = ownerSlot(of: color.rawValue)
        var word = slot.pointee.load(ordering: .acquiring)
        while true {
            if word & OwnerWord.pinned != 0 { return OwnerWord.loop(word) }
            if word & OwnerWord.moving != 0 {
                chroma_cpu_relax()
                word = slot.pointee.load(ordering: .acquiring)
                continue
            }
            let (done, found) = slot.pointee.compareExchange(expected: word, desired: word | OwnerWord.pinned,
                                                             ordering: .acquiringAndReleasing)
            if done { return OwnerWord.loop(word) }
            word = found
        }
    }

    /// A color no other call has returned, owned by the next loop in round-robin order.
    func makeColor() -> Color {
        let n = nextFresh.add(1, ordering: .relaxed).oldValue
        let perRound = UInt64(movableBuckets - loopCount)  // a multiple of loopCount, skipping bucket 0's round
        return Color(unchecked: freshBase + (n / perRound) * UInt64(bucketCount) + UInt64(loopCount) + n % perRound)
    }

    /// A color no other call has returned, owned by loop `index` for good (in its reserved,
    /// pinned bucket).
    func makeColor(onLoop index: Int) -> Color {
        precondition(index >= 0 && index < loopCount, "makeColor(onLoop:): no loop \(index)")
        let n = nextOnLoop[index * Placement.counterStride].add(1, ordering: .relaxed).oldValue
        return Color(unchecked: onLoopBase + n * UInt64(bucketCount) + UInt64(movableBuckets + index))
    }

    private static func multiple(of count: Int, from start: UInt64) -> UInt64 {
        let rest = start % UInt64(count)
        return rest == 0 ? start : start + UInt64(count) - rest
    }

    /// Loop `index`'s own color, for the runtime's work that must run on that loop (closing
    /// a listening socket there, retrying its accepts): no user color shares it, so that work
    /// never waits behind a user's callbacks of some color that happens to live there.
    func loopColor(_ index: Int) -> Color {
        precondition(index >= 0 && index < loopCount, "loopColor: no loop \(index)")
        return Color(unchecked: loopColorBase + UInt64(movableBuckets + index))
    }
}

/// The bits of a bucket's owner word (see `Placement`).
@usableFromInline
enum OwnerWord {
    /// Bits 0–12: the owning loop's index.
    @usableFromInline static var loopBits: UInt64 { 0x1FFF }
    /// The old owner is gathering the bucket's queued jobs; producers wait.
    @usableFromInline static var moving: UInt64 { 1 << 16 }
    /// The new owner has not yet run its arrival marker: every post goes to its mailbox.
    @usableFromInline static var arriving: UInt64 { 1 << 17 }
    /// Never moves again.
    @usableFromInline static var pinned: UInt64 { 1 << 18 }
    /// Moved here and not yet seen idle: not given away again until it has been.
    @usableFromInline static var recent: UInt64 { 1 << 19 }
    /// The flags that send a post off the fast path.
    @usableFromInline static var inTransit: UInt64 { moving | arriving }
    /// Bits 32–63: moves so far.
    @usableFromInline static var versionUnit: UInt64 { 1 << 32 }

    @inlinable @inline(__always) static func loop(_ word: UInt64) -> Int {
        Int(truncatingIfNeeded: word & loopBits)
    }
}
