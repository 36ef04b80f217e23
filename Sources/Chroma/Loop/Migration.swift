import CChroma
import Synchronization

/// Moving colors between loops: what a loop does at its pauses between callbacks when
/// stealing is on (`Stealing.on`). The owner word and its flags are `Placement`'s; the
/// posting side is `Runtime.post`.
///
/// **Who moves what.** Only a bucket's owner moves it, between two of its callbacks, since
/// only the owner may touch its queues. An idle loop asks for nothing: it goes to sleep,
/// which sets its mailbox's sleeping bit, and a busy loop that finds a sleeping loop at a
/// pause (neighbours first, then from a random start; at most every `lookInterval`) gives
/// it half of its stealable buckets. A bucket is stealable when it is not pinned, not in transit, not `recent` (moved
/// here and not yet seen idle), and its queued jobs are worth `bucketWorth` at the loop's
/// sampled cost per callback; a gift is made only when the whole is worth `giftWorth`,
/// which repays waking the sleeper.
///
/// **A move** (`give`), on the old owner X, to loop Y:
/// 1. each bucket's owner word gets `moving` (a compare-exchange: a bucket pinned
///    meanwhile is skipped); producers now wait;
/// 2. X cuts its mailbox (`Mailbox.cut`): any producer claiming after the cut sees `moving`
///    after its claim and leaves a hole; every claim before the cut is X's to gather;
/// 3. X takes its mailbox up to the cut (`taken`, which runs before the mailbox and the run
///    queue), and takes the buckets' jobs out of `taken` and the run queue, in order;
/// 4. X pushes them into Y's mailbox, then sets each owner word to Y, `arriving`, with a
///    new version, then pushes Y an arrival marker;
/// 5. while `arriving`, every post goes to Y's mailbox, Y's own included, behind the
///    gathered jobs; when Y reaches the marker it takes its mailbox and clears `arriving`:
///    from then on Y's own posts use its run queue, and run after all of those.
/// Guarantees 1 and 2 hold throughout: no callback of a moving bucket runs during steps
/// 1–4 (X is between callbacks; Y has none of its jobs before step 4), and every producer's
/// jobs reach Y in the order it posted them.
///
/// If Y's mailbox closes for shutdown mid-move, X keeps what Y refused and the buckets stay
/// X's (Y ran what it accepted before it could close).
///
/// Threading: loop thread only, but for the counters (relaxed atomics, any thread).
final class Migration {
    // Not Sendable: one loop's thread only (its counters are atomics for that reason).
    unowned(unsafe) let runtime: Runtime
    let index: Int
    /// Whether this runtime moves colors at all.
    let enabled: Bool
    /// Sampled nanoseconds per callback (an average over recent pauses).
    private var costPerJob: Double = 0
    /// When the current sample began (0: not yet in this drain), and the jobs run since.
    private var sampledAt: UInt64 = 0
    private var jobsSinceSample = 0
    private var nextLook: UInt64 = 0
    private var lookInterval = Migration.firstLookInterval
    /// Buckets whose arrival marker ran here, not yet settled (`arriving` still set).
    private var arrived: [Int] = []
    /// Buckets that arrived here and have not yet been seen idle.
    private var recent: [Int] = []
    private var random: UInt64
    /// Jobs moved out of the mailbox by a cut (`Mailbox.take`), oldest first. They are older
    /// than everything left in the mailbox, so the drain runs them all before it runs the
    /// mailbox or the run queue again (`runTaken`).
    private(set) var taken = RunQueue(capacity: 64)
    /// Pauses so far (for the test hook).
    private var pauses = 0
    /// Buckets given away, received, and the number of moves made, by this loop.
    let bucketsGiven = Atomic<Int>(0)
    let bucketsReceived = Atomic<Int>(0)
    let moves = Atomic<Int>(0)

