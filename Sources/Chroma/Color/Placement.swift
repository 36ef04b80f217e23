import Synchronization

/// Which loop runs each color: the one place that decides it. Everything else asks here;
/// nothing computes `% loopCount` or keeps a color's loop on the side.
///
/// **The rule.** A color's owner is loop `rawValue % loopCount` (a mask when the count is a
/// power of two), and all of a color's work runs on its owner's thread, so no two callbacks
/// of a color overlap without a lock per color. Colors do not move between loops: the owner
/// is fixed for the runtime's life.
///
/// **Pinning.** A color that owns loop-bound libevent state (a connection's bufferevent, a
/// watch's or signal's event, a listener, an HTTP connection, a timer's heap entry) must stay
/// on the loop that state was created on: libevent events belong to one base and are freed
/// only on its thread. Code that creates such state takes the loop from `pin(_:)`, never from
/// `loopIndex(of:)`, so that a placement that moves colors has one place to learn which may not.
///
/// **Fresh colors** come from three disjoint ranges: `makeColor()` counts up from 2³²
/// (consecutive colors land on consecutive loops), `makeColor(onLoop:)` from 2⁴⁰ (the owner
/// is encoded in the number), and each loop's own color (`loopColor(_:)`) sits at 2⁶¹ and up.
/// Colors written by hand (`Color(7)`) are expected below 2³².
///
/// Threading: immutable but for atomic counters; any thread.
@usableFromInline
struct Placement: ~Copyable {
    /// How many loops there are.
    @usableFromInline let loopCount: Int
    /// `loopCount - 1` when the count is a power of two, else -1.
    @usableFromInline let loopMask: Int
    private let nextFresh = Atomic<UInt64>(Placement.freshBase)
    /// One counter per loop for `makeColor(onLoop:)`, each on its own cache line: loops
    /// accepting connections at once never share one.
    private let nextOnLoop: UnsafeMutablePointer<Atomic<UInt64>>
    private static var counterStride: Int { 64 / MemoryLayout<Atomic<UInt64>>.stride }
    /// The first color `makeColor(onLoop:)` hands out: the first multiple of `loopCount` from
    /// 2⁴⁰, so that adding a loop's index gives a color that loop owns.
    private let onLoopBase: UInt64
    /// The first loop color: likewise, the first multiple of `loopCount` from 2⁶¹.
    private let loopColorBase: UInt64

    static var freshBase: UInt64 { 1 << 32 }

    init(loopCount: Int) {
        precondition(loopCount >= 1, "a runtime has at least one loop")
        self.loopCount = loopCount
        loopMask = loopCount & (loopCount - 1) == 0 ? loopCount - 1 : -1
        onLoopBase = Placement.multiple(of: loopCount, from: 1 << 40)
        loopColorBase = Placement.multiple(of: loopCount, from: 1 << 61)
        let count = loopCount * Placement.counterStride
        nextOnLoop = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Atomic<UInt64>>.stride, alignment: 64)
            .bindMemory(to: Atomic<UInt64>.self, capacity: count)
        for i in 0..<count { (nextOnLoop + i).initialize(to: Atomic(0)) }
    }

    deinit {
        nextOnLoop.deinitialize(count: loopCount * Placement.counterStride)
        UnsafeMutableRawPointer(nextOnLoop).deallocate()
    }

    /// The index of the loop that runs `color` now. One mask (or one division) on the hot path.
    @inlinable @inline(__always) func loopIndex(of color: Color) -> Int {
        loopMask >= 0 ? Int(truncatingIfNeeded: color.rawValue) & loopMask : Int(color.rawValue % UInt64(loopCount))
    }

    /// The loop on which loop-bound libevent state for `color` is created, which pins the
    /// color there for as long as that state lives (see "Pinning" above). With colors fixed
    /// to their owner, that is the owner.
    func pin(_ color: Color) -> Int {
        loopIndex(of: color)
    }

    /// A color no other call has returned, owned by the next loop in round-robin order.
    func makeColor() -> Color {
        Color(unchecked: nextFresh.add(1, ordering: .relaxed).oldValue)
    }

    /// A color no other call has returned, owned by loop `index`.
    func makeColor(onLoop index: Int) -> Color {
        precondition(index >= 0 && index < loopCount, "makeColor(onLoop:): no loop \(index)")
        let n = nextOnLoop[index * Placement.counterStride].add(1, ordering: .relaxed).oldValue
        return Color(unchecked: onLoopBase + n * UInt64(loopCount) + UInt64(index))
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
        let color = Color(unchecked: loopColorBase + UInt64(index))
        assert(loopIndex(of: color) == index)
        return color
    }
}
