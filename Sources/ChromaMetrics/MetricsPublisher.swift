import Chroma
import ChromaHTTP
import CoreMetrics
import Synchronization

/// Publishes a runtime's counters (`Runtime.statistics()`) and its HTTP servers'
/// (`HTTPServer.stats`) to swift-metrics, so a swift-prometheus or swift-otel backend gets
/// them with no code of its own.
///
/// Each `publish()` reads the counters (relaxed loads; nothing on a loop's path changes)
/// and hands them to the factory: running totals as `Counter`s, incremented by what was
/// counted since the last publish; levels (queue depth, busy share, queue delay, open
/// connections, the pool's queue) as `Gauge`s. Labels, with `prefix` (default `chroma`):
///
/// - per loop, dimension `loop`: `_loop_callbacks_total`, `_loop_mailbox_jobs_total`,
///   `_loop_wakeups_total`, `_loop_moves_total`, `_loop_buckets_given_total`,
///   `_loop_queue_depth`, `_loop_busy_ratio`, `_loop_queue_delay_max_seconds`,
///   `_loop_queue_delay_p99_seconds` (the last three once the watchdog has sampled);
/// - the pool: `_pool_queued`, `_pool_running`, `_pool_workers`, `_pool_completed_total`,
///   `_pool_overloaded_total`, `_pool_cancelled_total`;
/// - per server, dimension `port`: `_http_requests_total`, `_http_responses_total`
///   (dimension `status_class`: `1xx` … `5xx`), `_http_connections_total`,
///   `_http_open_connections`, `_http_limit_rejections_total`,
///   `_http_accept_failures_total`.
///
/// Threads: any thread may call `publish()`, `start(every:)` and `stop()`; publishes are
/// serialized by a lock, so the factory's handlers see one publish at a time.
public final class MetricsPublisher: Sendable {
    private let runtime: Runtime
    private let servers: [HTTPServer]
    private let state: Mutex<PublisherState>
    private let timer = Mutex<Chroma.Timer?>(nil)

    /// A publisher for `runtime` and `servers`, whose metrics are made by `factory` (default:
    /// the one `MetricsSystem.bootstrap` installed). Publishes nothing until `publish()` or
    /// `start(every:)`.
    public init(runtime: Runtime, servers: [HTTPServer] = [], prefix: String = "chroma",
                factory: any MetricsFactory = MetricsSystem.factory) {
        self.runtime = runtime
        self.servers = servers
        state = Mutex(PublisherState(prefix: prefix, factory: factory))
    }

    /// Reads the counters now and publishes them. Any thread.
    public func publish() {
        let statistics = runtime.statistics()
        let http = servers.map { ($0.port, $0.stats) }
        state.withLock { $0.publish(statistics, http) }
    }

    /// Publishes every `interval`, on a timer of the runtime, as `color` (default: a color
    /// of its own, so a publish never waits behind application callbacks, nor they behind
    /// it), until `stop()` or the runtime's shutdown. Publishes once at once. A second call
    /// replaces the first's timer. Throws `invalidArgument` for an interval that is not
    /// positive, and as `Runtime.schedule` does (a runtime not running).
    public func start(every interval: Duration, on color: Color? = nil) throws(ChromaError) {
        guard interval > .zero else {
            throw .invalidArgument(operation: "MetricsPublisher.start", detail: "the interval must be positive, not \(interval)")
        }
        publish()
        let next = try runtime.schedule(after: interval, repeating: interval, on: color ?? runtime.makeColor()) { [self] in publish() }
        _ = timer.withLock { previous in
            defer { previous = next }
            return previous?.cancel()
        }
    }

    /// Stops the timer `start(every:)` set; metrics keep their last values. Idempotent.
    public func stop() {
        _ = timer.withLock { previous in
            defer { previous = nil }
            return previous?.cancel()
        }
    }
}

/// The metrics and the totals last published, touched only under the publisher's lock.
private struct PublisherState: ~Copyable {
    let prefix: String
    let factory: any MetricsFactory
    private var counters: [String: Counter] = [:]
    private var gauges: [String: Gauge] = [:]
    private var published: [String: Int] = [:]

    init(prefix: String, factory: any MetricsFactory) {
        self.prefix = prefix
        self.factory = factory
    }

    mutating func publish(_ statistics: RuntimeStatistics, _ servers: [(UInt16, HTTPServerStats)]) {
        for loop in statistics.loops {
            let dimensions = [("loop", String(loop.index))]
            total("loop_callbacks_total", dimensions, loop.callbacks)
            total("loop_mailbox_jobs_total", dimensions, loop.mailboxJobs)
            total("loop_wakeups_total", dimensions, loop.wakeups)
            total("loop_moves_total", dimensions, loop.moves)
            total("loop_buckets_given_total", dimensions, loop.bucketsGiven)
            level("loop_queue_depth", dimensions, Double(loop.queueDepth))
            if let busy = loop.busyShare { level("loop_busy_ratio", dimensions, busy) }
            if let delay = loop.maxQueueDelay { level("loop_queue_delay_max_seconds", dimensions, delay.seconds) }
            if let delay = loop.p99QueueDelay { level("loop_queue_delay_p99_seconds", dimensions, delay.seconds) }
        }
        let pool = statistics.pool
        level("pool_queued", [], Double(pool.queued))
        level("pool_running", [], Double(pool.running))
        level("pool_workers", [], Double(pool.workers))
        total("pool_completed_total", [], pool.completed)
        total("pool_overloaded_total", [], pool.overloaded)
        total("pool_cancelled_total", [], pool.cancelled)
        for (port, stats) in servers {
            let dimensions = [("port", String(port))]
            total("http_requests_total", dimensions, stats.requests)
            let classes = [("1xx", stats.answers.informational), ("2xx", stats.answers.successful),
                           ("3xx", stats.answers.redirection), ("4xx", stats.answers.clientError),
                           ("5xx", stats.answers.serverError)]
            for (name, count) in classes {
                total("http_responses_total", dimensions + [("status_class", name)], count)
            }
            total("http_connections_total", dimensions, stats.connections)
            level("http_open_connections", dimensions, Double(stats.openConnections))
            total("http_limit_rejections_total", dimensions, stats.limitRejections)
            total("http_accept_failures_total", dimensions, stats.acceptFailures)
        }
    }

    /// A running total: the counter grows by what was added since the last publish.
    private mutating func total(_ name: String, _ dimensions: [(String, String)], _ value: Int) {
        let key = Self.key(name, dimensions)
        let counter = Self.metric(key, in: &counters) { Counter(label: "\(prefix)_\(name)", dimensions: dimensions, factory: factory) }
        let added = value - (published[key] ?? 0)
        if added > 0 { counter.increment(by: added) }
        published[key] = max(value, published[key] ?? 0)
    }

    /// A level: the gauge takes the value.
    private mutating func level(_ name: String, _ dimensions: [(String, String)], _ value: Double) {
        let key = Self.key(name, dimensions)
        Self.metric(key, in: &gauges) { Gauge(label: "\(prefix)_\(name)", dimensions: dimensions, factory: factory) }.record(value)
    }

    /// The metric under `key`, made on first use.
    private static func metric<M>(_ key: String, in table: inout [String: M], make: () -> M) -> M {
        if let known = table[key] { return known }
        let made = make()
        table[key] = made
        return made
    }

    private static func key(_ name: String, _ dimensions: [(String, String)]) -> String {
        dimensions.reduce(name) { $0 + "|" + $1.0 + "=" + $1.1 }
    }
}

extension Duration {
    fileprivate var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
