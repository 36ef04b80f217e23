import Glibc
import Logging

/// What a runtime watches for and tells about its callbacks (`Runtime(diagnostics:)`).
///
/// - **Enqueue sites** are always recorded (a constant word per job).
/// - **Chains** (off by default, or `CHROMA_CHAINS=1`): each job also keeps the sites of
///   the callbacks that led to it, up to 8 back, at the price of one allocation per post.
/// - **The stall watchdog** (on at 25 ms by default; `CHROMA_STALL_MS` overrides, 0 turns it
///   off): a thread that samples every loop's progress mark, with nothing added to the hot
///   path, and reports a callback that has run past the threshold once, with its site, its
///   chain and a native backtrace of the loop thread; and, from a probe job it sends each
///   busy loop, a job that waited past the threshold in a queue ("loop overloaded").
///   Repeats on a loop double its threshold; at most 5 reports go out a minute.
/// - **Crash context** (on): a fatal signal on a loop thread inside a callback (a crash, a
///   failed precondition) first writes the callback's color, site and chain to stderr.
public struct Diagnostics: Sendable {
    /// How long one callback may run, or one job wait, before it is reported; `.zero` turns
    /// the watchdog off.
    public var stallThreshold: Duration
    /// Whether jobs keep the chain of sites that led to them.
    public var chains: Bool
    /// Whether fatal signals inside callbacks print the callback's context first (a process-
    /// wide handler, installed by the first runtime that asks for it).
    public var crashContext: Bool
    /// Where reports and warnings go (label `chroma` by default).
    public var logger: Logger
    /// Called with each report too (on the watchdog thread; keep it short), after the logger.
    public var onReport: (@Sendable (StallReport) -> Void)?

    /// The defaults, with `CHROMA_CHAINS=1` and `CHROMA_STALL_MS=N` from the environment.
    public init(stallThreshold: Duration? = nil, chains: Bool? = nil, crashContext: Bool = true,
                logger: Logger = Logger(label: "chroma"), onReport: (@Sendable (StallReport) -> Void)? = nil) {
        let environment = Diagnostics.environmentMilliseconds("CHROMA_STALL_MS").map { Duration.milliseconds($0) }
        self.stallThreshold = stallThreshold ?? environment ?? .milliseconds(25)
        self.chains = chains ?? (Diagnostics.environmentMilliseconds("CHROMA_CHAINS") ?? 0 != 0)
        self.crashContext = crashContext
        self.logger = logger
        self.onReport = onReport
    }

    static func environmentMilliseconds(_ name: String) -> Int? {
        guard let text = getenv(name) else { return nil }
        return Int(String(cString: text))
    }

    /// Throws for a negative threshold.
    func validate() throws(ChromaError) {
        guard stallThreshold >= .zero else {
            throw .invalidArgument(operation: "Runtime.init", detail: "stallThreshold must not be negative, got \(stallThreshold)")
        }
    }
}

/// One report of the stall watchdog.
public struct StallReport: Sendable, CustomStringConvertible {
    /// What was seen.
    public enum Kind: Sendable, Equatable {
        /// One callback has run past the threshold and is still running.
        case stalled
        /// A job waited past the threshold in a loop's queue: the loop has more work than
        /// time (no single callback need be long).
        case overloaded
    }

    public var kind: Kind
    /// The loop's index.
    public var loop: Int
    /// The stalled callback's color (nil for an overloaded loop).
    public var color: Color?
    /// How long the callback had run when seen (at least), or how long the job waited.
    public var duration: Duration
    /// Where the stalled callback was queued, when known.
    public var site: EnqueueSite?
    /// With chains on: the sites of the callbacks that led to it, nearest first.
    public var chain: [EnqueueSite]
    /// For an overloaded loop: the jobs that ran ahead of the probe in the queue it waited in.
    public var queueDepth: Int?
    /// The stalled thread's stack, one line per frame, when it could be captured.
    public var backtrace: [String]
    /// Reports dropped by the rate limit since the last one that went out.
    public var suppressed: Int

    public var description: String {
        let ms = Double(duration.components.seconds) * 1e3 + Double(duration.components.attoseconds) / 1e15
        let time = String(Int(ms.rounded()))
        var lines: [String]
        switch kind {
        case .stalled:
            lines = ["loop \(loop) stalled: a callback of \(color.map { "\($0)" } ?? "no color") has run for \(time) ms"]
            lines.append("  queued at \(site.map { "\($0)" } ?? "an unknown site")")
            for link in chain { lines.append("  by a callback queued at \(link)") }
        case .overloaded:
            lines = ["loop \(loop) overloaded: a job waited \(time) ms in its queue, behind \(queueDepth ?? 0) jobs"]
        }
        if !backtrace.isEmpty {
            lines.append("  backtrace of the loop thread:")
            lines += backtrace.map { "    \($0)" }
        }
        if suppressed > 0 { lines.append("  (\(suppressed) earlier reports suppressed by the rate limit)") }
        return lines.joined(separator: "\n")
    }
}
