import ArgumentParser
import Chroma
import Glibc
import Synchronization
import SystemPackage

/// `chroma-bench disk`: random 4 KiB preads from a page-cached file at a fixed concurrency,
/// through the blocking pool, beside the synchronous single-thread pread loop (the limit
/// for one core) and Node's fs.read (libuv's pool) when `node` is installed.
struct DiskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk",
        abstract: "Random 4 KiB preads through the blocking pool vs a synchronous pread loop and Node's fs.read."
    )

    @Option(help: "Size of the test file in MiB (created, then read once to be page-cached).")
    var fileMiB: Int = 256

    @Option(help: "Path of the test file.")
    var file: String = "/tmp/chroma-bench-disk.bin"

    @Option(help: "Reads in flight at once.")
    var concurrency: Int = 64

    @Option(help: "Loops of the Chroma runtime.")
    var loops: Int = 1

    @Option(help: "Blocking-pool workers (default: the pool's default, max(2, cores)).")
    var workers: Int?

    @Option(help: "Seconds per measurement.")
    var duration: Double = 2.0

    @Option(help: "Rounds; each runs sync, Chroma and Node in turn; medians are reported.")
    var rounds: Int = 3

    @Option(help: "The Node peer script; skipped when it or `node` is missing.")
    var nodePeer: String = "Benchmarks/peers/node/disk.js"

    @Option(help: "Systems to measure, comma-separated: chroma, sync, node (the ratios need sync).")
    var systems: String = "chroma,sync,node"

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    func run() throws {
        guard fileMiB >= 1, concurrency >= 1, loops >= 1, duration > 0, rounds >= 1 else {
            throw ValidationError("--file-mib, --concurrency, --loops, --duration and --rounds must be positive")
        }
        let size = fileMiB << 20
        progress("preparing \(file) (\(fileMiB) MiB)")
        try prepareFile(path: file, size: size)
        let chosen = Set(systems.split(separator: ",").map(String.init))
        guard chosen.isSubset(of: ["chroma", "sync", "node"]), !chosen.isEmpty else {
            throw ValidationError("--systems takes chroma, sync and node")
        }
        let haveNode = chosen.contains("node") && onPath("node") && access(nodePeer, R_OK) == 0
        var sync: [Sample] = [], chroma: [Sample] = [], node: [Sample] = []
        for round in 1...rounds {
            if chosen.contains("sync") {
                progress("round \(round)/\(rounds): synchronous pread loop")
                sync.append(try measureSync(path: file, size: size, seconds: duration))
            }
            if chosen.contains("chroma") {
                progress("round \(round)/\(rounds): chroma")
                chroma.append(try measureChroma(path: file, size: size, seconds: duration))
            }
            if haveNode {
                progress("round \(round)/\(rounds): node fs.read")
                if let fields = runPeerFields("node", [nodePeer, file, String(concurrency), String(duration)]) {
                    node.append(Sample(opsPerSecond: fields["ops_per_s"]!, p50: fields["p50_us"] ?? .nan, p99: fields["p99_us"] ?? .nan))
                }
            }
        }
        endProgress()
        let machine = Machine.current()
        var report = Report(scenario: "disk", machine: machine)
        let syncRow = sync.isEmpty ? nil : Sample.middle(of: sync).row("sync pread 1 thread")
        let chromaRow = chroma.isEmpty ? nil : Sample.middle(of: chroma).row("chroma pool c\(concurrency)")
        let nodeRow = node.isEmpty ? nil : Sample.middle(of: node).row("node fs.read c\(concurrency)")
        report.rows = [chromaRow, syncRow, nodeRow].compactMap { $0 }
        if let chromaRow, let syncRow {
            report.ratios.append(("\(chromaRow.name) / \(syncRow.name)", chromaRow.opsPerSecond / syncRow.opsPerSecond))
        }
        if let chromaRow, let nodeRow {
            report.ratios.append(("\(chromaRow.name) / \(nodeRow.name)", chromaRow.opsPerSecond / nodeRow.opsPerSecond))
        }
        if let nodeRow, let syncRow {
            report.ratios.append(("\(nodeRow.name) / \(syncRow.name)", nodeRow.opsPerSecond / syncRow.opsPerSecond))
        }
        if json {
            print(report.json())
            return
        }
        let workerText = workers.map(String.init) ?? "default \(BlockingPool.Configuration().workers)"
        print("chroma-bench disk   (\(machine.nproc) cores, \(machine.cpu))")
        print("random 4 KiB preads of a page-cached \(fileMiB) MiB file; concurrency \(concurrency); \(loops) loop(s), pool workers \(workerText)")
        print("duration \(duration)s per measurement, median of \(rounds) rounds")
        let header = ["system", "k ops/s", "p50 us", "p99 us", "vs sync"]
        let widths = [24, 9, 8, 8, 8]
        print(zip(header, widths).map { $0.padded(to: $1) }.joined(separator: " "))
        for row in report.rows {
            let cells = [row.name, fixed(row.opsPerSecond / 1e3, 0), row.p50Microseconds.map { fixed($0, 1) } ?? "-",
                         row.p99Microseconds.map { fixed($0, 1) } ?? "-", syncRow.map { fixed(row.opsPerSecond / $0.opsPerSecond, 2) } ?? "-"]
            print(zip(cells, widths).map { $0.padded(to: $1) }.joined(separator: " "))
        }
        if let chromaRow, let nodeRow {
            print("chroma / node: \(fixed(chromaRow.opsPerSecond / nodeRow.opsPerSecond, 2))x")
        } else if chosen.contains("node") && nodeRow == nil {
            print("node peer skipped (needs `node` on PATH and \(nodePeer))")
        }
    }

    // MARK: Measurements

    /// The synchronous limit: one thread, one pread after another. Times one read in 16 for
    /// the latency columns, so the timing barely slows the loop.
    func measureSync(path: String, size: Int, seconds: Double) throws -> Sample {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ValidationError("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { buffer.deallocate() }
        let blocks = UInt64(size / 4096)
        var rng = Xorshift(seed: 0x9E37_79B9_7F4A_7C15)
        var latencies: [UInt32] = []
        latencies.reserveCapacity(1 << 20)
        var ops = 0
        let start = nowNanoseconds()
        let deadline = start + UInt64(seconds * 1e9)
        var now = start
        while now < deadline {
            for i in 0..<64 {
                let offset = off_t((rng.next() % blocks) * 4096)
                if i & 15 == 0 {
                    let t0 = nowNanoseconds()
                    _ = pread(fd, buffer, 4096, offset)
                    latencies.append(UInt32(clamping: nowNanoseconds() - t0))
                } else {
                    _ = pread(fd, buffer, 4096, offset)
                }
            }
            ops += 64
            now = nowNanoseconds()
        }
        return Sample(opsPerSecond: Double(ops) / (Double(now - start) / 1e9), latencies: &latencies)
    }

    /// Chroma: `concurrency` chains, each on its own color, each completion issuing the
    /// chain's next read at a random offset.
    func measureChroma(path: String, size: Int, seconds: Double) throws -> Sample {
        var pool = BlockingPool.Configuration()
        if let workers { pool = BlockingPool.Configuration(workers: workers) }
        let runtime = try Runtime(loops: loops, pool: pool)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        let run = DiskRun(runtime: runtime, fd: fd, blocks: UInt64(size / 4096), chains: concurrency,
                          deadline: nowNanoseconds() + UInt64(seconds * 1e9))
        let start = nowNanoseconds()
        for chain in 0..<concurrency { try run.issue(chain) }
        run.done.wait()
        let elapsed = Double(run.lastCompletion.load(ordering: .relaxed) - start) / 1e9
        var latencies = run.allLatencies()
        return Sample(opsPerSecond: Double(latencies.count) / elapsed, latencies: &latencies)
    }

    func prepareFile(path: String, size: Int) throws {
        var st = stat()
        if stat(path, &st) != 0 || Int(st.st_size) != size {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ValidationError("create \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            for i in chunk.indices { chunk[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 9) }
            for _ in 0..<(size >> 20) {
                guard write(fd, chunk, chunk.count) == chunk.count else {
                    throw ValidationError("write \(path): \(String(cString: strerror(errno)))")
                }
            }
        }
        // Read it once so every later read is served from the page cache.
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ValidationError("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while read(fd, &chunk, chunk.count) > 0 {}
    }
}

/// The state of one Chroma disk measurement. Chain `i` runs on color `i`: its slot in
/// `rngs`, `issued` and `latencies` is touched only by that color's callbacks (and by the
/// main thread before the first read and after `done`), so colors need no lock.
final class DiskRun: @unchecked Sendable {
    // Safe to share: see above; `remaining` and `lastCompletion` are atomic.
    let runtime: Runtime
    let fd: FileDescriptor
    let blocks: UInt64
    let deadline: UInt64
    @exclusivity(unchecked) private var rngs: [Xorshift]
    @exclusivity(unchecked) private var issued: [UInt64]
    @exclusivity(unchecked) private var latencies: [[UInt32]]
    let remaining: Atomic<Int>
    let lastCompletion = Atomic<UInt64>(0)
    let done = Semaphore()

    init(runtime: Runtime, fd: FileDescriptor, blocks: UInt64, chains: Int, deadline: UInt64) {
        self.runtime = runtime
        self.fd = fd
        self.blocks = blocks
        self.deadline = deadline
        rngs = (0..<chains).map { Xorshift(seed: UInt64($0) &* 0x2545_F491_4F6C_DD1D &+ 1) }
        issued = Array(repeating: 0, count: chains)
        latencies = (0..<chains).map { _ in
            var a: [UInt32] = []
            a.reserveCapacity(1 << 16)
            return a
        }
        remaining = Atomic(chains)
    }

    func issue(_ chain: Int) throws {
        let offset = Int64((rngs[chain].next() % blocks) * 4096)
        issued[chain] = nowNanoseconds()
        try runtime.files.read(from: fd, at: offset, count: 4096, on: Color(UInt64(chain))) { [self] result in
            let now = nowNanoseconds()
            guard case .success(let bytes) = result, bytes.count == 4096 else { fatalError("disk bench read failed: \(result)") }
            latencies[chain].append(UInt32(clamping: now - issued[chain]))
            if now < deadline {
                try! issue(chain)
            } else {
                lastCompletion.max(now, ordering: .relaxed)
                if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { done.signal() }
            }
        }
    }

    /// After `done`: every chain's latencies.
    func allLatencies() -> [UInt32] { latencies.flatMap { $0 } }
}

/// A measurement: throughput and latency percentiles.
struct Sample {
    var opsPerSecond: Double
    var p50: Double
    var p99: Double

    init(opsPerSecond: Double, p50: Double, p99: Double) {
        self.opsPerSecond = opsPerSecond
        self.p50 = p50
        self.p99 = p99
    }

    /// Percentiles from latencies in nanoseconds (sorted in place).
    init(opsPerSecond: Double, latencies: inout [UInt32]) {
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return .nan }
            return Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]) / 1e3
        }
        self.init(opsPerSecond: opsPerSecond, p50: percentile(0.50), p99: percentile(0.99))
    }

    /// The median of each field across rounds.
    static func middle(of samples: [Sample]) -> Sample {
        Sample(opsPerSecond: median(samples.map(\.opsPerSecond)), p50: median(samples.map(\.p50)), p99: median(samples.map(\.p99)))
    }

    func row(_ name: String) -> Row {
        Row(name: name, opsPerSecond: opsPerSecond, p50Microseconds: p50.isNaN ? nil : p50, p99Microseconds: p99.isNaN ? nil : p99)
    }
}

/// xorshift64*: a fast, good-enough random stream for offsets.
struct Xorshift {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 1 : seed }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
