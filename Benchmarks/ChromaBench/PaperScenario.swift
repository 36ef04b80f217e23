import ArgumentParser
import Chroma
import Glibc

/// `chroma-bench paper`: the seed paper's SFS-like multiprocessor experiment, as speedup over
/// one loop for 1…N loops, static placement and stealing, beside libasync-smp's figure.
/// Each request (a line over TCP, ping-pong on `connections` connections) costs about
/// `workMicroseconds` of hashing on a fresh color of its own, then the answer is written on
/// the connection's color.
struct PaperCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paper",
        abstract: "libasync-smp's SFS-like experiment: speedup over 1 loop, static and stealing."
    )

    @Option(help: "Loop counts of the server, comma-separated (the first is the baseline; default 1 up to the cores).")
    var loops: String?

    @Option(help: "Connections of the load client (its own one-loop runtime, in this process), each ping-pong.")
    var connections: Int = 64

    @Option(help: "Microseconds of hashing per request.")
    var workMicroseconds: Double = 50

    @Option(help: "Seconds per measurement.")
    var duration: Double = 2.0

    @Option(help: "Rounds; each round runs every loop count, static then stealing; medians are reported.")
    var rounds: Int = 3

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @OptionGroup var plot: PlotOption

    func run() throws {
        let counts = loops.map { $0.split(separator: ",").compactMap { Int($0) } } ?? Array(1...max(1, Runtime.onlineCPUCount))
        guard !counts.isEmpty, counts.allSatisfy({ $0 >= 1 }), connections >= 1, workMicroseconds > 0, duration > 0, rounds >= 1 else {
            throw ValidationError("--loops needs positive counts; every other option must be positive")
        }
        let machine = Machine.current()
        let work = HashWork.calibrated()
        let hashRounds = work.rounds(forMicroseconds: workMicroseconds)
        let client = try EchoCommand.parse(["--client-loops", "1", "--connections", String(connections),
                                            "--duration", String(duration), "--line-bytes", "16"])
        var samples: [String: [Double]] = [:]
        for round in 1...rounds {
            for count in counts {
                for stealing in [Stealing.off, .on] {
                    let mode = stealing == .on ? "stealing" : "static"
                    progress("round \(round)/\(rounds): \(count) loop(s), \(mode)")
                    let sample = try measureSFS(loops: count, stealing: stealing, hashRounds: hashRounds, client: client)
                    samples["\(mode) \(count)", default: []].append(sample.opsPerSecond)
                }
            }
        }
        endProgress()
        var report = Report(scenario: "paper", machine: machine)
        var table: [[String]] = []
        let base = counts[0]
        for count in counts {
            var cells = [String(count)]
            for mode in ["static", "stealing"] {
                let ops = median(samples["\(mode) \(count)"]!)
                let speedup = ops / median(samples["\(mode) \(base)"]!)
                report.rows.append(Row(name: "sfs \(mode) \(count)", opsPerSecond: ops))
                if count != base { report.ratios.append(("sfs \(mode) \(count) / sfs \(mode) \(base)", speedup)) }
                cells += [fixed(ops / 1e3, 1), fixed(speedup, 2)]
            }
            cells.append(fixed(0.85 * Double(count) / Double(base), 2))
            cells.append(count == 4 && base == 1 ? "2.5 (SFS, 4 CPUs)" : "-")
            table.append(cells)
        }
        try plot.write(report)
        if json {
            print(report.json())
            return
        }
        print("chroma-bench paper   (\(machine.nproc) cores, \(machine.cpu))")
        print("SFS-like: \(connections) ping-pong connections, ~\(fixed(workMicroseconds, 0)) us of hashing per request on a fresh color,")
        print("answer on the connection's color; client: one loop in this process; \(duration)s per measurement, median of \(rounds) rounds")
        let widths = [6, 13, 9, 15, 11, 14, 18]
        let header = ["loops", "static k/s", "speedup", "stealing k/s", "speedup", "target 0.85n", "libasync-smp"]
        print(zip(header, widths).map { $0.padded(to: $1) }.joined(separator: " "))
        for cells in table { print(zip(cells, widths).map { $0.padded(to: $1) }.joined(separator: " ")) }
        print("libasync-smp (Zeldovich et al., 2003): SFS 2.5x and its web server 1.5x on 4 CPUs")
    }
}

/// One SFS-like measurement: a server runtime of `loops` loops under `client`'s load.
func measureSFS(loops: Int, stealing: Stealing, hashRounds: Int, client: EchoCommand) throws -> Sample {
    let server = try Runtime(loops: loops, stealing: stealing)
    try server.start()
    defer { _ = try? server.shutdown() }
    let listener = try server.listen(host: "127.0.0.1", port: 0) { connection in
        connection.onLines { line in
            // The request's own color: its work may run on any loop, in parallel with others.
            try? server.execute(on: server.makeColor()) {
                blackHole(HashWork.hash(rounds: hashRounds, seed: UInt64(line.count)))
                connection.write(line + [10])
            }
        }
    }
    return try client.load(port: listener.port)
}
