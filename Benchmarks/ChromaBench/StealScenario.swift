import ArgumentParser
@_spi(Engine) import Chroma
import Glibc
import Synchronization

/// `chroma-bench steal`: moving colors (work stealing) against static placement, in one
/// binary, interleaved round by round (off, on, off, on, …), medians and ratios.
struct StealCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "steal",
        abstract: "Work stealing on vs off: skewed colors, tiny callbacks under skew, Zipf-drawn colors, balanced dispatch."
    )

    @Option(help: "Loops (the skew rows put every color on loop 0 of these).")
    var loops: Int = 2

    @Option(help: "Rows, comma-separated: skew, tiny, zipf, local, cross.")
    var rows: String = "skew,tiny,zipf,local,cross"

    @Option(help: "Seconds per measurement.")
    var duration: Double = 1.0

    @Option(help: "Rounds per row; each round runs stealing off, then on; medians are reported.")
    var rounds: Int = 3

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @OptionGroup var plot: PlotOption

    func run() throws {
        guard loops >= 2, duration > 0, rounds >= 1 else {
            throw ValidationError("--loops must be at least 2 (stealing needs a second loop); --duration and --rounds positive")
        }
        let wanted = try rows.split(separator: ",").map { name -> StealRow in
            guard let row = StealRow(rawValue: String(name)) else {
                throw ValidationError("unknown row \(name); use skew, tiny, zipf, local or cross")
            }
            return row
        }
        let machine = Machine.current()
        let work = HashWork.calibrated()
        var report = Report(scenario: "steal", machine: machine)
        var table: [[String]] = []
        for (index, row) in wanted.enumerated() {
            var off: [StealResult] = [], on: [StealResult] = []
            for round in 1...rounds {
                for stealing in [Stealing.off, .on] {
                    progress("[\(index + 1)/\(wanted.count)] \(row.rawValue), round \(round)/\(rounds): stealing \(stealing == .on ? "on" : "off")")
                    let result = try row.measure(loops: loops, stealing: stealing, seconds: duration, work: work)
                    if stealing == .on { on.append(result) } else { off.append(result) }
                }
            }
            endProgress()
            let offOps = median(off.map(\.opsPerSecond)), onOps = median(on.map(\.opsPerSecond))
            let offP99 = off.compactMap(\.p99Microseconds), onP99 = on.compactMap(\.p99Microseconds)
            report.rows.append(Row(name: "static \(row.rawValue) \(loops)", opsPerSecond: offOps,
                                   p99Microseconds: offP99.isEmpty ? nil : median(offP99)))
            report.rows.append(Row(name: "stealing \(row.rawValue) \(loops)", opsPerSecond: onOps,
                                   p99Microseconds: onP99.isEmpty ? nil : median(onP99)))
            report.ratios.append(("stealing \(row.rawValue) \(loops) / static \(row.rawValue) \(loops)", onOps / offOps))
            var cells = [row.rawValue, fixed(offOps / 1e6, 3), fixed(onOps / 1e6, 3), fixed(onOps / offOps, 2), row.target]
            if !offP99.isEmpty && !onP99.isEmpty {
                report.ratios.append(("stealing \(row.rawValue) \(loops) p99 / static \(row.rawValue) \(loops) p99", median(onP99) / median(offP99)))
                cells += [fixed(median(offP99), 0), fixed(median(onP99), 0)]
            } else {
                cells += ["-", "-"]
            }
            cells.append(on.map { String($0.moves) }.joined(separator: "/"))
            table.append(cells)
        }
        try plot.write(report)
        if json {
            print(report.json())
            return
        }
        print("chroma-bench steal   (\(machine.nproc) cores, \(machine.cpu))")
        print("\(loops) loops, \(duration)s per measurement, median of \(rounds) rounds, stealing off and on alternating; "
              + "hashing calibrated at \(fixed(work.nanosecondsPerRound, 2)) ns per round")
        let header = ["row", "static M/s", "steal M/s", "ratio", "target", "static p99 us", "steal p99 us", "moves (per round)"]
        let widths = [7, 11, 10, 6, 8, 14, 13, 18]
        print(zip(header, widths).map { $0.padded(to: $1) }.joined(separator: " "))
        for cells in table { print(zip(cells, widths).map { $0.padded(to: $1) }.joined(separator: " ")) }
        print("rows: skew = 64 colors all on loop 0, each callback ~20 us of hashing that re-queues itself; tiny = the same")
        print("      with ~0.1 us callbacks (moving cannot pay); zipf = 10,000 colors drawn from Zipf(s = 1.0) by one producer")
        print("      thread, 90% ~2 us and 10% ~50 us callbacks, at most 4,096 outstanding (p99 = queue delay, post to start);")
        print("      local / cross = the dispatch table's local and cross-function rows (balanced load)")
        if wanted.contains(.zipf) {
            let share = zipfBusiestShare(loops: loops)
            print("zipf: under static placement the busiest loop receives \(fixed(share * 100, 1))% of the posts (an even split: "
                  + "\(fixed(100 / Double(loops), 1))%)")
        }
    }
}

