// chroma-httpd: a static web server (Flash, nginx, the libasync-smp web server) on every
// core. `GET /hello` answers `Hello, World!`; everything else is a file under ROOT, small
// ones from each loop's memory cache, big ones with sendfile; `GET /events` is a stream of
// server-sent events, one a second, until the client leaves. Each connection has its own
// color, so its requests are answered in order while other connections run in parallel.
// With --tls-cert and --tls-key it serves HTTPS instead, on the same port.
//
//   chroma-httpd --port P --root DIR [--loops N] [--stealing on|off] [--stats SECONDS] [--listing] [--access-log FILE|-]
//                [--tls-cert FILE --tls-key FILE]
//
// SIGTERM drains (requests in progress finish, at most 3 s), SIGINT stops at once.
import ArgumentParser
import Chroma
import ChromaHTTP
import Glibc

/// The command line and the server it starts. `run()` runs on the main thread and returns
/// after SIGINT, or after SIGTERM's drain, stopped the runtime.
struct ChromaHTTPD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chroma-httpd",
        abstract: "A static web server on every core: GET /hello, GET /events (server-sent events), and the files under --root.",
        discussion: """
            Prints one line once it is listening. SIGTERM finishes the requests in progress \
            (at most 3 s) and exits; SIGINT exits at once.
            """
    )

    @Option(parsing: .unconditional, help: "TCP port to listen on, 0...65535 (0: the kernel picks a free one, printed when listening).")
    var port: Int

    @Option(help: ArgumentHelp("Directory whose files are served.", valueName: "dir"))
    var root: String

    @Option(parsing: .unconditional, help: ArgumentHelp("Event loops to run, at least 1. (default: one per online CPU)", valueName: "n"))
    var loops: Int?

    @Option(help: ArgumentHelp("Work stealing between loops: on or off (colors stay where they start).", valueName: "on|off"))
    var stealing: String = "on"

    @Option(help: ArgumentHelp("Print one line of counters every this many seconds (requests/s, answers by status class, open connections, rejections, the loops' callbacks, busy share and queue delay).", valueName: "seconds"))
    var stats: Double?

    @Flag(help: "List a directory that has no index.html (default: 404).")
    var listing = false

    @Option(help: ArgumentHelp("Append one line per request (common log format plus the duration in seconds) to this file; - for standard output.", valueName: "file"))
    var accessLog: String?

    @Option(help: ArgumentHelp("Serve HTTPS with this PEM certificate chain (the server's certificate first); needs --tls-key.", valueName: "file"))
    var tlsCert: String?

    @Option(help: ArgumentHelp("The PEM private key of --tls-cert (unencrypted); needs --tls-cert.", valueName: "file"))
    var tlsKey: String?

    func validate() throws {
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together: give both for HTTPS, or neither for HTTP")
        }
        if let stats, !(stats > 0 && stats <= 86_400) {
            throw ValidationError("--stats must be a number of seconds in (0, 86400], not \(stats)")
        }
        guard stealing == "on" || stealing == "off" else {
            throw ValidationError("--stealing must be on or off, not \(stealing)")
        }
        guard (0...65535).contains(port) else {
            throw ValidationError("--port must be in 0...65535, not \(port)")
        }
        if let loops, loops < 1 {
            throw ValidationError("--loops must be at least 1, not \(loops)")
        }
        var info = stat()
        guard stat(root, &info) == 0 else {
            throw ValidationError("--root \(root): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw ValidationError("--root \(root) is not a directory")
        }
    }

    func run() throws {
        let loops = self.loops ?? Runtime.onlineCPUCount
        // Built once: answering it copies 13 bytes into the socket's buffer and allocates nothing.
        let hello = HTTPResponse(text: "Hello, World!")
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(hello) }
        let runtime = try Runtime(loops: loops, stealing: stealing == "on" ? .on : .off)
        // One event a second on the connection's color, from a Chroma timer: no thread waits.
        routes.stream("/events") { request in
            guard let events = request.startEventStream() else { return }
            for tick in 1... {
                var now = timespec()
                clock_gettime(CLOCK_REALTIME, &now)
                guard events.send(data: "\(now.tv_sec)", event: "tick", id: "\(tick)") else { return }  // the client left
                try await runtime.sleep(for: .seconds(1))
            }
        }
        routes.files(at: "/", StaticFiles(root: root, directoryListing: listing))

        // Loaded before the runtime starts, so a bad certificate or key stops here with its path.
        let tls = try tlsCert.map { cert throws(ChromaError) in try HTTPSConfiguration(certificateFile: cert, keyFile: tlsKey!) }
        try runtime.start()
        let log = try accessLog.map { path throws(ChromaError) in path == "-" ? HTTPAccessLog.standardOutput : try HTTPAccessLog(path: path) }
        let server = if let tls {
            try runtime.serveHTTPS(port: UInt16(port), tls: tls, accessLog: log, routes: routes)
        } else {
            try runtime.serveHTTP(port: UInt16(port), accessLog: log, routes: routes)
        }
        // SIGTERM (a deploy, a restart): finish the requests in progress, at most 3 s, then exit.
        // SIGINT: stop at once.
        try runtime.onSignal(SIGTERM) { server.drain(timeout: .seconds(3)) { _ in runtime.stop() } }
        try runtime.onSignal(SIGINT) { runtime.stop() }
        if let stats {
            let line = StatsLine(server: server, runtime: runtime, interval: stats)
            let interval = Duration.milliseconds(Int64((stats * 1000).rounded()))
            // The line is made on the timer's color; the write goes to the pool, so a slow
            // reader of standard output never stalls a loop.
            _ = try runtime.schedule(after: interval, repeating: interval, on: runtime.makeColor()) {
                let text = line.next()
                _ = try? runtime.blocking(on: .main, lane: .short) { writeAll(1, text) } completion: { _ in }
            }
        }
        print("chroma-httpd listening on port \(server.port)\(tls == nil ? "" : " (HTTPS)") with \(loops) loop(s), serving \(root)")
        fflush(nil)  // the listening line must reach a pipe before any client connects
        try runtime.run()
    }
}

