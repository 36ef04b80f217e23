import ArgumentParser
import CChroma
@_spi(CachedReads) import Chroma
import Glibc
import Synchronization
import SystemPackage

/// `chroma-bench disk`: random 4 KiB preads (`--read-kib`) from a page-cached file at a fixed concurrency,
/// through `runtime.files` with reads the page cache answers done on the loop (1 loop and
/// `--loops` loops), the same through a reused `FileReader` (no allocation per read), the
/// same with that path off (every read a pool job), the synchronous
/// pread loop on 1 thread and on `--loops` threads (the limit of one core and of all of
/// them), Node's fs.read (libuv's pool) when `node` is installed, and a cold row: the
/// file's pages dropped before each measurement, so reads really wait for the device.
/// Every round runs each row once, in turn.
struct DiskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk",
        abstract: "Random preads (4 KiB by default): on the loop from the page cache, through the pool, synchronous, Node, and cold."
    )

    @Option(help: "Size of the test file in MiB (created, then read once to be page-cached).")
    var fileMiB: Int = 256

    @Option(help: "Path of the test file.")
    var file: String = "/tmp/chroma-bench-disk.bin"

    @Option(help: "Bytes per read, in KiB.")
    var readKib: Int = 4

    @Option(help: "Reads in flight at once.")
    var concurrency: Int = 64

    @Option(help: "Loops of the Chroma runtime in the multi-loop rows, and threads of the multi-thread sync row.")
    var loops: Int = 2

    @Option(help: "Blocking-pool workers (default: the pool's default, max(2, cores)).")
    var workers: Int?

    @Option(help: "The largest read done on the loop, in bytes (default: the pool's default).")
    var cachedMaxBytes: Int?

    @Option(help: "Bytes each loop may read on the loop per pass (default: the pool's default).")
    var cachedBytesPerPass: Int?

    @Option(help: "Seconds per measurement.")
    var duration: Double = 2.0

    @Option(help: "Rounds; each runs every row in turn; medians are reported.")
    var rounds: Int = 3

    @Option(help: "The Node peer script; skipped when it or `node` is missing.")
    var nodePeer: String = "Benchmarks/peers/node/disk.js"

    @Option(help: "Rows to measure, comma-separated: cached, reader, pool, sync, node, cold (the ratios need sync).")
    var systems: String = "cached,reader,pool,sync,node,cold"

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @OptionGroup var plot: PlotOption

    /// One row: its name and how to measure it once.
    private struct Measured {
        let name: String
        let measure: () throws -> Sample?
        var samples: [Sample] = []
        var hitRates: [Double] = []
    }

    func run() throws {
        guard fileMiB >= 1, readKib >= 1, readKib << 10 <= fileMiB << 20, concurrency >= 1, loops >= 1, duration > 0, rounds >= 1 else {
            throw ValidationError("--file-mib, --read-kib, --concurrency, --loops, --duration and --rounds must be positive, the read no bigger than the file")
        }
        let size = fileMiB << 20
        progress("preparing \(file) (\(fileMiB) MiB)")
        try prepareFile(path: file, size: size)
        let chosen = Set(systems.split(separator: ",").map(String.init))
        guard chosen.isSubset(of: ["cached", "reader", "pool", "sync", "node", "cold"]), !chosen.isEmpty else {
            throw ValidationError("--systems takes cached, reader, pool, sync, node and cold")
        }
        let haveNode = chosen.contains("node") && onPath("node") && access(nodePeer, R_OK) == 0
        let loopCounts = loops > 1 ? [1, loops] : [1]
        var rows: [Measured] = []
        func loopsName(_ n: Int) -> String { n == 1 ? "1 loop" : "\(n) loops" }
        if chosen.contains("cached") {
            for n in loopCounts {
                rows.append(Measured(name: "chroma cached c\(concurrency), \(loopsName(n))") {
                    try measureChroma(path: file, size: size, loops: n, cached: true, cold: false, seconds: duration)
                })
            }
        }
        if chosen.contains("reader") {
            for n in loopCounts {
                rows.append(Measured(name: "chroma reader c\(concurrency), \(loopsName(n))") {
                    try measureChroma(path: file, size: size, loops: n, cached: true, cold: false, reusingReaders: true, seconds: duration)
                })
            }
        }
        if chosen.contains("pool") {
            for n in loopCounts {
                rows.append(Measured(name: "chroma pool c\(concurrency), \(loopsName(n))") {
                    try measureChroma(path: file, size: size, loops: n, cached: false, cold: false, seconds: duration)
                })
            }
        }
        if chosen.contains("sync") {
            for n in loopCounts {
                rows.append(Measured(name: "sync pread, \(n) thread\(n == 1 ? "" : "s")") {
                    try measureSync(path: file, size: size, threads: n, seconds: duration)
                })
            }
        }
        if haveNode {
            rows.append(Measured(name: "node fs.read c\(concurrency)") { [self] in
                guard let fields = runPeerFields("node", [nodePeer, file, String(concurrency), String(duration), String(readKib << 10)]) else { return nil }
                return Sample(opsPerSecond: fields["ops_per_s"]!, p50: fields["p50_us"] ?? .nan, p99: fields["p99_us"] ?? .nan)
            })
        }
        if chosen.contains("cold") {
            rows.append(Measured(name: "cold: chroma cached c\(concurrency), 1 loop") {
                try measureChroma(path: file, size: size, loops: 1, cached: true, cold: true, seconds: duration)
            })
            rows.append(Measured(name: "cold: chroma pool c\(concurrency), 1 loop") {
                try measureChroma(path: file, size: size, loops: 1, cached: false, cold: true, seconds: duration)
            })
        }
        for round in 1...rounds {
            for i in rows.indices {
                progress("round \(round)/\(rounds): \(rows[i].name)")
                if let sample = try rows[i].measure() {
                    rows[i].samples.append(sample)
                    if let rate = sample.hitRate { rows[i].hitRates.append(rate) }
                }
            }
        }
        endProgress()
        // A cold round re-reads the file, so the next row starts page-cached again.
        if chosen.contains("cold") { try prepareFile(path: file, size: size) }
        let machine = Machine.current()
        var report = Report(scenario: "disk", machine: machine)
        report.rows = rows.compactMap { $0.samples.isEmpty ? nil : Sample.middle(of: $0.samples).row($0.name) }
        func row(_ prefix: String) -> Row? { report.rows.first { $0.name.hasPrefix(prefix) } }
        let sync1 = row("sync pread, 1 thread")
        func ratio(_ a: Row?, _ b: Row?) {
            if let a, let b { report.ratios.append(("\(a.name) / \(b.name)", a.opsPerSecond / b.opsPerSecond)) }
        }
        for prefix in ["chroma cached", "chroma reader", "chroma pool", "node", "sync pread, \(loops) threads"] {
            for r in report.rows where r.name.hasPrefix(prefix) { ratio(r, sync1) }
        }
        let node = row("node")
        for r in report.rows where r.name.hasPrefix("chroma cached") || r.name.hasPrefix("chroma reader") { ratio(r, node) }
        ratio(row("cold: chroma cached"), row("cold: chroma pool"))
        try plot.write(report)
        if json {
            print(report.json())
            return
        }
        let workerText = workers.map(String.init) ?? "default \(BlockingPool.Configuration().workers)"
        print("chroma-bench disk   (\(machine.nproc) cores, \(machine.cpu))")
        print("random \(readKib) KiB preads of a \(fileMiB) MiB file; concurrency \(concurrency); pool workers \(workerText)")
        print("duration \(duration)s per measurement, median of \(rounds) rounds; cold rows drop the file's pages first")
        let header = ["system", "k ops/s", "p50 us", "p99 us", "vs sync", "on loop"]
        let widths = [34, 9, 8, 8, 8, 8]
        print(zip(header, widths).map { $0.padded(to: $1) }.joined(separator: " "))
        for r in report.rows {
            let rates = rows.first { $0.name == r.name }?.hitRates ?? []
            let cells = [r.name, fixed(r.opsPerSecond / 1e3, 0), r.p50Microseconds.map { fixed($0, 1) } ?? "-",
                         r.p99Microseconds.map { fixed($0, 1) } ?? "-", sync1.map { fixed(r.opsPerSecond / $0.opsPerSecond, 2) } ?? "-",
                         rates.isEmpty ? "-" : fixed(median(rates) * 100, 0) + "%"]
            print(zip(cells, widths).map { $0.padded(to: $1) }.joined(separator: " "))
        }
        for ratio in report.ratios { print("\(ratio.name): \(fixed(ratio.value, 2))x") }
        if chosen.contains("node") && node == nil {
            print("node peer skipped (needs `node` on PATH and \(nodePeer))")
        }
    }

    private var readBytes: Int { readKib << 10 }

    // MARK: Measurements

    /// The synchronous limit: `threads` threads, each one pread after another. Each times
    /// one read in 16 for the latency columns, so the timing barely slows the loop.
    func measureSync(path: String, size: Int, threads: Int, seconds: Double) throws -> Sample {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ValidationError("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let results = SyncResults(threads: threads)
        let deadline = nowNanoseconds() + UInt64(seconds * 1e9)
        let workers = (0..<threads).map { t in
            BenchThread { [readBytes] in
                results.store(t, DiskCommand.preadLoop(fd: fd, readBytes: readBytes, blocks: UInt64(size / readBytes),
                                                       seed: UInt64(t) &+ 0x9E37_79B9_7F4A_7C15, deadline: deadline))
            }
        }
        for worker in workers { worker.join() }
        var latencies = results.latencies
        return Sample(opsPerSecond: results.opsPerSecond, latencies: &latencies)
    }

    /// One thread's pread loop: operations, elapsed nanoseconds, sampled latencies.
    static func preadLoop(fd: Int32, readBytes: Int, blocks: UInt64, seed: UInt64, deadline: UInt64) -> (Int, UInt64, [UInt32]) {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: readBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var rng = Xorshift(seed: seed)
        var latencies: [UInt32] = []
        latencies.reserveCapacity(1 << 20)
        var ops = 0
        let start = nowNanoseconds()
        var now = start
        while now < deadline {
            for i in 0..<64 {
                let offset = off_t((rng.next() % blocks) * UInt64(readBytes))
                if i & 15 == 0 {
                    let t0 = nowNanoseconds()
                    _ = pread(fd, buffer, readBytes, offset)
                    latencies.append(UInt32(clamping: nowNanoseconds() - t0))
                } else {
                    _ = pread(fd, buffer, readBytes, offset)
                }
            }
            ops += 64
            now = nowNanoseconds()
        }
        return (ops, now - start, latencies)
    }

    /// Chroma: `concurrency` chains, each on its own color, each completion issuing the
    /// chain's next read at a random offset. `cached` false turns reads on the loop off, so
    /// every read is a pool job; `cold` drops the file's pages first.
    func measureChroma(path: String, size: Int, loops: Int, cached: Bool, cold: Bool, reusingReaders: Bool = false, seconds: Double) throws -> Sample {
        var pool = BlockingPool.Configuration(workers: workers ?? BlockingPool.Configuration().workers, cachedReads: cached)
        if let cachedMaxBytes { pool.cachedReadMaxBytes = cachedMaxBytes }
        if let cachedBytesPerPass { pool.cachedReadBytesPerPass = cachedBytesPerPass }
        let runtime = try Runtime(loops: loops, pool: pool)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        if cold {
            let rc = chroma_drop_cached_pages(fd.rawValue)
            guard rc == 0 else { throw ValidationError("posix_fadvise \(path): \(String(cString: strerror(rc)))") }
        }
        let run = DiskRun(runtime: runtime, fd: fd, readBytes: readBytes, blocks: UInt64(size / readBytes), chains: concurrency,
                          deadline: nowNanoseconds() + UInt64(seconds * 1e9), reusingReaders: reusingReaders)
        let start = nowNanoseconds()
        for chain in run.chains { try run.issue(chain) }
        run.done.wait()
        let elapsed = Double(run.lastCompletion.load(ordering: .relaxed) - start) / 1e9
        var latencies = run.allLatencies()
        var sample = Sample(opsPerSecond: Double(run.operations) / elapsed, latencies: &latencies)
        if cached { sample.hitRate = Double(runtime.pool.cachedReadCounts().hits) / Double(run.operations) }
        return sample
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

/// The state of one Chroma disk measurement: `concurrency` chains, chain `i` on color `i`.
final class DiskRun: @unchecked Sendable {
    // Safe to share: immutable after init but for the atomics; each chain's state is its
    // color's (see `DiskChain`).
    let runtime: Runtime
    let fd: FileDescriptor
    let readBytes: Int
    let blocks: UInt64
    let deadline: UInt64
    let chains: [DiskChain]
    let remaining: Atomic<Int>
    let lastCompletion = Atomic<UInt64>(0)
    let done = Semaphore()

    init(runtime: Runtime, fd: FileDescriptor, readBytes: Int, blocks: UInt64, chains: Int, deadline: UInt64, reusingReaders: Bool) {
        self.runtime = runtime
        self.fd = fd
        self.readBytes = readBytes
        self.blocks = blocks
        self.deadline = deadline
        self.chains = (0..<chains).map { DiskChain(index: $0) }
        remaining = Atomic(chains)
        guard reusingReaders else { return }
        // The handler holds the run and its chain unretained: both outlive the runtime, which
        // is shut down before they are dropped, and a strong capture would make a cycle
        // (chain → reader → handler → chain) and count references on every read.
        let run = Unmanaged.passUnretained(self)
        for chain in self.chains {
            let unretained = Unmanaged.passUnretained(chain)
            let reader = runtime.files.reader(for: fd, capacity: readBytes, on: chain.color) { _, result in
                run._withUnsafeGuaranteedRef { run in
                    guard case .success(let count) = result, count == run.readBytes else { fatalError("disk bench read failed: \(result)") }
                    unretained._withUnsafeGuaranteedRef { run.completed($0) }
                }
            }
            chain.reader = reader
            chain.unretainedReader = Unmanaged.passUnretained(reader)
        }
    }

    /// The chain's next read, at a random block.
    func issue(_ chain: DiskChain) throws {
        let offset = Int64((chain.rng.next() % blocks) * UInt64(readBytes))
        if chain.ops & 15 == 0 { chain.issued = nowNanoseconds() }
        if let reader = chain.unretainedReader {
            // (A throwing closure here crashes this compiler's ownership checker.)
            let refused = reader._withUnsafeGuaranteedRef { reader -> ChromaError? in
                do throws(ChromaError) { try reader.read(at: offset, count: readBytes) } catch { return error }
                return nil
            }
            if let refused { throw refused }
            return
        }
        try runtime.files.read(from: fd, at: offset, count: readBytes, on: chain.color) { [self] result in
            guard case .success(let bytes) = result, bytes.count == readBytes else { fatalError("disk bench read failed: \(result)") }
            completed(chain)
        }
    }

    /// On the chain's color: counts the read, and issues the next one until the deadline.
    private func completed(_ chain: DiskChain) {
        let timed = chain.ops & 15 == 0
        chain.ops += 1
        if timed {
            chain.latencies.append(UInt32(clamping: nowNanoseconds() - chain.issued))
            // The deadline is checked at timed reads, which read the clock anyway.
            if chain.issued >= deadline {
                lastCompletion.max(nowNanoseconds(), ordering: .relaxed)
                if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { done.signal() }
                return
            }
        }
        try! issue(chain)
    }

    /// After `done`: every chain's latencies.
    func allLatencies() -> [UInt32] { chains.flatMap { $0.latencies } }

    /// After `done`: reads completed.
    var operations: Int { chains.reduce(0) { $0 + $1.ops } }
}

/// One chain of reads: touched only by its color's callbacks (and by the main thread before
/// the first read and after `done`), so it needs no lock. Like the sync loop, it times one
/// read in 16.
final class DiskChain: @unchecked Sendable {
    // Safe to share: see above.
    let color: Color
    @exclusivity(unchecked) var rng: Xorshift
    @exclusivity(unchecked) var issued: UInt64 = 0
    @exclusivity(unchecked) var ops = 0
    @exclusivity(unchecked) var latencies: [UInt32] = []
    /// With `reusingReaders`: the chain's `FileReader`, and the same unretained for the
    /// hot path (`reader` keeps it alive).
    @exclusivity(unchecked) var reader: FileReader?
    @exclusivity(unchecked) var unretainedReader: Unmanaged<FileReader>?

    init(index: Int) {
        color = Color(UInt64(index))
        rng = Xorshift(seed: UInt64(index) &* 0x2545_F491_4F6C_DD1D &+ 1)
        latencies.reserveCapacity(1 << 14)
    }
}

/// A measurement: throughput and latency percentiles.
struct Sample {
    var opsPerSecond: Double
    var p50: Double
    var p99: Double
    /// The share of reads answered on the loop, where counted.
    var hitRate: Double? = nil

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

/// What each thread of a synchronous measurement found, stored as it finishes.
final class SyncResults: @unchecked Sendable {
    // Safe to share: each thread writes only its own slot, before the main thread joins it
    // (the join orders the writes before the reads).
    private let slots: UnsafeMutablePointer<(ops: Int, nanoseconds: UInt64, latencies: [UInt32])>
    private let count: Int
    init(threads: Int) {
        count = threads
        slots = .allocate(capacity: threads)
        slots.initialize(repeating: (0, 1, []), count: threads)
    }
    deinit {
        slots.deinitialize(count: count)
        slots.deallocate()
    }
    func store(_ thread: Int, _ result: (Int, UInt64, [UInt32])) { slots[thread] = result }
    /// The threads' throughputs, summed.
    var opsPerSecond: Double { (0..<count).reduce(0) { $0 + Double(slots[$1].ops) / (Double(slots[$1].nanoseconds) / 1e9) } }
    var latencies: [UInt32] { (0..<count).flatMap { slots[$0].latencies } }
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
