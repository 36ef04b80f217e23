import CChroma

extension Runtime {
    /// Runs `body` as `color` at once, nested inside the callback running now, and returns
    /// true; or returns false and runs nothing. It runs when `color` lives on this
    /// callback's loop and is not moving, is not the running callback's color, and no other
    /// `runHere` body is running on this thread.
    ///
    /// The cheap way to hand work to a color that shares the loop: no job, no allocation,
    /// no wakeup. Colors stay exclusive: this loop's thread is busy with the current
    /// callback, so `color` runs nowhere else, and a color never leaves its loop during one
    /// of that loop's callbacks. Order is the caller's to keep: `body` goes ahead of any
    /// job of `color` already queued, so call this only when you know none is (you count
    /// your own posts to `color`, and nothing else posts to it); else queue with `execute`.
    ///
    /// Inside `body`, `Color.current` is `color`; after it, the caller's color again. It is
    /// part of the running callback: statistics count no callback for it, and the stall
    /// watchdog times the callback as a whole.
    /// Loop threads, inside one of this runtime's callbacks; false anywhere else.
    @inlinable
    public func runHere(as color: Color, fileID: StaticString = #fileID, line: UInt = #line, _ body: () -> Void) -> Bool {
        guard let local = currentLocalQueue(ifRunHereMayRun: color) else { return false }
        local.pointee.runningHere = true
        Callback.runNested(as: color, site: EnqueueSite.word(fileID, line), body)
        local.pointee.runningHere = false
        return true
    }

    /// The running loop's local queue when `runHere(as: color)` may run, else nil.
    @usableFromInline func currentLocalQueue(ifRunHereMayRun color: Color) -> UnsafeMutablePointer<LoopCore.LocalQueue>? {
        guard let raw = chroma_current_loop(), Color.currentRawValue != Color.noneRawValue,
              Color.currentRawValue != color.rawValue else { return nil }
        let local = raw.assumingMemoryBound(to: LoopCore.LocalQueue.self)
        guard !local.pointee.runningHere else { return nil }
        let index = local.pointee.loop._withUnsafeGuaranteedRef { $0.index }
        guard index < loopCount, cores[index].identity == raw else { return nil }  // another runtime's loop
        let word = placement.ownerSlot(of: color.rawValue).pointee.load(ordering: .acquiring)
        guard OwnerWord.loop(word) == index, word & OwnerWord.inTransit == 0 else { return nil }
        return local
    }
}
