import ArgumentParser
import Chroma
import Glibc

/// `chroma-bench http`: `wrk` over loopback against Chroma's `chroma-httpd` and its peers
/// (a C evhttp server, SwiftNIO, Hummingbird, nginx), each a child process with the same number
/// of threads. Per workload, the servers take turns (chroma, C, NIO, Hummingbird, nginx, chroma, …) for
/// `--rounds` rounds; medians are reported, then ratios against the targets.
struct HTTPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http",
        abstract: "HTTP under wrk: chroma-httpd beside C evhttp, SwiftNIO, Hummingbird and nginx, interleaved, with ratios."
    )

    @Option(help: "Threads of every server: Chroma's loops, the C, NIO and Hummingbird peers' threads, nginx's workers.")
    var loops: Int = Runtime.onlineCPUCount

    @Option(help: "Seconds per measured wrk run (whole seconds, as wrk takes them).")
    var duration: Int = 5

    @Option(help: "Seconds of the warm-up wrk run before each measured run; 0 for none.")
    var warmup: Int = 1

    @Option(help: "Rounds; each round runs every server in turn on a workload; medians are reported.")
    var rounds: Int = 3

    @Option(help: "Connection counts for /hello, /file4k.bin, its revalidation (304) and a 1 MiB range, comma-separated.")
    var connections: String = "64"

    @Option(help: "Connections of the heavy-load /hello run, compared with the first --connections count; 0 skips it.")
    var heavy: Int = 5000

    @Option(help: "wrk threads (-t).")
    var wrkThreads: Int = 2

    @Option(help: "Servers to run, comma-separated: chroma, chroma-static (chroma-httpd with --stealing off), c-evhttp, nio, hummingbird, nginx.")
    var servers: String = "chroma,chroma-static,c-evhttp,nio,hummingbird,nginx"

    @Option(help: "chroma-httpd to run (default: the one next to this chroma-bench); skipped when missing.")
    var httpd: String?

    @Option(help: "The C evhttp peer (built by `make bench`); skipped when missing.")
    var cPeer: String = ".build/peers/c-httpd"

    @Option(help: "The SwiftNIO peer (built by `make bench`); serves /hello only; skipped when missing.")
    var nioPeer: String = "Benchmarks/peers/swiftnio/.build/release/nio-http"

    @Option(help: "The Hummingbird 2 peer (built by `make bench`); skipped when missing.")
    var hbPeer: String = "Benchmarks/peers/swiftnio/.build/release/hb-http"

    @Option(help: "nginx.conf template (@PORT@ @ROOT@ @WORKERS@ @PREFIX@); nginx is skipped when it or `nginx` is missing.")
    var nginxConf: String = "Benchmarks/peers/nginx/nginx.conf"

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false
    @OptionGroup var plot: PlotOption

    func run() throws {
        let lightCounts = connections.split(separator: ",").compactMap { Int($0) }
        guard loops >= 1, duration >= 1, warmup >= 0, rounds >= 1, wrkThreads >= 1, heavy >= 0,
              !lightCounts.isEmpty, lightCounts.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--loops, --duration, --rounds, --wrk-threads and --connections must be positive")
        }
        let wanted = servers.split(separator: ",").map(String.init)
        for name in wanted where !HTTPBenchServer.names.contains(name) {
            throw ValidationError("unknown server \(name); use \(HTTPBenchServer.names.joined(separator: ", "))")
        }
        let machine = Machine.current()
        var report = Report(scenario: "http", machine: machine)
        guard onPath("wrk") else {
            report.skip("wrk is not on PATH: no http benchmark (`make bench` installs it)", json: json)
            return
        }
        var notes: [String] = []
        // Children inherit the limit: wrk and every server need one descriptor per connection.
        let fileLimit = raiseOpenFileLimit()
        if heavy > 0, fileLimit < heavy + 256 {
            notes.append("RLIMIT_NOFILE is \(fileLimit), below \(heavy) connections + slack: expect socket errors at c\(heavy)")
        }
        let work = try HTTPBenchDir()
        defer { work.remove() }

        var chosen: [HTTPBenchServer] = []
        for name in wanted {
            switch makeServer(name, work: work) {
            case .success(let server): chosen.append(server)
            case .failure(let skip): notes.append(skip.reason)
            }
        }
        var workloads: [HTTPBenchWorkload] = []
        for count in lightCounts {
            workloads += HTTPBenchWorkload.light(connections: count, work: work)
        }
        if heavy > 0, !lightCounts.contains(heavy) {
            workloads.append(HTTPBenchWorkload(label: "/hello", path: "/hello", connections: heavy, needsFiles: false))
        }
        var plan: [(HTTPBenchWorkload, Int, HTTPBenchServer)] = []
        for workload in workloads {
            for round in 1...rounds {
                for server in chosen where workload.runs(on: server) {
                    plan.append((workload, round, server))
                }
            }
        }

        var results: [String: [WrkResult]] = [:]
        var failures: [String: [String]] = [:]
        var ciphers: [String] = []  // "row: protocol cipher", once per row and cipher
        for (index, (workload, round, server)) in plan.enumerated() {
            let row = "\(server.name) \(workload.name)"
            let step = "[\(index + 1)/\(plan.count)] \(workload.name), round \(round)/\(rounds): \(server.name)"
            switch measure(server, workload, work: work, step: step) {
            case .success(let result):
                results[row, default: []].append(result)
                if let cipher = result.cipher, !ciphers.contains(row + ": " + cipher) { ciphers.append(row + ": " + cipher) }
            case .failure(let failure): failures[row, default: []].append(failure.reason)
            }
        }
        endProgress()
        notes += ciphers

        // Rows, in plan order: workload, then server.
        var summaries: [HTTPBenchRow] = []
        for workload in workloads {
            for server in chosen where workload.runs(on: server) {
                let name = "\(server.name) \(workload.name)"
                summaries.append(HTTPBenchRow(name: name, server: server.name, workload: workload.name,
                                              results: results[name] ?? [], failures: failures[name] ?? []))
            }
        }
        for summary in summaries {
            if let row = summary.row { report.rows.append(row) }
        }
        let ratios = targetRatios(summaries, lightCounts: lightCounts)
        report.ratios = ratios.map { ($0.name, $0.value) }
        try plot.write(report, targets: ratios.compactMap { ratio in ratio.target.map { (ratio.name, PlotTarget($0)) } })

        if json {
            for line in notes { note(line) }
            for summary in summaries {
                for failure in summary.failures { note("\(summary.name): \(failure)") }
            }
            print(report.json())
            return
        }
        print("chroma-bench http   (\(machine.nproc) cores, \(machine.cpu))")
        let warmupText = warmup > 0 ? "after a \(warmup)s warm-up" : "without warm-up"
        let roundsText = rounds > 1 ? "median of \(rounds) rounds, servers interleaved" : "1 round"
        print("wrk -t\(wrkThreads) --latency over loopback; every server \(loops) thread(s)/loop(s)/worker(s); "
              + "\(duration)s per run \(warmupText); \(roundsText)")
        let widths = [9, 16, 10, 10, 10]
        print((zip(["server", "workload", "k req/s", "p50 us", "p99 us"], widths).map { $0.padded(to: $1) } + ["errors"]).joined(separator: " "))
        for summary in summaries {
            var cells = [summary.server, summary.workload]
            if let row = summary.row {
                cells += [fixed(row.opsPerSecond / 1e3, 1), fixed(row.p50Microseconds ?? .nan, 0), fixed(row.p99Microseconds ?? .nan, 0)]
            } else {
                cells += ["failed", "-", "-"]
            }
            print((zip(cells, widths).map { $0.padded(to: $1) } + [summary.errorText]).joined(separator: " "))
        }
        if !ratios.isEmpty {
            let nameWidth = max(5, ratios.map { $0.name.count }.max()!)
            print("")
            print(["ratio".padded(to: nameWidth), "value".padded(to: 7), "target"].joined(separator: " "))
            for ratio in ratios {
                var line = ratio.name.padded(to: nameWidth) + " " + (fixed(ratio.value, 2) + "x").padded(to: 7)
                if let target = ratio.target {
                    line += " " + target.text.padded(to: 8) + " " + (target.isMet(by: ratio.value) ? "met" : "NOT met")
                }
                if ratio.hasErrors { line += "   (a row with errors)" }
                print(line.trimmingSpaces())
            }
        }
        print("")
        for summary in summaries {
            for failure in summary.failures { print("\(summary.name): \(failure)") }
        }
        for line in notes { print(line) }
        if chosen.contains(where: { !$0.servesFiles }) {
            print("nio serves /hello only (no files); errors = wrk's socket errors (connect/read/write/timeout) and non-2xx/3xx responses, summed over rounds")
        } else {
            print("errors = wrk's socket errors (connect/read/write/timeout) and non-2xx/3xx responses, summed over rounds")
        }
    }

    // MARK: Servers

    private func makeServer(_ name: String, work: HTTPBenchDir) -> Result<HTTPBenchServer, HTTPBenchSkip> {
        let threads = String(loops)
        switch name {
        case "chroma", "chroma-static":
            let path = httpd ?? siblingExecutable("chroma-httpd")
            guard isExecutable(path) else {
                return .failure(HTTPBenchSkip("\(name): skipped, no chroma-httpd at \(path) (build it: swift build -c release --product chroma-httpd)"))
            }
            let stealing = name == "chroma" ? "on" : "off"
            return .success(HTTPBenchServer(name: name, servesFiles: true) { port, tls in
                let certificate = tls.map { ["--tls-cert", $0.certificate, "--tls-key", $0.key] } ?? []
                return (path, ["--port", String(port), "--root", work.root, "--loops", threads, "--stealing", stealing] + certificate)
            })
        case "c-evhttp":
            guard isExecutable(cPeer) else {
                return .failure(HTTPBenchSkip("c-evhttp: skipped, no C evhttp peer at \(cPeer) (build it with `make peers`)"))
            }
            return .success(HTTPBenchServer(name: name, servesFiles: true) { port, _ in
                (self.cPeer, [String(port), threads, work.root])
            })
        case "nio":
            guard isExecutable(nioPeer) else {
                return .failure(HTTPBenchSkip("nio: skipped, no SwiftNIO peer at \(nioPeer) (build it with `make peers`)"))
            }
            return .success(HTTPBenchServer(name: name, servesFiles: false) { port, _ in
                (self.nioPeer, ["--port", String(port), "--threads", threads])
            })
        case "hummingbird":
            guard isExecutable(hbPeer) else {
                return .failure(HTTPBenchSkip("hummingbird: skipped, no Hummingbird peer at \(hbPeer) (build it with `make peers`)"))
            }
            return .success(HTTPBenchServer(name: name, servesFiles: true) { port, _ in
                (self.hbPeer, ["--port", String(port), "--threads", threads, "--root", work.root])
            })
        default:
            guard onPath("nginx") else { return .failure(HTTPBenchSkip("nginx: skipped, `nginx` is not on PATH")) }
            guard let template = readWholeFile(nginxConf) else {
                return .failure(HTTPBenchSkip("nginx: skipped, cannot read its config template \(nginxConf)"))
            }
            let prefix = work.nginxPrefix
            let conf = prefix + "/nginx.conf"
            return .success(HTTPBenchServer(name: name, servesFiles: true) { port, tls in
                // The same certificate as Chroma's, and OpenSSL's defaults on both sides (TLS 1.3,
                // the client's first suite), so the cipher is the same too (the probe reports it).
                // One line: the template's header comment names the placeholders too.
                let ssl = tls.map { "ssl_certificate \($0.certificate); ssl_certificate_key \($0.key); ssl_protocols TLSv1.2 TLSv1.3;" } ?? ""
                let text = template.replacing("@PORT@", with: String(port)).replacing("@ROOT@", with: work.root)
                    .replacing("@WORKERS@", with: threads).replacing("@PREFIX@", with: prefix)
                    .replacing("@SSL@", with: tls == nil ? "" : "ssl ").replacing("@TLS@", with: ssl)
                guard writeWholeFile(conf, text) else { return nil }
                return ("nginx", ["-c", conf, "-p", prefix])
            })
        }
    }

    /// One server's run on one workload: start it, wait until it accepts, warm up, measure, stop.
    private func measure(_ server: HTTPBenchServer, _ workload: HTTPBenchWorkload, work: HTTPBenchDir, step: String) -> Result<WrkResult, HTTPBenchSkip> {
        let port = freePort()
        guard let (path, arguments) = server.command(port, workload.tls ? work.certificate : nil) else {
            return .failure(HTTPBenchSkip("could not prepare its command (config not written)"))
        }
        let log = work.logs + "/\(server.name).log"
        progress("\(step), starting")
        let child: ServerChild
        switch ServerChild.start(path, arguments, log: log, port: port) {
        case .success(let started): child = started
        case .failure(let skip): return .failure(skip)
        }
        defer {
            if !child.stop() { note("\(server.name) did not exit within 5 s of SIGTERM; killed") }
        }
        let url = "\(workload.tls ? "https" : "http")://127.0.0.1:\(port)\(workload.path)"
        var cipher: String?
        let status: Int?
        if workload.tls {
            (status, cipher) = probeHTTPS(url: url)
        } else {
            status = probeStatus(port: port, path: workload.path, headers: workload.headers)
        }
        guard status == workload.expectedStatus else {
            return .failure(HTTPBenchSkip("answered \(status.map(String.init) ?? "nothing") to the probe, not \(workload.expectedStatus): not measured"))
        }
        if warmup > 0 {
            progress("\(step), warm-up \(warmup)s")
            _ = runWrk(url: url, headers: workload.headers, connections: workload.connections, seconds: warmup)
        }
        progress("\(step), measuring \(duration)s")
        return runWrk(url: url, headers: workload.headers, connections: workload.connections, seconds: duration).map {
            var result = $0
            result.cipher = cipher
            return result
        }
    }

    /// One `curl -k -v` GET of `url`: the status and the negotiated protocol and cipher
    /// (nil when curl is missing or got no answer).
    private func probeHTTPS(url: String) -> (Int?, String?) {
        guard onPath("curl"),
              let run = runCapturingOutput("curl", ["-sk", "-v", "-o", "/dev/null", "-w", "status=%{http_code}\n", url], limit: 10)
        else { return (nil, nil) }
        var status: Int?
        var cipher: String?
        for line in run.output.split(separator: "\n") {
            if line.hasPrefix("status=") { status = Int(line.dropFirst(7)) }
            // "* SSL connection using TLSv1.3 / TLS_AES_256_GCM_SHA384 / …"
            if let range = line.firstRange(of: "SSL connection using ") {
                cipher = line[range.upperBound...].split(separator: "/").prefix(2)
                    .map { String($0).trimmingSpaces() }.joined(separator: " ")
            }
        }
        return (status, cipher)
    }

    private func runWrk(url: String, headers: [String], connections: Int, seconds: Int) -> Result<WrkResult, HTTPBenchSkip> {
        let threads = min(wrkThreads, connections)  // wrk refuses fewer connections than threads
        let arguments = ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--latency"] + headers.flatMap { ["-H", $0] } + [url]
        guard let run = runCapturingOutput("wrk", arguments, limit: Double(seconds) + 30) else {
            return .failure(HTTPBenchSkip("could not start wrk"))
        }
        if run.timedOut { return .failure(HTTPBenchSkip("wrk ran past \(seconds + 30) s and was killed")) }
        guard run.exitCode == 0, let result = WrkResult(parsing: run.output) else {
            let last = run.output.split(separator: "\n").last.map { String($0).trimmingSpaces() } ?? "no output"
            return .failure(HTTPBenchSkip("wrk failed (exit \(run.exitCode)): \(last)"))
        }
        return .success(result)
    }

    // MARK: Ratios

    /// The side-by-side ratios, with DESIGN's targets where there is one.
    private func targetRatios(_ summaries: [HTTPBenchRow], lightCounts: [Int]) -> [HTTPBenchRatio] {
        var out: [HTTPBenchRatio] = []
        func find(_ name: String) -> HTTPBenchRow? { summaries.first { $0.name == name && $0.row != nil } }
        func add(_ a: String, _ b: String, _ target: HTTPBenchTarget? = nil) {
            guard let x = find(a), let y = find(b) else { return }
            out.append(HTTPBenchRatio(name: "\(a) / \(b)", value: x.row!.opsPerSecond / y.row!.opsPerSecond,
                                 target: target, hasErrors: x.errorCount > 0 || y.errorCount > 0))
        }
        for count in lightCounts {
            add("chroma /hello c\(count)", "chroma-static /hello c\(count)", .atLeast(0.98))
            add("chroma /file4k c\(count)", "chroma-static /file4k c\(count)")
            add("chroma /hello c\(count)", "c-evhttp /hello c\(count)", .atLeast(1.0))
            add("chroma /hello c\(count)", "nio /hello c\(count)", .atLeast(1.2))
            add("chroma /hello c\(count)", "hummingbird /hello c\(count)")
            add("chroma /hello c\(count)", "nginx /hello c\(count)")
            add("chroma /file4k c\(count)", "c-evhttp /file4k c\(count)")
            add("chroma /file4k c\(count)", "hummingbird /file4k c\(count)")
            add("chroma /file4k c\(count)", "nginx /file4k c\(count)", .atLeast(1.0))
            add("chroma /file4k 304 c\(count)", "nginx /file4k 304 c\(count)")
            add("chroma range 1MiB c\(count)", "nginx range 1MiB c\(count)")
            add("chroma /hello https c\(count)", "nginx /hello https c\(count)", .atLeast(0.8))
        }
        guard heavy > 0, !lightCounts.contains(heavy) else { return out }
        let light = lightCounts[0]
        add("chroma /hello c\(heavy)", "c-evhttp /hello c\(heavy)")
        add("chroma /hello c\(heavy)", "nio /hello c\(heavy)")
        add("chroma /hello c\(heavy)", "hummingbird /hello c\(heavy)")
        add("chroma /hello c\(heavy)", "nginx /hello c\(heavy)")
        for server in HTTPBenchServer.names {
            add("\(server) /hello c\(heavy)", "\(server) /hello c\(light)", server == "chroma" ? .atLeast(0.75) : nil)
        }
        if let x = find("chroma /hello c\(heavy)"), let y = find("nginx /hello c\(heavy)"),
           let p99x = x.row!.p99Microseconds, let p99y = y.row!.p99Microseconds, p99y > 0 {
            out.append(HTTPBenchRatio(name: "chroma /hello c\(heavy) p99 / nginx /hello c\(heavy) p99", value: p99x / p99y,
                                 target: .atMost(1.0), hasErrors: x.errorCount > 0 || y.errorCount > 0))
        }
        return out
    }
}

