import CChroma

/// With chains on, the sites of the callbacks that led to a job, nearest first, up to
/// `CHROMA_CHAIN_DEPTH` (8) back: a job queued from a callback inherits that callback's site
/// followed by its chain, cut at the depth. Copies, not links, so a long chain of callbacks
/// keeps nothing alive behind it.
///
/// While a chained job runs, the thread's `chroma_thread_state` points at its chain, where
/// the jobs it queues copy it from and the signal handlers (the crash handler, the
/// watchdog's capture) read it, on the thread itself.
struct Chain: Sendable {
    /// `count` sites in `sites`, nearest first (C's `struct chroma_chain`, so the copies
    /// are plain C loops).
    var raw = chroma_chain()

    static let depth = Int(CHROMA_CHAIN_DEPTH)

    var count: Int { Int(raw.count) }

    /// The chain of a job queued now on this thread: the running callback's site (an async
    /// task's resolved to its `spawn`), then the running callback's own chain. Empty
    /// outside callbacks.
    static func forChild() -> Chain {
        var chain = Chain()
        chroma_chain_for_child(&chain.raw)
        return chain
    }

    /// Runs `body` with this chain as the thread's, then puts back the one before (see
    /// `run(at:_:)`).
    func run(_ body: () -> Void) {
        withUnsafePointer(to: raw) { Chain.run(at: $0, body) }
    }

    /// Runs `body` with the chain at `chain` as the thread's (which must stay valid until
    /// `body` returns), then puts back the one before: none, in the common case; the
    /// enclosing callback's, for a chained job run inside another callback (a timer fire run
    /// in place).
    @inline(__always)
    static func run(at chain: UnsafePointer<chroma_chain>, _ body: () -> Void) {
        let previous = chroma_chain_install(chain)
        body()
        chroma_chain_restore(previous)
    }

    /// The running callback's chain on this thread.
    static func ofThisThread() -> Chain {
        var chain = Chain()
        chroma_chain_of_this_thread(&chain.raw)
        return chain
    }

    /// The sites, nearest first, leaving out unknown ones.
    var named: [EnqueueSite] {
        withUnsafeBytes(of: raw.sites) { raw in
            raw.bindMemory(to: UInt64.self).prefix(count).compactMap { EnqueueSite.named($0) }
        }
    }
}

extension Runtime {
    /// The site the running callback was queued at, or nil outside callbacks (or for a
    /// callback whose site is unknown). Any thread.
    public static var currentSite: EnqueueSite? {
        guard chroma_current_color() != Color.noneRawValue else { return nil }
        return EnqueueSite.named(chroma_current_site())
    }

    /// With chains on, the sites of the callbacks that led to the running one, nearest
    /// first; empty otherwise. Any thread.
    public static var currentChain: [EnqueueSite] {
        guard chroma_current_color() != Color.noneRawValue else { return [] }
        return Chain.ofThisThread().named
    }
}