/// One row of the steal table.
enum StealRow: String {
    case skew, tiny, zipf, local, cross

    var target: String {
        switch self {
        case .skew: return ">= 1.8"
        case .tiny, .local, .cross: return ">= 0.97"
        case .zipf: return ">= 1.3"
        }
    }

    func measure(loops: Int, stealing: Stealing, seconds: Double, work: HashWork) throws -> StealResult {
        switch self {
        case .skew: return try measureSkew(loops: loops, stealing: stealing, seconds: seconds, rounds: work.rounds(forMicroseconds: 20))
        case .tiny: return try measureSkew(loops: loops, stealing: stealing, seconds: seconds, rounds: work.rounds(forMicroseconds: 0.1))
        case .zipf: return try measureZipf(loops: loops, stealing: stealing, seconds: seconds, work: work)
        case .local, .cross:
            let row = try measureChromaDispatch(mode: self == .local ? .local : .crossFunction, loops: loops, colors: loops,
                                                seconds: seconds, stealing: stealing)
            return StealResult(opsPerSecond: row.opsPerSecond, p99Microseconds: nil, moves: 0)
        }
    }
}

struct StealResult {
    let opsPerSecond: Double
    let p99Microseconds: Double?
    let moves: Int
}

/// CPU work in plain Swift: rounds of an FNV-style hash, calibrated once per run.
struct HashWork {
    let nanosecondsPerRound: Double

    static func calibrated() -> HashWork {
        var best = Double.infinity
        for attempt in 0..<3 {
            // Counts and seeds the optimizer cannot know, so the loop really runs.
            let rounds = 2_000_000 + Int(nowSeconds().truncatingRemainder(dividingBy: 7)) + attempt
            let start = nowSeconds()
            blackHole(hash(rounds: rounds, seed: UInt64(bitPattern: Int64(start * 1e6))))
            best = min(best, (nowSeconds() - start) * 1e9 / Double(rounds))
        }
        return HashWork(nanosecondsPerRound: best)
    }

    func rounds(forMicroseconds us: Double) -> Int { max(1, Int(us * 1000 / nanosecondsPerRound)) }

    @inline(never) static func hash(rounds: Int, seed: UInt64) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for i in 0..<rounds { h = (h ^ UInt64(truncatingIfNeeded: i)) &* 0x100_0000_01b3 }
        return h
    }
}

nonisolated(unsafe) var hashSink: UInt64 = 0
@inline(never) func blackHole(_ value: UInt64) { hashSink &+= value }

/// A chain of callbacks per color that re-queues itself, counting per color (written only
/// by the color's callbacks, which never overlap).
final class ChainState: @unchecked Sendable {
    // Safe to share: `counts[c * 8]` is written only by color c's callbacks (guarantee 1) and
    // read by the main thread after `done`; `stop` and `remaining` are atomic.
    let runtime: Runtime
    let counts: UnsafeMutablePointer<UInt64>
    let colors: Int
    let rounds: Int
    let stop = Atomic<Bool>(false)
    let remaining: Atomic<Int>
    let done = Semaphore()

    init(runtime: Runtime, colors: Int, rounds: Int) {
        self.runtime = runtime
        self.colors = colors
        self.rounds = rounds
        counts = .allocate(capacity: colors * 8)
        counts.initialize(repeating: 0, count: colors * 8)
        remaining = Atomic(colors)
    }

    deinit { counts.deallocate() }

    var total: UInt64 { (0..<colors).reduce(0) { $0 + counts[$1 * 8] } }
}