// MARK: - Pieces

/// A server under test: its row name and the command that starts it on a port (nil when
/// that command could not be prepared).
struct HTTPBenchServer {
    static let names = ["chroma", "chroma-static", "c-evhttp", "nio", "hummingbird", "nginx"]
    let name: String
    let servesFiles: Bool
    /// The command for a port, and for HTTPS the certificate to serve (nil: plain HTTP).
    let command: (UInt16, HTTPBenchCertificate?) -> (String, [String])?
}

/// Why a server or a run was left out.
struct HTTPBenchSkip: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

enum HTTPBenchTarget {
    case atLeast(Double)
    case atMost(Double)

    var text: String {
        switch self {
        case .atLeast(let x): return "≥ " + fixed(x, 2) + "x"
        case .atMost(let x): return "≤ " + fixed(x, 2) + "x"
        }
    }

    func isMet(by value: Double) -> Bool {
        switch self {
        case .atLeast(let x): return value >= x
        case .atMost(let x): return value <= x
        }
    }
}

struct HTTPBenchRatio {
    let name: String
    let value: Double
    let target: HTTPBenchTarget?
    let hasErrors: Bool
}

/// One (server, workload) row: its measured rounds, medians, and errors summed over rounds.
struct HTTPBenchRow {
    let name: String
    let server: String
    let workload: String
    let results: [WrkResult]
    let failures: [String]

