import Glibc
import Synchronization

/// Set once when the load must end. Client threads check it between exchanges, never in
/// the middle of one, so every request they sent is answered (or counted lost) first.
final class SoakStop: Sendable {
    private let flag = Atomic<Bool>(false)

    var isSet: Bool { flag.load(ordering: .acquiring) }

    func set() { flag.store(true, ordering: .releasing) }

    /// Sleeps `seconds` (the clients' pacing), in slices of at most 100 ms, returning
    /// early once set.
    func pause(_ seconds: Double) {
        let end = nowSeconds() + seconds
        while !isSet {
            let left = end - nowSeconds()
            if left <= 0 { return }
            sleepSeconds(min(left, 0.1))
        }
    }
}

/// The mixed load on the three servers, one plain thread per client, each pacing itself
/// (the soak looks for leaks under variety, not for throughput; two cores serve the
/// clients and all three servers): two HTTP keep-alive clients, one of short
/// connections, one of malformed requests and resets, one of slowloris trickles, one echo
/// client and one kv client, the last two with their own resets and provoked closes.
final class SoakLoad {
    /// Seconds between one client's batches (or connections, or provocations).
    static let keepAlivePace = 0.010
    static let shortPace = 0.020
    static let abusePace = 0.100
    static let echoPace = 0.005
    static let kvPace = 0.005
    /// Trickles open at once.
    static let slowlorisConnections = 3
    /// The number of client threads, for the summary.
    static let threads = 7

    let stop = SoakStop()
    private var running: [BenchThread] = []

    /// Starts every client against `servers`; each counts what it sees in `ledger`.
    init(servers: [SoakServer], files: SoakFiles, ledger: SoakLedger) {
        func port(_ target: SoakTarget) -> UInt16 { servers.first { $0.target == target }!.port }
        let http = port(.http), echo = port(.echo), kv = port(.kv)
        let stop = self.stop
        let seed = UInt64(UInt(bitPattern: Int(nowSeconds() * 1e6)))
        func random(_ n: UInt64) -> SoakRandom { SoakRandom(seed: seed &+ n &* 0x1000_0001) }
        for n in 0..<2 {
            var client = SoakHTTPClient(port: http, files: files, ledger: ledger, stop: stop, random: random(UInt64(n)))
            running.append(BenchThread { client.runKeepAlive(pace: Self.keepAlivePace) })
        }
        var short = SoakHTTPClient(port: http, files: files, ledger: ledger, stop: stop, random: random(2))
        running.append(BenchThread { short.runShort(pace: Self.shortPace) })
        var abuse = SoakHTTPAbuse(port: http, files: files, ledger: ledger, stop: stop, random: random(3))
        running.append(BenchThread { abuse.runMalformedAndResets(pace: Self.abusePace) })
        var trickles = SoakHTTPAbuse(port: http, files: files, ledger: ledger, stop: stop, random: random(4))
        running.append(BenchThread { trickles.runSlowloris(connections: Self.slowlorisConnections) })
        var echoClient = SoakEchoClient(port: echo, ledger: ledger, stop: stop, random: random(5))
        running.append(BenchThread { echoClient.run(pace: Self.echoPace) })
        var kvClient = SoakKVClient(port: kv, ledger: ledger, stop: stop, random: random(6))
        running.append(BenchThread { kvClient.run(pace: Self.kvPace) })
        precondition(running.count == Self.threads)
    }

    /// Stops the clients and waits for them: each finishes the exchange it is in (at most
    /// `SoakSocket.timeout` per call) and closes its connections.
    func finish() {
        stop.set()
        for thread in running { thread.join() }
        running.removeAll()
    }
}