    /// Jobs run between two pauses of a drain when stealing is on: enough for about
    /// `pauseEvery` of work at the sampled cost, within `minChunk...maxChunk`. Each pause
    /// reads the clock once, so cheap callbacks pause rarely (a clock read per 32 tiny
    /// callbacks cost the balanced dispatch rows a tenth of their rate) and 20 µs callbacks
    /// pause every 32 (a move then waits at most 0.64 ms for a pause).
    private(set) var chunk = Migration.minChunk
    static let minChunk = 32
    static let maxChunk = 4096
    static let pauseEvery = 200_000.0
    /// A bucket is worth moving only if its queued jobs are worth this much (ns): well above
    /// what the move costs per bucket (two queue moves per job).
    static let bucketWorth = 2_000.0
    /// A gift is made only if it is worth this much (ns): it wakes a sleeping loop, which
    /// takes tens of microseconds.
    static let giftWorth = 40_000.0
    /// How many queued jobs a look counts (the oldest): enough to find the busy buckets,
    /// bounded however deep the backlog.
    static let scanLimit = 4096
    static let firstLookInterval: UInt64 = 50_000
    static let longestLookInterval: UInt64 = 5_000_000

    init(runtime: Runtime, index: Int, enabled: Bool) {
        self.runtime = runtime
        self.index = index
        self.enabled = enabled
        random = 0x9E37_79B9_7F4A_7C15 &* UInt64(index + 1)
    }

    deinit { taken.destroy() }

    var arrivedCount: Int { arrived.count }

    /// True while jobs taken from the mailbox wait: they run before anything else.
    var hasTaken: Bool { !taken.isEmpty }

    /// Runs up to `limit` taken jobs; returns how many ran. Loop thread, inside a drain.
    func runTaken(limit: Int) -> Int {
        var ran = 0
        while ran < limit && !taken.isEmpty {
            taken.runFront()
            ran &+= 1
        }
        return ran
    }

    /// Moves the mailbox's jobs, up to a cut made now, behind the taken ones.
    private func takeMailbox(_ core: LoopCore) {
        _ = core.mailbox.take(upTo: core.mailbox.cut(), into: &taken)
    }

    /// A drain begins; `continuing` when the last one stopped only because its budget was
    /// spent. Only then does sampling go on (across libevent's poll between the two); after
    /// a sleep, or between short drains, the time in between is not queued work, so sampling
    /// starts again, at the first pause after `chunk` jobs. A drain shorter than that reads no
    /// clock at all: its loop is not the busy one.
    func beginDrain(continuing: Bool) {
        guard !continuing else { return }
        sampledAt = 0
        jobsSinceSample = 0
    }

    /// A pause of a drain on this loop, between two callbacks, after `ran` jobs. Settles
    /// arrivals, samples the cost per callback, and maybe gives buckets away. `mayGive` is
    /// false while the loop shuts down.
    func pause(_ core: LoopCore, ran: Int, mayGive: Bool) {
        if !arrived.isEmpty { settleArrivals(core) }
        jobsSinceSample &+= ran
        guard jobsSinceSample >= chunk else { return }
        let now = monotonicNanoseconds()
        if sampledAt != 0 {
            let perJob = Double(now &- sampledAt) / Double(jobsSinceSample)
            costPerJob = costPerJob == 0 ? perJob : costPerJob * 0.875 + perJob * 0.125
            chunk = Int(min(Double(Migration.maxChunk), max(Double(Migration.minChunk), Migration.pauseEvery / max(costPerJob, 1))))
        }
        sampledAt = now
        jobsSinceSample = 0
        guard mayGive else { return }
        if runtime.testingForcedMigrations {
            // Every pause; far less often under a deep backlog, where each move scans it.
            pauses &+= 1
            let queued = taken.count + core.local.pointee.runQueue.count
            if queued < Migration.scanLimit || pauses & 255 == 0 { giveRandomly(core) }
            return
        }
        guard now >= nextLook else { return }
        nextLook = now &+ lookInterval
        let backlog = Double(core.local.pointee.runQueue.count + core.mailbox.approximateCount) * costPerJob
        guard backlog >= Migration.giftWorth, let sleeper = nearestSleeper() else { return }
        if give(core, to: sleeper, chooser: chooseHalfOfStealable) {
            lookInterval = Migration.firstLookInterval
        } else {
            lookInterval = min(lookInterval * 2, Migration.longestLookInterval)
        }
    }

    /// A loop whose mailbox is marked asleep: a neighbour by index first (on a machine whose
    /// loops are pinned in order, the likeliest to share a cache), then the others from a
    /// random start, so that busy loops spread their gifts.
    private func nearestSleeper() -> Int? {
        let count = runtime.loopCount
        guard count > 1 else { return nil }
        for candidate in [(index + 1) % count, (index + count - 1) % count]
        where candidate != index && runtime.cores[candidate].mailbox.isAsleep {
            return candidate
        }
        guard count > 3 else { return nil }
        let start = Int(nextRandom() % UInt64(count))
        for step in 0..<count {
            let candidate = (start + step) % count
            if candidate != index && runtime.cores[candidate].mailbox.isAsleep { return candidate }
        }
        return nil
    }