    /// Nil when no round produced a measurement.
    var row: Row? {
        guard !results.isEmpty else { return nil }
        var row = Row(name: name, opsPerSecond: median(results.map(\.requestsPerSecond)))
        row.p50Microseconds = median(results.map(\.p50Microseconds))
        row.p99Microseconds = median(results.map(\.p99Microseconds))
        row.errors = errorCount
        return row
    }

    var errorCount: Int { results.reduce(0) { $0 + $1.errorCount } }

    /// "0", or each kind of error with its count, plus failed rounds.
    var errorText: String {
        var parts: [String] = []
        for kind in WrkResult.socketErrorKinds {
            let n = results.reduce(0) { $0 + ($1.socketErrors[kind] ?? 0) }
            if n > 0 { parts.append("\(kind) \(n)") }
        }
        let non2xx = results.reduce(0) { $0 + $1.non2xx }
        if non2xx > 0 { parts.append("non-2xx \(non2xx)") }
        if !failures.isEmpty { parts.append("\(failures.count) of \(failures.count + results.count) runs failed") }
        return parts.isEmpty ? "0" : "!! " + parts.joined(separator: ", ")
    }
}

/// What one `wrk --latency` run printed.
struct WrkResult {
    static let socketErrorKinds = ["connect", "read", "write", "timeout"]
    let requestsPerSecond: Double
    let p50Microseconds: Double
    let p99Microseconds: Double
    /// `Socket errors: connect 0, read 0, write 0, timeout 0` (absent when there were none).
    var socketErrors: [String: Int] = [:]
    /// `Non-2xx or 3xx responses: N`.
    var non2xx = 0
    /// For HTTPS, the protocol and cipher the probe negotiated (`TLSv1.3 TLS_AES_256_GCM_SHA384`).
    var cipher: String?

