import Glibc

/// The soak's memory check for one server. Under steady load a server's RSS may climb
/// while its caches, allocator arenas and buffers fill; after the warm-up it must level
/// off. It fails when the RSS at the end is more than `growthLimit` above the RSS at the
/// warm-up's end, or when the least-squares trend over the samples after the warm-up
/// rises more than `growthLimit` across that window (a slow leak still climbing whose end
/// sample happened to dip). Medians of a few samples damp single-sample noise.
struct SoakMemory {
    /// The most RSS may grow after the warm-up, as a fraction of its level then.
    static let growthLimit = 0.05
    /// Samples whose median is the RSS at the end.
    static let endSamples = 3

    /// The median of the samples within one interval of the warm-up's end, in bytes.
    let warm: Double
    /// The median of the last `endSamples` samples under load, in bytes.
    let end: Double
    /// The largest sample, warm-up and settling included.
    let peak: Int
    /// end / warm - 1.
    let growth: Double
    /// The least-squares slope over the samples after the warm-up, times the window, over
    /// `warm`; nil with fewer than 4 such samples.
    let trend: Double?
    /// Samples after the warm-up.
    let window: Int

    /// The warm-up of a soak of `seconds` sampled every `interval`: its first 20%, at least
    /// a minute once the soak is 5 minutes or longer, and at least one interval.
    static func warmup(seconds: Double, interval: Double) -> Double {
        max(seconds * 0.2, interval, seconds >= 300 ? 60 : 0)
    }

    /// Nil when there are no readable samples under load.
    init?(_ series: [SoakSample], warmupEnd: Double, loadEnd: Double, interval: Double) {
        let readable = series.compactMap { sample in sample.residentBytes.map { (time: sample.time, bytes: Double($0)) } }
        let underLoad = readable.filter { $0.time <= loadEnd }
        guard !underLoad.isEmpty else { return nil }
        var around = underLoad.filter { abs($0.time - warmupEnd) <= interval * 1.01 }
        if around.isEmpty {
            around = [underLoad.min { abs($0.time - warmupEnd) < abs($1.time - warmupEnd) }!]
        }
        warm = median(around.map(\.bytes))
        let after = underLoad.filter { $0.time >= warmupEnd - interval * 0.01 }
        end = median((after.isEmpty ? underLoad : after).suffix(Self.endSamples).map(\.bytes))
        peak = Int(readable.map(\.bytes).max()!)
        growth = warm > 0 ? end / warm - 1 : 0
        window = after.count
        if after.count >= 4, warm > 0 {
            let meanTime = after.reduce(0) { $0 + $1.time } / Double(after.count)
            let meanBytes = after.reduce(0) { $0 + $1.bytes } / Double(after.count)
            let spread = after.reduce(0) { $0 + ($1.time - meanTime) * ($1.time - meanTime) }
            let slope = after.reduce(0) { $0 + ($1.time - meanTime) * ($1.bytes - meanBytes) } / spread
            trend = slope * (after.last!.time - after.first!.time) / warm
        } else {
            trend = nil
        }
    }

    /// What fails the check, if anything.
    func problems(_ name: String) -> [String] {
        var out: [String] = []
        if growth > Self.growthLimit {
            out.append("\(name): RSS grew \(percent(growth)) after the warm-up (\(mebibytes(warm)) -> \(mebibytes(end)) MiB), "
                       + "more than \(Int(Self.growthLimit * 100))%")
        }
        if let trend, trend > Self.growthLimit {
            out.append("\(name): RSS keeps rising after the warm-up: the trend over \(window) samples adds \(percent(trend)) "
                       + "across the window, more than \(Int(Self.growthLimit * 100))%")
        }
        return out
    }
}

/// The descriptor check for one server: its count once listening (before any client),
/// the largest sampled, and the count once the load stopped and it came back (or the
/// wait gave up).
struct SoakDescriptors {
    /// How long the count may take to come back once the load stopped.
    static let settleTimeout = 30.0

    let baseline: Int
    var peak: Int
    var after: Int?
    /// Seconds after the load stopped at which the count was back; nil if it never was.
    var settledAfter: Double?

    func problems(_ name: String) -> [String] {
        guard settledAfter == nil else { return [] }
        guard let after else { return ["\(name): its descriptors could not be read after the load"] }
        return ["\(name): \(after) descriptors open \(Int(Self.settleTimeout)) s after the load stopped, baseline \(baseline)"]
    }
}

/// Polls every server's descriptors (every 100 ms, at most `SoakDescriptors.settleTimeout`)
/// until each is back at its baseline; the reads join `peak`.
func settleDescriptors(_ servers: [SoakServer], peaks: [SoakTarget: Int]) -> [SoakTarget: SoakDescriptors] {
    var result: [SoakTarget: SoakDescriptors] = [:]
    for server in servers {
        result[server.target] = SoakDescriptors(baseline: server.baselineDescriptors,
                                                peak: max(server.baselineDescriptors, peaks[server.target] ?? 0))
    }
    let start = nowSeconds()
    while true {
        let elapsed = nowSeconds() - start
        for server in servers where result[server.target]!.settledAfter == nil {
            let count = openDescriptors(server.pid)
            result[server.target]!.after = count
            if let count {
                result[server.target]!.peak = max(result[server.target]!.peak, count)
                if count <= server.baselineDescriptors { result[server.target]!.settledAfter = elapsed }
            }
        }
        if result.values.allSatisfy({ $0.settledAfter != nil }) || elapsed >= SoakDescriptors.settleTimeout { return result }
        usleep(100_000)
    }
}

func mebibytes(_ bytes: Double) -> String { fixed(bytes / Double(1 << 20), 1) }

func percent(_ fraction: Double) -> String { (fraction >= 0 ? "+" : "") + fixed(fraction * 100, 1) + "%" }
