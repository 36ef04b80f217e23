import CChroma
import Glibc
import Logging
import Synchronization

/// The stall watchdog: one thread per runtime that samples every loop's progress mark (the
/// callback start count in its `chroma_thread_state`) every fifth of the threshold. A loop
/// seen inside a callback with the same count for longer than its threshold has one
/// callback running that long: it is reported once, with the site and chain published at
/// its start and a stack captured by a signal to the loop thread (the handler is C). Nothing
/// is added to the hot path: a callback start already stores its color and site, and
/// counts itself.
///
/// It also sends each loop that is awake a probe job (`Loop.probe`) and reports a probe that
/// waited past the threshold as "loop overloaded". The probes give the sampled queue delays
/// in `statistics()`, and the samples the loops' busy shares.
///
/// Limits, as Seastar's reactor-stall reports: each report on a loop doubles that loop's
/// threshold (back to the base after a minute without one), and at most 5 reports go out a
/// minute; the next one says how many were dropped. When every loop sleeps, sampling slows
/// to once per threshold.
///
/// Threading: its own thread; `stop`/`join` from any thread but its own.
final class Watchdog: @unchecked Sendable {
    // Safe to share: `stopping` is guarded by `lock`; `thread` is written by `start` and read by
    // `join`, both on threads that called into the runtime's lifecycle in order; the
    // tracking state is the watchdog thread's alone.
    unowned(unsafe) let runtime: Runtime
    let threshold: UInt64
    private let lock = Lock()
    private let wakeup = Condition(monotonic: true)
    private var stopping = false
    private var thread: pthread_t?
    /// Reports dropped by the rate limit so far, and sampling rounds made (for tests).
    let dropped = Atomic<Int>(0)
    let rounds = Atomic<Int>(0)

    static let reportsPerMinute = 5
    static let minute: UInt64 = 60_000_000_000

    /// The watchdog thread's view of one loop.
    private struct Track {
        var starts: UInt64 = 0
        var since: UInt64 = 0
        var reported = false
        var threshold: UInt64
        var lastReport: UInt64 = 0
        var probeSeq = 0
        var probeSent: UInt64 = 0
    }

    init(runtime: Runtime, threshold: Duration) {
        self.runtime = runtime
        let parts = threshold.components
        self.threshold = UInt64(parts.seconds) * 1_000_000_000 + UInt64(parts.attoseconds / 1_000_000_000)
    }

    /// Starts the thread (after the loops started). A thread that cannot start leaves the
    /// runtime without a watchdog, with a warning.
    func start() {
        _ = chroma_install_stack_capture()
        let runtime = self.runtime
        switch startThread({ [self] in
            _ = runtime  // held until the thread exits
            main()
        }) {
        case .success(let tid): thread = tid
        case .failure(let error):
            runtime.diagnostics.logger.warning("the stall watchdog did not start (pthread_create: errno \(error.code))")
        }
    }

    /// Asks the thread to exit. Returns at once.
    func stop() {
        lock.withLock { stopping = true }
        wakeup.signal()
    }

    /// Waits for the thread to exit (from the thread itself, detaches).
    func join() {
        stop()
        guard let thread else { return }
        self.thread = nil
        if pthread_equal(thread, pthread_self()) != 0 {
            pthread_detach(thread)
        } else {
            pthread_join(thread, nil)
        }
    }