    var errorCount: Int { socketErrors.values.reduce(0, +) + non2xx }

    /// Nil when the output lacks `Requests/sec:` or the 50% / 99% latency lines.
    init?(parsing output: String) {
        var rate: Double?, p50: Double?, p99: Double?
        for raw in output.split(separator: "\n") {
            let line = String(raw).trimmingSpaces()
            let words = line.split(separator: " ").map(String.init)
            if line.hasPrefix("Requests/sec:"), words.count >= 2 {
                rate = Double(words[1])
            } else if line.hasPrefix("50%"), words.count >= 2 {
                p50 = microseconds(words[1])
            } else if line.hasPrefix("99%"), words.count >= 2 {
                p99 = microseconds(words[1])
            } else if line.hasPrefix("Non-2xx or 3xx responses:"), let last = words.last {
                non2xx = Int(last) ?? 0
            } else if line.hasPrefix("Socket errors:") {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                let fields = words.dropFirst(2).map { $0.hasSuffix(",") ? String($0.dropLast()) : $0 }
                var i = 0
                while i + 1 < fields.count {
                    if let n = Int(fields[i + 1]) { socketErrors[fields[i]] = n }
                    i += 2
                }
            }
        }
        guard let rate, let p50, let p99 else { return nil }
        requestsPerSecond = rate
        p50Microseconds = p50
        p99Microseconds = p99
    }
}