/// `--stats`: one line per interval, rates over the interval since the last line.
final class StatsLine: @unchecked Sendable {
    // Safe to send: `previous` and `ticks` are touched only by `next()`, which runs on the
    // stats timer's one color, so never twice at once.
    private let server: HTTPServer
    private let runtime: Runtime
    private let interval: Double
    private var previous = (requests: 0, callbacks: 0, mailbox: 0)
    private var ticks = 0

    init(server: HTTPServer, runtime: Runtime, interval: Double) {
        self.server = server
        self.runtime = runtime
        self.interval = interval
    }

    func next() -> String {
        let http = server.stats
        let loops = runtime.statistics()
        let mailbox = loops.loops.reduce(0) { $0 + $1.mailboxJobs }
        let busy = loops.loops.compactMap(\.busyShare)
        let delay = loops.loops.compactMap(\.p99QueueDelay).max()
        ticks += 1
        func rate(_ now: Int, _ then: Int) -> String { String(Int((Double(now - then) / interval).rounded())) }
        var line = "stats t=\(format(Double(ticks) * interval))s"
        line += " req/s=\(rate(http.requests, previous.requests))"
        line += " 1xx=\(http.answers.informational) 2xx=\(http.answers.successful) 3xx=\(http.answers.redirection)"
        line += " 4xx=\(http.answers.clientError) 5xx=\(http.answers.serverError)"
        line += " cache-hits=\(http.fileCache.hits) cache-misses=\(http.fileCache.misses) evictions=\(http.fileCache.evictions)"
        line += " open=\(http.openConnections) rejected=\(http.limitRejections) accept-failures=\(http.acceptFailures)"
        line += " callbacks/s=\(rate(loops.callbacks, previous.callbacks)) mailbox/s=\(rate(mailbox, previous.mailbox))"
        line += " busy=" + (busy.isEmpty ? "-" : "\(Int((busy.reduce(0, +) / Double(busy.count) * 100).rounded()))%")
        line += " p99-delay=" + (delay.map { "\(format(Double($0.components.attoseconds) / 1e15 + Double($0.components.seconds) * 1000))ms" } ?? "-")
        line += " pool-queued=\(loops.pool.queued)\n"
        previous = (http.requests, loops.callbacks, mailbox)
        return line
    }

    private func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String((value * 100).rounded() / 100)
    }
}

/// Writes all of `text` to `fd` (a pool thread: the write may block).
func writeAll(_ fd: Int32, _ text: String) {
    var text = text
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}

ChromaHTTPD.main()
