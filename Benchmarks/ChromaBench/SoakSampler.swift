import Glibc

/// One reading of one server: seconds since the load started, VmRSS in bytes and open
/// descriptors (nil when /proc could not be read: the process is gone).
struct SoakSample {
    let time: Double
    let residentBytes: Int?
    let descriptors: Int?
}

/// Reads every server's RSS and descriptor count every `interval` seconds, on a thread
/// of its own, from the load's start until `finish()`; keeps every reading (a 30-minute
/// soak at 5 s is 360 per server). The ticks are fixed to the start, so a slow read does
/// not shift the ones after it.
final class SoakSampler: @unchecked Sendable {
    // Safe to share: `readings` is touched with `lock` held; `thread` only by the thread
    // that calls `start` and `finish`.
    let interval: Double
    private let servers: [SoakServer]
    private let start: Double
    private let lock = PThreadLock()
    private var readings: [SoakTarget: [SoakSample]] = [:]
    private let stop = SoakStop()
    private var thread: BenchThread?

    /// `start` is the load's start on the monotonic clock (`nowSeconds()`).
    init(servers: [SoakServer], interval: Double, start: Double) {
        self.servers = servers
        self.interval = interval
        self.start = start
    }

    /// Samples now and then every `interval`; after each round `after` runs on the
    /// sampling thread with the round's time (for a progress line).
    func begin(after: @escaping (Double) -> Void) {
        thread = BenchThread { [self] in
            var tick = 0
            while !stop.isSet {
                after(sample())
                tick += 1
                stop.pause(start + Double(tick) * interval - nowSeconds())
            }
        }
    }

    /// Stops sampling (the last round is the one before this call).
    func finish() {
        stop.set()
        thread?.join()
        thread = nil
    }

    /// Reads every server once and keeps the readings; returns their time.
    @discardableResult
    func sample() -> Double {
        let time = nowSeconds() - start
        var round: [(SoakTarget, SoakSample)] = []
        for server in servers {
            round.append((server.target, SoakSample(time: time, residentBytes: residentBytes(server.pid), descriptors: openDescriptors(server.pid))))
        }
        lock.lock()
        for (target, reading) in round { readings[target, default: []].append(reading) }
        lock.unlock()
        return time
    }

    /// Every reading so far, per server, oldest first.
    func series() -> [SoakTarget: [SoakSample]] {
        lock.lock()
        defer { lock.unlock() }
        return readings
    }

    /// The sampling interval for a soak of `seconds`: 5 s, shorter for short runs so they
    /// still get about 30 samples, never under 1 s.
    static func defaultInterval(forSoakOf seconds: Double) -> Double {
        min(5, max(1, seconds / 30))
    }
}