    /// A xorshift step of this loop's generator.
    private func nextRandom() -> UInt64 {
        random ^= random << 13
        random ^= random >> 7
        random ^= random << 17
        return random
    }

    /// Counts the queued jobs of each bucket this loop may give away (after taking its
    /// mailbox, so that they are all counted), clearing `recent` for buckets seen idle.
    private func movableCounts(_ core: LoopCore) -> [Int: Int] {
        takeMailbox(core)
        var counts: [Int: Int] = [:]
        let runtime = self.runtime
        let count = { (raw: UInt64) in counts[runtime.placement.bucket(of: raw), default: 0] += 1 }
        taken.forEachColor(limit: Migration.scanLimit, count)
        core.local.pointee.runQueue.forEachColor(limit: max(0, Migration.scanLimit - taken.count), count)
        if !recent.isEmpty {
            recent.removeAll { bucket in
                guard counts[bucket] == nil else { return false }
                runtime.placement.owners[bucket].bitwiseAnd(~OwnerWord.recent, ordering: .relaxed)
                return true
            }
        }
        return counts.filter { bucket, _ in isMovable(runtime.placement.owners[bucket].load(ordering: .relaxed)) }
    }

    /// Whether this loop may give a bucket with this owner word away. (The test hook moves
    /// `recent` buckets too, to move colors as often as it can.)
    private func isMovable(_ word: UInt64) -> Bool {
        let blocking = runtime.testingForcedMigrations ? OwnerWord.pinned | OwnerWord.inTransit
            : OwnerWord.pinned | OwnerWord.inTransit | OwnerWord.recent
        return OwnerWord.loop(word) == index && word & blocking == 0
    }

    /// Half of the stealable buckets (every other one, busiest first), if they are worth a
    /// gift. A loop's only queued bucket stays: moving it would only move the whole load.
    private func chooseHalfOfStealable(_ counts: [Int: Int]) -> [Int] {
        guard counts.count > 1 else { return [] }
        let stealable = counts.filter { Double($0.value) * costPerJob >= Migration.bucketWorth }
            .sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        let chosen = stride(from: 0, to: stealable.count, by: 2).map { stealable[$0] }
        let worth = chosen.reduce(0.0) { $0 + Double($1.value) * costPerJob }
        return worth >= Migration.giftWorth ? chosen.map(\.key) : []
    }

    /// The test hook (`Runtime.testingForcedMigrations`): about half of the movable buckets
    /// with queued jobs go to a random other loop, at every pause.
    private func giveRandomly(_ core: LoopCore) {
        let count = runtime.loopCount
        guard count > 1 else { return }
        let target = (index + 1 + Int(nextRandom() % UInt64(count - 1))) % count
        _ = give(core, to: target) { counts in
            counts.keys.sorted().filter { _ in self.nextRandom() & 1 == 0 }
        }
    }