/// wrk's latency text (`512.00us`, `1.50ms`, `2.00s`, `1.00m`) in microseconds.
private func microseconds(_ text: String) -> Double? {
    guard let unitStart = text.firstIndex(where: { !($0.isNumber || $0 == ".") }),
          let value = Double(text[..<unitStart]) else { return nil }
    switch text[unitStart...] {
    case "us": return value
    case "ms": return value * 1e3
    case "s": return value * 1e6
    case "m": return value * 60e6
    case "h": return value * 3600e6
    default: return nil
    }
}

/// A server child: stdin on /dev/null, stdout too unless asked for (`start` does not need
/// the "listening" line: it polls connect() instead, which nginx needs anyway), stderr to
/// a log file.
final class ServerChild {
    let pid: pid_t
    private var reaped = false

    private init(pid: pid_t) { self.pid = pid }

    static func spawn(_ path: String, _ arguments: [String], stdout: ChildStream = .null, stderrTo log: String) -> ServerChild? {
        guard let pid = spawnChild(path, arguments, stdout: stdout, stderr: .file(log)) else { return nil }
        return ServerChild(pid: pid)
    }

    /// Spawns `path` (stderr to `log`) and waits until it accepts on `port`; why not, with
    /// the log's last line, otherwise. The caller stops it.
    static func start(_ path: String, _ arguments: [String], log: String, port: UInt16) -> Result<ServerChild, HTTPBenchSkip> {
        guard let child = spawn(path, arguments, stderrTo: log) else { return .failure(HTTPBenchSkip("could not start \(path)")) }
        if let problem = child.waitUntilAccepting(port: port, timeout: 10) {
            _ = child.stop()
            return .failure(HTTPBenchSkip("\(problem)\(lastLine(of: log).map { ": \($0)" } ?? "")"))
        }
        return .success(child)
    }

