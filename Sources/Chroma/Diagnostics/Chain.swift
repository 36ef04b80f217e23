import CChroma

/// With chains on, the sites of the callbacks that led to a job, nearest first, up to
/// `CHROMA_CHAIN_DEPTH` (8) back: a job queued from a callback inherits that callback's site
/// followed by its chain, cut at the depth. Copies, not links, so a long chain of callbacks
/// keeps nothing alive behind it.
///
/// While a chained job runs, its chain is in the thread's `chroma_thread_state`, where the
/// watchdog and the crash handler read it and the jobs it queues copy it from.
struct Chain: Sendable {
    var count: UInt64 = 0
    var sites: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)

    static let depth = Int(CHROMA_CHAIN_DEPTH)

    /// The chain of a job queued now on this thread: the running callback's site (an async
    /// task's resolved to its `spawn`), then the running callback's own chain. Empty
    /// outside callbacks.
    static func forChild() -> Chain {
        var chain = Chain()
        let parent = EnqueueSite.resolved(chroma_current_site())
        guard chroma_current_color() != Color.noneRawValue, parent != 0 else { return chain }
        let state = chroma_thread_state_address()
        let inherited = min(Int(chroma_state_chain_count(state)), depth - 1)
        withUnsafeMutableBytes(of: &chain.sites) { raw in
            let words = raw.bindMemory(to: UInt64.self)
            words[0] = parent
            for i in 0..<inherited { words[i + 1] = chroma_state_chain(state, Int32(i)) }
        }
        chain.count = UInt64(inherited + 1)
        return chain
    }

    /// Runs `body` with this chain as the thread's, then puts back the one before (a
    /// chained job inside another callback, such as a timer fire run in place).
    func run(_ body: () -> Void) {
        let saved = Chain.ofThisThread()
        set()
        body()
        saved.set()
    }

    private func set() {
        chroma_set_chain(count, sites.0, sites.1, sites.2, sites.3, sites.4, sites.5, sites.6, sites.7)
    }

    private static func ofThisThread() -> Chain {
        read(chroma_thread_state_address())
    }

    /// Another thread's chain, read with relaxed loads (the caller checks the thread's start
    /// count around the read to know it was one callback's).
    static func read(_ state: UnsafePointer<chroma_thread_state>) -> Chain {
        var chain = Chain()
        chain.count = min(chroma_state_chain_count(state), UInt64(depth))
        withUnsafeMutableBytes(of: &chain.sites) { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in 0..<depth { words[i] = chroma_state_chain(state, Int32(i)) }
        }
        return chain
    }

    /// The sites, nearest first, leaving out unknown ones.
    var named: [EnqueueSite] {
        withUnsafeBytes(of: sites) { raw in
            raw.bindMemory(to: UInt64.self).prefix(Int(count)).compactMap { EnqueueSite.named($0) }
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
        return Chain.read(chroma_thread_state_address()).named
    }
}