    /// Moves the buckets `chooser` picks from this loop to loop `target` (see the type's
    /// steps). Returns whether any moved.
    private func give(_ core: LoopCore, to target: Int, chooser: ([Int: Int]) -> [Int]) -> Bool {
        let chosen = chooser(movableCounts(core))
        guard !chosen.isEmpty else { return false }
        let owners = runtime.placement.owners
        // 1. Mark them moving; a bucket pinned or changed meanwhile is skipped.
        var before: [Int: UInt64] = [:]
        for bucket in chosen {
            let word = owners[bucket].load(ordering: .acquiring)
            guard isMovable(word) else { continue }
            if owners[bucket].compareExchange(expected: word, desired: word | OwnerWord.moving,
                                              ordering: .acquiringAndReleasing).exchanged {
                before[bucket] = word
            }
        }
        guard !before.isEmpty else { return false }
        // 2–3. Cut, gather every queued job of theirs: the taken ones (other threads' posts)
        // first, then the run queue's (this loop's own), each in order.
        let local = core.local
        takeMailbox(core)
        var jobs: [Job] = []
        let runtime = self.runtime
        let isMoving = { (raw: UInt64) in before[runtime.placement.bucket(of: raw)] != nil }
        taken.extract(into: &jobs, where: isMoving)
        local.pointee.runQueue.extract(into: &jobs, where: isMoving)
        // 4. Hand them over in order, then the buckets, then the marker.
        let destination = runtime.cores[target]
        var wake = false
        for (i, job) in jobs.enumerated() {
            switch destination.mailbox.pushKeepingRefused(job) {
            case .queued(let needed):
                wake = wake || needed
            case .closed, .moved:
                // Shutting down: what the target accepted has run; the rest stays here, ahead
                // of what this loop queues from now on.
                for rest in jobs[i...] { taken.push(rest) }
                for (bucket, word) in before { owners[bucket].store(word &+ OwnerWord.versionUnit, ordering: .releasing) }
                if wake { destination.wake() }
                return false
            }
        }
        for (bucket, word) in before {
            let moved = ((word & ~OwnerWord.loopBits) &+ OwnerWord.versionUnit) | UInt64(target) | OwnerWord.arriving
            owners[bucket].store(moved, ordering: .releasing)
        }
        let marker = Unmanaged.passRetained(Arrival(Array(before.keys))).toOpaque()
        switch destination.mailbox.push(Job(color: runtime.placement.loopColor(target).rawValue, function: Migration.arrive, context: marker)) {
        case .queued(let needed):
            wake = wake || needed
        case .closed, .moved:
            // The target closed for shutdown: its buckets stay `arriving`, and posts to them are refused.
            Unmanaged<Arrival>.fromOpaque(marker).release()
        }
        if wake { destination.wake() }
        bucketsGiven.add(before.count, ordering: .relaxed)
        moves.add(1, ordering: .relaxed)
        return true
    }

    /// The buckets of one move, carried by its arrival marker.
    private final class Arrival {
        let buckets: [Int]
        init(_ buckets: [Int]) { self.buckets = buckets }
    }

    /// The arrival marker, run on the new owner as its loop color: the buckets are settled at
    /// the next pause (not inside the mailbox's run, whose position this would move).
    private static let arrive: @convention(c) (UnsafeMutableRawPointer?) -> Void = { context in
        let arrival = Unmanaged<Arrival>.fromOpaque(context!).takeRetainedValue()
        let local = chroma_current_loop().unsafelyUnwrapped.assumingMemoryBound(to: LoopCore.LocalQueue.self)
        local.pointee.loop._withUnsafeGuaranteedRef { $0.migration.arrived.append(contentsOf: arrival.buckets) }
    }

    /// Step 5: this loop's own posts to the arrived buckets went to its mailbox; take the
    /// mailbox, so they all run before anything it posts to its run queue from now on, then
    /// clear `arriving`.
    private func settleArrivals(_ core: LoopCore) {
        takeMailbox(core)
        for bucket in arrived {
            let owner = runtime.placement.owners + bucket
            var word = owner.pointee.load(ordering: .acquiring)
            while true {
                let settled = (word & ~OwnerWord.arriving) | OwnerWord.recent
                let (done, found) = owner.pointee.compareExchange(expected: word, desired: settled, ordering: .acquiringAndReleasing)
                if done { break }
                word = found
            }
        }
        bucketsReceived.add(arrived.count, ordering: .relaxed)
        recent.append(contentsOf: arrived)
        arrived.removeAll(keepingCapacity: true)
    }
}

extension Runtime {
    /// For tests: each loop's queue lengths and the buckets caught in transit, as text.
    func migrationSnapshot() -> String {
        var lines: [String] = []
        var transit = 0
        for b in 0..<placement.bucketCount {
            let word = placement.owners[b].load(ordering: .acquiring)
            if word & OwnerWord.inTransit != 0 { transit += 1 }
        }
        lines.append("\(transit) buckets in transit")
        for loop in loops {
            lines.append("loop \(loop.index): asleep \(loop.core.mailbox.isAsleep), moves \(loop.migration.moves.load(ordering: .relaxed)), ring \(loop.core.local.pointee.runQueue.count), taken \(loop.migration.taken.count), mailbox \(loop.core.mailbox.approximateCount), arrived \(loop.migration.arrivedCount)")
        }
        return lines.joined(separator: "; ")
    }
}
