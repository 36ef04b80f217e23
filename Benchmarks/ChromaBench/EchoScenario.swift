import ArgumentParser
import Chroma
import Glibc
import Histogram

/// `chroma-bench echo`: the line echo server under a built-in load client on loopback:
/// N connections each doing ping-pong (send a line, wait for its echo, send the next).
/// Prints requests per second and p50/p99 round-trip latency (hdrhistogram).
struct EchoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo",
        abstract: "Line echo over loopback: N ping-pong connections against Chroma's echo server."
    )

    @Option(help: "Loops of the echo server.")
    var loops: Int = Runtime.onlineCPUCount

    @Option(help: "Loops of the load client (its own runtime, in this process).")
    var clientLoops: Int = Runtime.onlineCPUCount

    @Option(help: "Connections, each doing ping-pong.")
    var connections: Int = 64

    @Option(help: "Bytes per line (before the newline).")
    var lineBytes: Int = 32

    @Option(help: "Seconds per measurement.")
    var duration: Double = 2.0

    @Option(help: "Rounds; medians are reported.")
    var rounds: Int = 3

    @Option(help: "The raw-C libevent echo server (built by `make bench`); skipped when missing.")
    var cPeer: String = ".build/peers/c-echo"

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @OptionGroup var plot: PlotOption

    func run() throws {
        guard loops >= 1, clientLoops >= 1, connections >= 1, lineBytes >= 1, duration > 0, rounds >= 1 else {
            throw ValidationError("every option must be positive")
        }
        let havePeer = isExecutable(cPeer)
        var samples: [Sample] = [], oneAcceptor: [Sample] = [], peerSamples: [Sample] = []
        for round in 1...rounds {
            progress("round \(round)/\(rounds): chroma, \(connections) connections")
            samples.append(try measure(acceptors: .everyLoop))
            if loops > 1 {
                progress("round \(round)/\(rounds): chroma, one acceptor, \(connections) connections")
                oneAcceptor.append(try measure(acceptors: .oneLoop))
            }
            if havePeer {
                progress("round \(round)/\(rounds): raw C libevent, \(connections) connections")
                let port = freePort()
                if let server = startServer(cPeer, [String(port), String(loops)]) {
                    defer { server.stop() }
                    peerSamples.append(try load(port: port))
                }
            }
        }
        endProgress()
        let machine = Machine.current()
        var report = Report(scenario: "echo", machine: machine)
        let row = Sample.middle(of: samples).row("chroma echo c\(connections)")
        report.rows.append(row)
        if !oneAcceptor.isEmpty {
            let single = Sample.middle(of: oneAcceptor).row("chroma echo c\(connections) one acceptor")
            report.rows.append(single)
            report.ratios.append(("\(single.name) / \(row.name)", single.opsPerSecond / row.opsPerSecond))
        }
        if !peerSamples.isEmpty {
            let peer = Sample.middle(of: peerSamples).row("c-libevent echo c\(connections)")
            report.rows.append(peer)
            report.ratios.append(("\(row.name) / \(peer.name)", row.opsPerSecond / peer.opsPerSecond))
        }
        try plot.write(report)
        if json {
            print(report.json())
            return
        }
        print("chroma-bench echo   (\(machine.nproc) cores, \(machine.cpu))")
        print("server \(loops) loop(s), client \(clientLoops) loop(s) in the same process, \(connections) connections ping-pong,")
        print("\(lineBytes)-byte lines; \(duration)s per measurement, median of \(rounds) rounds")
        let widths = [34, 12, 9, 9]
        print(zip(["system", "k req/s", "p50 us", "p99 us"], widths).map { $0.padded(to: $1) }.joined(separator: " "))
        for row in report.rows {
            print(zip([row.name, fixed(row.opsPerSecond / 1e3, 1), fixed(row.p50Microseconds ?? .nan, 1), fixed(row.p99Microseconds ?? .nan, 1)], widths)
                .map { $0.padded(to: $1) }.joined(separator: " "))
        }
        for ratio in report.ratios { print("\(ratio.name): \(fixed(ratio.value, 2))x") }
        if !havePeer { print("raw-C peer skipped (build it with `make peers`, or see \(cPeer))") }
    }

    /// Chroma's echo server, in this process, under the load client.
    func measure(acceptors: Acceptors) throws -> Sample {
        let server = try Runtime(loops: loops)
        try server.start()
        defer { _ = try? server.shutdown() }
        let listener = try server.listen(host: "127.0.0.1", port: 0, acceptors: acceptors) { connection in
            connection.onLines { line in connection.write(line + [10]) }
        }
        return try load(port: listener.port)
    }

    /// The load client (a Chroma runtime of `clientLoops` loops) against `port`.
    func load(port: UInt16) throws -> Sample {
        let client = try Runtime(loops: clientLoops)
        try client.start()
        defer { _ = try? client.shutdown() }
        let line = [UInt8](repeating: UInt8(ascii: "x"), count: lineBytes) + [10]
        let run = EchoRun(connections: connections)
        let start = nowNanoseconds()
        let deadline = start + UInt64(duration * 1e9)
        for i in 0..<connections {
            try client.connect(host: "127.0.0.1", port: port, on: client.makeColor()) { result in
                guard case .success(let connection) = result else { fatalError("echo bench: connect failed: \(result)") }
                run.sent(i, at: nowNanoseconds())
                connection.onLines { _ in
                    let now = nowNanoseconds()
                    run.record(i, nanoseconds: now - run.sentAt(i))
                    if now < deadline {
                        run.sent(i, at: now)
                        connection.write(line)
                    } else {
                        connection.close()
                        run.finished(i, at: now)
                    }
                }
                connection.write(line)
            }
        }
        run.done.wait()
        let (histogram, count, last) = run.merged()
        let elapsed = Double(last - start) / 1e9
        return Sample(opsPerSecond: Double(count) / elapsed, p50: Double(histogram.valueAtPercentile(50)) / 1e3,
                      p99: Double(histogram.valueAtPercentile(99)) / 1e3)
    }
}