    private func main() {
        _ = chroma_name_current_thread("chroma-watchdog")
        let loops = runtime.loops
        var tracks = [Track](repeating: Track(threshold: threshold), count: loops.count)
        var sent: [UInt64] = []  // times of the reports that went out, the last minute's
        var suppressed = 0
        let busyPeriod = min(max(threshold / 5, 1_000_000), 100_000_000)
        let idlePeriod = min(max(threshold, 1_000_000), 500_000_000)
        var period = busyPeriod
        while true {
            let deadline = monotonicNanoseconds() &+ period
            let stop: Bool = lock.withLock {
                while !stopping && monotonicNanoseconds() < deadline { wakeup.wait(lock, untilMonotonic: deadline) }
                return stopping
            }
            if stop { return }
            let now = monotonicNanoseconds()
            var reports: [StallReport] = []
            var anyAwake = false
            for (i, loop) in loops.enumerated() {
                if let report = sample(loop, &tracks[i], now: now, awake: &anyAwake) { reports.append(report) }
                if let report = checkProbe(loop, &tracks[i], now: now) { reports.append(report) }
            }
            period = anyAwake ? busyPeriod : idlePeriod
            rounds.store(rounds.load(ordering: .relaxed) &+ 1, ordering: .releasing)
            for var report in reports {
                sent.removeAll { now &- $0 > Watchdog.minute }
                guard sent.count < Watchdog.reportsPerMinute else {
                    suppressed += 1
                    dropped.store(dropped.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
                    continue
                }
                sent.append(now)
                report.suppressed = suppressed
                suppressed = 0
                emit(report)
            }
        }
    }

    /// One sample of `loop`: counts it, and returns a report when one callback has run past
    /// the loop's threshold.
    private func sample(_ loop: Loop, _ track: inout Track, now: UInt64, awake: inout Bool) -> StallReport? {
        let counters = loop.counters
        let base = threshold
        return counters.withThread { state, thread -> StallReport? in
            let starts = chroma_state_starts(state)
            let color = chroma_state_color(state)
            let inCallback = color != Color.noneRawValue
            counters.samples.store(counters.samples.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            if inCallback {
                counters.busySamples.store(counters.busySamples.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            }
            if inCallback || !loop.core.mailbox.isAsleep { awake = true }
            if track.threshold > base && now &- track.lastReport > Watchdog.minute { track.threshold = base }
            guard inCallback && starts == track.starts else {
                track = Track(starts: starts, since: now, reported: false, threshold: track.threshold,
                              lastReport: track.lastReport, probeSeq: track.probeSeq, probeSent: track.probeSent)
                return nil
            }
            let ran = now &- track.since
            guard !track.reported && ran >= track.threshold else { return nil }
            // The site is the running callback's if the count is the same after reading it;
            // the stack and the chain (which the loop thread's capture handler copies, as it
            // lives in memory only that thread may read), if it is the same after the capture.
            let site = chroma_state_site(state)
            guard chroma_state_starts(state) == starts else { return nil }
            var frames = [UnsafeMutableRawPointer?](repeating: nil, count: 64)
            var captureChain = Chain()
            let captured = frames.withUnsafeMutableBufferPointer {
                Int(chroma_capture_stack(UInt(thread), $0.baseAddress, Int32($0.count), &captureChain.raw, 50))
            }
            let stackIsOurs = captured > 0 && chroma_state_starts(state) == starts
            let chain = stackIsOurs ? captureChain : Chain()
            track.reported = true
            track.threshold = track.threshold &* 2
            track.lastReport = now
            return StallReport(kind: .stalled, loop: loop.index, color: Color(unchecked: color & Job.colorMask),
                               duration: .nanoseconds(Int64(ran)), site: EnqueueSite.named(site), chain: chain.named,
                               queueDepth: nil, backtrace: stackIsOurs ? Watchdog.symbols(frames, count: captured) : [],
                               suppressed: 0)
        } ?? nil
    }

    /// Reads `loop`'s last probe, reports it if it waited past the threshold, and sends the
    /// next one to a loop that is awake.
    private func checkProbe(_ loop: Loop, _ track: inout Track, now: UInt64) -> StallReport? {
        let counters = loop.counters
        var report: StallReport?
        let seq = counters.probes
        if seq != track.probeSeq {
            track.probeSeq = seq
            let delay = counters.lastProbeDelay.load(ordering: .relaxed)
            let depth = counters.lastProbeDepth.load(ordering: .relaxed)
            // Overloaded means a backlog: a wait behind no job at all is the thread not
            // getting a CPU, or one long callback (a stall, reported as one; a stall
            // reported meanwhile explains the wait already).
            if delay >= threshold && depth > 0 && track.lastReport < track.probeSent {
                report = StallReport(kind: .overloaded, loop: loop.index, color: nil, duration: .nanoseconds(Int64(delay)),
                                     site: nil, chain: [], queueDepth: depth, backtrace: [], suppressed: 0)
            }
        }
        // One probe per threshold, not per sample: enough for the delay figures and for an
        // overload to be seen within two thresholds, at a fifth of the posts.
        if now &- track.probeSent >= threshold, !counters.probeInFlight.load(ordering: .acquiring), !loop.core.mailbox.isAsleep,
           let starts = counters.withThread({ state, _ in chroma_state_starts(state) }) {
            counters.probeInFlight.store(true, ordering: .relaxed)
            track.probeSent = now
            if !loop.probe(sentAt: now, startsAtSend: starts) { counters.probeInFlight.store(false, ordering: .relaxed) }
        }
        return report
    }

    private func emit(_ report: StallReport) {
        let diagnostics = runtime.diagnostics
        var metadata: Logger.Metadata = ["loop": "\(report.loop)", "kind": "\(report.kind)"]
        if let color = report.color { metadata["color"] = "\(color.rawValue)" }
        if let site = report.site { metadata["site"] = "\(site)" }
        diagnostics.logger.warning("\(report.description)", metadata: metadata)
        diagnostics.onReport?(report)
    }

    private static func symbols(_ frames: [UnsafeMutableRawPointer?], count: Int) -> [String] {
        frames.withUnsafeBufferPointer { buffer -> [String] in
            guard let symbols = chroma_frame_symbols(buffer.baseAddress, Int32(count)) else { return [] }
            defer { chroma_free_frame_symbols(symbols) }
            // Frame 0 is the capture handler, 1 the signal trampoline.
            return (min(2, count)..<count).compactMap { symbols[$0].map { String(cString: $0) } }
        }
    }
}