    /// Nil once a connect() to 127.0.0.1:`port` succeeds; otherwise why not (the child
    /// exited, or `timeout` seconds passed).
    func waitUntilAccepting(port: UInt16, timeout: Double) -> String? {
        let deadline = nowSeconds() + timeout
        while true {
            if canConnect(port: port) { return nil }
            if let status = exitStatus() { return "exited before listening (\(status))" }
            if nowSeconds() > deadline { return "not accepting on port \(port) after \(Int(timeout)) s" }
            usleep(20_000)
        }
    }

    /// Nil while it runs; once it has exited, how ("exit 1", "signal 11"). Does not wait.
    func exitStatus() -> String? {
        guard !reaped else { return "already stopped" }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        reaped = true
        return describeWaitStatus(status)
    }

    /// SIGTERM, then waits up to 5 s; SIGKILL after that. False when it had to be killed.
    func stop() -> Bool {
        guard !reaped else { return true }
        reaped = true
        kill(pid, SIGTERM)
        let deadline = nowSeconds() + 5
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if nowSeconds() > deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                return false
            }
            usleep(10_000)
        }
        return true
    }
}

private func canConnect(port: UInt16) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return connectLoopback(fd, port: port)
}

private func describeWaitStatus(_ status: Int32) -> String {
    let signal = status & 0x7f
    return signal == 0 ? "exit \((status >> 8) & 0xff)" : "signal \(signal)"
}