/// One echo measurement's per-connection state. Connection `i`'s slots are touched only by
/// its callbacks (one color, never overlapping), and by the main thread after `done`.
final class EchoRun: @unchecked Sendable {
    // Safe to share: see above; `remaining` is atomic, `lastFinish` is guarded by `lock`.
    private var histograms: [Histogram<UInt64>]
    private var counts: [Int]
    private var sentTimes: [UInt64]
    private let remaining: PaddedCounter
    private let lock = PThreadLock()
    private var lastFinish: UInt64 = 0
    let done = Semaphore()
    private let total: Int

    init(connections: Int) {
        histograms = (0..<connections).map { _ in Histogram<UInt64>(highestTrackableValue: 60_000_000_000) }
        counts = Array(repeating: 0, count: connections)
        sentTimes = Array(repeating: 0, count: connections)
        remaining = PaddedCounter()
        total = connections
    }

    func sent(_ i: Int, at time: UInt64) { sentTimes[i] = time }
    func sentAt(_ i: Int) -> UInt64 { sentTimes[i] }

    func record(_ i: Int, nanoseconds: UInt64) {
        _ = histograms[i].record(nanoseconds)
        counts[i] += 1
    }

    func finished(_ i: Int, at time: UInt64) {
        lock.lock()
        lastFinish = max(lastFinish, time)
        lock.unlock()
        if remaining.value.add(1, ordering: .acquiringAndReleasing).newValue == UInt64(total) { done.signal() }
    }

    /// After `done`: all latencies, the number of round trips, and when the last finished.
    func merged() -> (Histogram<UInt64>, Int, UInt64) {
        var all = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
        for h in histograms { all.add(h) }
        lock.lock()
        defer { lock.unlock() }
        return (all, counts.reduce(0, +), lastFinish)
    }
}