/// `colors` chains on colors 0, n, 2n, … (all owned by loop 0 under static placement).
func measureSkew(loops: Int, stealing: Stealing, seconds: Double, rounds: Int) throws -> StealResult {
    let runtime = try Runtime(loops: loops, stealing: stealing)
    try runtime.start()
    defer { _ = try? runtime.shutdown() }
    let colors = 64
    let state = ChainState(runtime: runtime, colors: colors, rounds: rounds)
    @Sendable func step(_ index: Int) {
        blackHole(HashWork.hash(rounds: state.rounds, seed: UInt64(index)))
        state.counts[index * 8] &+= 1
        if state.stop.load(ordering: .relaxed) {
            if state.remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { state.done.signal() }
            return
        }
        try! state.runtime.execute(on: Color(UInt64(index * loops))) { step(index) }
    }
    let start = nowSeconds()
    for c in 0..<colors { try runtime.execute(on: Color(UInt64(c * loops))) { step(c) } }
    sleepSeconds(seconds)
    state.stop.store(true, ordering: .relaxed)
    state.done.wait()
    let elapsed = nowSeconds() - start
    return StealResult(opsPerSecond: Double(state.total) / elapsed, p99Microseconds: nil, moves: runtime.stealingCounts.moves)
}

/// One producer thread posts to 10,000 colors drawn from Zipf(1.0); 90% of callbacks hash for
/// ~2 µs, 10% for ~50 µs. Each callback records its queue delay in its loop's buffer.
func measureZipf(loops: Int, stealing: Stealing, seconds: Double, work: HashWork) throws -> StealResult {
    let runtime = try Runtime(loops: loops, stealing: stealing)
    try runtime.start()
    let colors = zipfColors
    var cdf = [Double](repeating: 0, count: colors)
    var sum = 0.0
    for k in 0..<colors { sum += 1 / Double(k + 1); cdf[k] = sum }
    for k in 0..<colors { cdf[k] /= sum }
    let short = work.rounds(forMicroseconds: 2), long = work.rounds(forMicroseconds: 50)
    let delays = ZipfDelays(loops: loops)
    let completed = PaddedCounter(), stop = StopFlag()
    let producer = BenchThread {
        var random: UInt64 = 0x2545_F491_4F6C_DD1D
        var posted = 0
        while !stop.value.load(ordering: .relaxed) {
            while posted - Int(completed.value.load(ordering: .relaxed)) >= 4096 { usleep(20) }  // flow control
            random ^= random << 13; random ^= random >> 7; random ^= random << 17
            let u = Double(random >> 11) / Double(1 << 53)
            var lo = 0, hi = colors - 1
            while lo < hi { let mid = (lo + hi) / 2; if cdf[mid] < u { lo = mid + 1 } else { hi = mid } }
            let rounds = random % 10 == 0 ? long : short
            let postedAt = nowNanoseconds()
            try! runtime.execute(on: Color(UInt64(lo))) {
                delays.record(loop: runtime.currentLoopIndex!, since: postedAt)
                blackHole(HashWork.hash(rounds: rounds, seed: postedAt))
                completed.value.add(1, ordering: .relaxed)
            }
            posted += 1
        }
    }
    let start = nowSeconds()
    sleepSeconds(seconds)
    let done = completed.value.load(ordering: .relaxed)
    let elapsed = nowSeconds() - start
    stop.value.store(true, ordering: .relaxed)
    producer.join()
    let moves = runtime.stealingCounts.moves
    _ = try? runtime.shutdown()
    return StealResult(opsPerSecond: Double(done) / elapsed, p99Microseconds: delays.p99Microseconds(), moves: moves)
}

/// A stop flag shared with a producer thread.
final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

/// Zipf(1.0) over `zipfColors` colors placed by `rawValue % loops`: the busiest loop's share
/// of the posts.
func zipfBusiestShare(loops: Int) -> Double {
    var shares = [Double](repeating: 0, count: loops)
    for k in 0..<zipfColors { shares[k % loops] += 1 / Double(k + 1) }
    return shares.max()! / shares.reduce(0, +)
}

let zipfColors = 10_000

/// Queue delays, one buffer per loop (each written only by its loop's thread).
final class ZipfDelays: Sendable {
    private let buffers: [LoopSamples]
    init(loops: Int) { buffers = (0..<loops).map { _ in LoopSamples() } }

    func record(loop: Int, since postedAt: UInt64) { buffers[loop].values.append(nowNanoseconds() &- postedAt) }

    func p99Microseconds() -> Double? {
        let all = buffers.flatMap(\.values).sorted()
        guard !all.isEmpty else { return nil }
        return Double(all[min(all.count - 1, all.count * 99 / 100)]) / 1000
    }
}

/// One loop's queue delays.
final class LoopSamples: @unchecked Sendable {
    // Safe to share: appended to only on one loop's thread, and read by the main thread
    // after the runtime shut down (the join orders it).
    var values: [UInt64] = []
}