/// Runs `path` (looked up on PATH) with stdout and stderr on one pipe and returns what it
/// wrote and its exit code; kills it past `limit` seconds. Nil when it could not start.
private func runCapturingOutput(_ path: String, _ arguments: [String], limit: Double) -> (output: String, exitCode: Int32, timedOut: Bool)? {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { return nil }
    let spawned = spawnChild(path, arguments, stdout: .descriptor(pipeFDs[1]), stderr: .descriptor(pipeFDs[1]),
                             closing: [pipeFDs[0], pipeFDs[1]])
    close(pipeFDs[1])
    defer { close(pipeFDs[0]) }
    guard let pid = spawned else { return nil }
    let deadline = nowSeconds() + limit
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    var timedOut = false
    while true {
        let left = deadline - nowSeconds()
        if left <= 0 {
            timedOut = true
            kill(pid, SIGKILL)
            break
        }
        var poller = pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, Int32(min(left, 1.0) * 1000) + 1)
        if ready < 0 && errno != EINTR { break }
        if ready <= 0 { continue }
        let n = read(pipeFDs[0], &chunk, chunk.count)
        if n <= 0 { break }
        output += chunk[..<n]
    }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (String(decoding: output, as: UTF8.self), exitCode, timedOut)
}

/// Deletes `path` and everything under it (without following symlinks).
func removeTree(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    guard info.st_mode & S_IFMT == S_IFDIR else {
        unlink(path)
        return
    }
    var names: [String] = []
    if let dir = opendir(path) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(dir)
    }
    for name in names { removeTree(path + "/" + name) }
    rmdir(path)
}

func readWholeFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n < 0 { return nil }
        if n == 0 { break }
        bytes += chunk[..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

func writeWholeFile(_ path: String, _ text: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return false }
        written += n
    }
    return true
}

/// The last non-empty line of a (log) file, if any.
func lastLine(of path: String) -> String? {
    readWholeFile(path)?.split(separator: "\n").last.map { String($0).trimmingSpaces() }
}

/// `name` in the directory of the running executable (/proc/self/exe).
func siblingExecutable(_ name: String) -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return name }
    let exe = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = exe.lastIndex(of: "/") else { return name }
    return String(exe[..<slash]) + "/" + name
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it);
/// returns the soft limit now in force.
private func raiseOpenFileLimit() -> Int {
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    var limit = rlimit()
    guard getrlimit(resource, &limit) == 0 else { return 1024 }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(resource, &raised) == 0 { limit = raised }
    }
    return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
}

/// A line on stderr (kept off stdout, which holds only the table or the JSON).
func note(_ text: String) {
    endProgress()
    var line = text + "\n"
    line.withUTF8 { buffer in _ = write(STDERR_FILENO, buffer.baseAddress, buffer.count) }
}
