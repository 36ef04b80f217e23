import ArgumentParser
import Chroma
import Glibc

/// `chroma-bench kv`: `redis-benchmark` against `chroma-kv` and against `redis-server`, with
/// the same flags, the two servers taking turns on each configuration: in memory (Redis's
/// default config, chroma-kv without a directory), then the append-only log with each
/// `appendfsync` mode. Each run starts a fresh server on an empty data directory.
struct KVCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "redis-benchmark against chroma-kv and redis-server, interleaved, in memory and with each appendfsync mode."
    )

    @Option(help: "chroma-kv's loops (Redis runs one thread whatever this says).")
    var loops: Int = Runtime.onlineCPUCount

    @Option(help: "redis-benchmark's tests (-t).")
    var tests: String = "set,get,incr,lpush,lpop,mset"

    @Option(help: "Requests per test (-n).")
    var requests: Int = 1_000_000

    @Option(help: "Key space (-r).")
    var keyspace: Int = 100_000

    @Option(help: "Clients (-c).")
    var clients: Int = 50

    @Option(help: "Pipeline depths (-P), comma-separated.")
    var pipelines: String = "1,16"

    @Option(help: "Configurations, comma-separated: memory, always, everysec, no, and memory-queued (chroma-kv with --inline off: every command a job, even for a shard on the connection's loop; against Redis in memory).")
    var modes: String = "memory,always,everysec,no"

    @Option(help: "Rounds; each runs both servers on every configuration; medians are reported.")
    var rounds: Int = 1

    @Option(help: "chroma-kv to run (default: the one next to this chroma-bench).")
    var kv: String?

    @Option(help: "The Redis server to compare with (`make bench` installs redis-server when missing).")
    var redis: String = "redis-server"

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    func run() throws {
        let depths = pipelines.split(separator: ",").compactMap { Int($0) }
        let configurations = modes.split(separator: ",").map(String.init)
        guard loops >= 1, requests >= 1, keyspace >= 1, clients >= 1, rounds >= 1, !depths.isEmpty, depths.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--loops, --requests, --keyspace, --clients, --rounds and --pipelines must be positive")
        }
        for mode in configurations where !["memory", "always", "everysec", "no", "memory-queued"].contains(mode) {
            throw ValidationError("unknown configuration \(mode); use memory, always, everysec, no, memory-queued")
        }
        let machine = Machine.current()
        var report = Report(scenario: "kv", machine: machine)
        let kvPath = kv ?? siblingExecutable("chroma-kv")
        var missing: [String] = []
        if !onPath("redis-benchmark") { missing.append("redis-benchmark (redis-tools)") }
        if !onPath(redis) && !isExecutable(redis) { missing.append("\(redis) (redis-server)") }
        if !isExecutable(kvPath) { missing.append("chroma-kv at \(kvPath) (swift build -c release --product chroma-kv)") }
        guard missing.isEmpty else {
            report.skip("no kv benchmark: missing \(missing.joined(separator: ", ")); `make bench` installs them", json: json)
            return
        }
        var template = Array("/tmp/chroma-bench-kv-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ValidationError("mkdtemp failed: errno \(errno)") }
        let work = String(cString: made)
        defer { removeTree(work) }

        var plan: [(mode: String, depth: Int, round: Int, server: String)] = []
        for mode in configurations {
            for depth in depths {
                for round in 1...rounds {
                    // Alternate who goes first, so neither always runs on a warmer machine.
                    let order = round % 2 == 1 ? ["chroma-kv", "redis"] : ["redis", "chroma-kv"]
                    for server in order { plan.append((mode, depth, round, server)) }
                }
            }
        }
        var results: [String: [String: [KVResult]]] = [:]  // "server mode P" → test → runs
        var failures: [String] = []
        for (index, step) in plan.enumerated() {
            let label = "\(step.server) \(step.mode) P\(step.depth)"
            progress("[\(index + 1)/\(plan.count)] \(label), round \(step.round)/\(rounds)")
            switch measure(step.server, mode: step.mode, depth: step.depth, kvPath: kvPath, work: work, run: index) {
            case .success(let byTest):
                for (test, result) in byTest { results[label, default: [:]][test, default: []].append(result) }
            case .failure(let failure):
                failures.append("\(label): \(failure.reason)")
            }
        }
        endProgress()

        let testNames = tests.split(separator: ",").map { String($0).uppercased() }
        func summary(_ server: String, _ mode: String, _ depth: Int, _ test: String) -> KVResult? {
            guard let runs = results["\(server) \(mode) P\(depth)"]?.first(where: { $0.key.hasPrefix(test) })?.value, !runs.isEmpty else { return nil }
            return KVResult(requestsPerSecond: median(runs.map(\.requestsPerSecond)), p50: median(runs.map(\.p50)), p99: median(runs.map(\.p99)))
        }
        var lines: [String] = []
        var ratios: [(name: String, value: Double, target: Double?)] = []
        let widths = [9, 9, 4, 7, 11, 9, 9, 11, 9, 9, 7]
        lines.append(zip(["config", "test", "P", "", "chroma k/s", "p50 ms", "p99 ms", "redis k/s", "p50 ms", "p99 ms", "ratio"], widths)
            .map { $0.padded(to: $1) }.joined(separator: " ").trimmingSpaces())
        for mode in configurations {
            for depth in depths {
                for test in testNames {
                    let chroma = summary("chroma-kv", mode, depth, test), peer = summary("redis", mode, depth, test)
                    for (server, result) in [("chroma-kv", chroma), ("redis", peer)] {
                        if let result {
                            report.rows.append(Row(name: "\(server) \(mode) \(test) P\(depth)", opsPerSecond: result.requestsPerSecond,
                                                   p50Microseconds: result.p50 * 1e3, p99Microseconds: result.p99 * 1e3))
                        }
                    }
                    var cells = [mode, test, String(depth), ""]
                    for result in [chroma, peer] {
                        cells += result.map { [fixed($0.requestsPerSecond / 1e3, 1), fixed($0.p50, 3), fixed($0.p99, 3)] } ?? ["-", "-", "-"]
                    }
                    if let chroma, let peer {
                        let value = chroma.requestsPerSecond / peer.requestsPerSecond
                        cells.append(fixed(value, 2) + "x")
                        let targeted = (mode == "memory" && (test == "GET" || test == "SET")) || (mode == "always" && test == "SET")
                        ratios.append(("kv \(mode) \(test) P\(depth)", value, targeted ? 1.0 : nil))
                    }
                    lines.append(zip(cells, widths).map { $0.padded(to: $1) }.joined(separator: " ").trimmingSpaces())
                }
            }
        }
        report.ratios = ratios.map { ($0.name, $0.value) }
        if json {
            for failure in failures { note(failure) }
            print(report.json())
            return
        }
        print("chroma-bench kv   (\(machine.nproc) cores, \(machine.cpu))")
        print("redis-benchmark -t \(tests) -n \(requests) -r \(keyspace) -c \(clients) -P {\(pipelines)}, over loopback, on the same cores as the servers;")
        print("chroma-kv with \(loops) loop(s); redis-server \(redisVersion()) (one thread); memory: no persistence; always/everysec/no: the append-only log with that appendfsync;")
        print(rounds > 1 ? "median of \(rounds) rounds, servers interleaved" : "1 round, servers interleaved")
        for line in lines { print(line) }
        let targeted = ratios.filter { $0.target != nil }
        if !targeted.isEmpty {
            print("")
            for ratio in targeted {
                let met = ratio.value >= ratio.target! ? "met" : "NOT met"
                print("\(ratio.name.padded(to: 22)) \((fixed(ratio.value, 2) + "x").padded(to: 7)) target >= \(fixed(ratio.target!, 1))x  \(met)")
            }
        }
        for failure in failures { print(failure) }
    }

    /// One server on one configuration: start it fresh, run redis-benchmark, stop it.
    private func measure(_ server: String, mode: String, depth: Int, kvPath: String, work: String, run: Int) -> Result<[String: KVResult], HTTPBenchSkip> {
        let port = freePort()
        let data = work + "/run-\(run)"
        guard mkdir(data, 0o755) == 0 else { return .failure(HTTPBenchSkip("mkdir \(data) failed: errno \(errno)")) }
        defer { removeTree(data) }
        var path = kvPath
        var arguments = ["--port", String(port), "--loops", String(loops)]
        if server == "redis" {
            path = redis
            arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--dir", data, "--daemonize", "no"]
            arguments += mode.hasPrefix("memory") ? ["--appendonly", "no"] : ["--appendonly", "yes", "--appendfsync", mode]
        } else if mode == "memory-queued" {
            arguments += ["--inline", "off"]
        } else if mode != "memory" {
            arguments += ["--dir", data, "--appendfsync", mode]
        }
        let log = work + "/\(server)-\(run).log"
        let child: ServerChild
        switch ServerChild.start(path, arguments, log: log, port: port) {
        case .success(let started): child = started
        case .failure(let skip): return .failure(skip)
        }
        defer {
            if !child.stop() { note("\(server) did not exit within 5 s of SIGTERM; killed") }
        }
        let flags = ["-h", "127.0.0.1", "-p", String(port), "-t", tests, "-n", String(requests), "-r", String(keyspace),
                     "-c", String(clients), "-P", String(depth), "--csv"]
        guard let (status, output) = runCapturing("redis-benchmark", flags), status == 0 else {
            return .failure(HTTPBenchSkip("redis-benchmark failed"))
        }
        var byTest: [String: KVResult] = [:]
        for line in output.split(separator: "\n") {
            // "SET","93896.71","0.287","0.080","0.279","0.359","0.535","2.071"
            let fields = line.split(separator: ",").map { $0.replacing("\"", with: "") }
            guard fields.count >= 7, let rate = Double(fields[1]), let p50 = Double(fields[4]), let p99 = Double(fields[6]) else { continue }
            byTest[String(fields[0])] = KVResult(requestsPerSecond: rate, p50: p50, p99: p99)
        }
        guard !byTest.isEmpty else { return .failure(HTTPBenchSkip("no results in redis-benchmark's output")) }
        return .success(byTest)
    }

    private func redisVersion() -> String {
        guard let (_, output) = runCapturing(redis, ["--version"]),
              let word = output.split(separator: " ").first(where: { $0.hasPrefix("v=") }) else { return "(version unknown)" }
        return String(word.dropFirst(2))
    }
}

/// One redis-benchmark test's figures: requests per second, p50 and p99 in milliseconds.
struct KVResult {
    let requestsPerSecond: Double
    let p50: Double
    let p99: Double
}
