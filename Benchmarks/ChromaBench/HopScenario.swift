import ArgumentParser
import Chroma
import Glibc
import Synchronization

/// `chroma-bench hop`: calls per second to an actor pinned to a color, from many tasks on
/// other colors (each call hops there and back) and from an actor of the same color (no
/// hop), beside a default Swift actor and, when built, a SwiftNIO-loop-pinned actor.
struct HopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hop",
        abstract: "Actor calls per second: color-pinned actors vs default actors vs a SwiftNIO-pinned actor."
    )

    @Option(help: "Loops of the Chroma runtime.")
    var loops: Int = Runtime.onlineCPUCount

    @Option(help: "Concurrent caller tasks in the cross-color case.")
    var callers: Int = 100

    @Option(help: "Seconds per measurement.")
    var duration: Double = 1.0

    @Option(help: "Rounds; each measures every system in turn; medians are reported.")
    var rounds: Int = 3

    @Option(help: "The SwiftNIO peer (built by `make bench` from Benchmarks/peers/swiftnio); skipped when missing.")
    var nioPeer: String = "Benchmarks/peers/swiftnio/.build/release/nio-hop"

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @OptionGroup var plot: PlotOption

    func run() throws {
        guard loops >= 1, callers >= 1, duration > 0, rounds >= 1 else {
            throw ValidationError("--loops, --callers, --duration and --rounds must be positive")
        }
        let haveNIO = isExecutable(nioPeer)
        var samples: [String: [Double]] = [:]
        let names = ["chroma cross-color", "chroma cross-color, task executors", "default actor cross",
                     "chroma same-color", "default actor 1 caller"] + (haveNIO ? ["nio actor cross"] : [])
        for round in 1...rounds {
            progress("round \(round)/\(rounds): chroma, \(callers) callers on other colors")
            samples["chroma cross-color", default: []].append(try measureChroma(sameColor: false))
            progress("round \(round)/\(rounds): chroma, \(callers) tasks preferring other colors' task executors")
            samples["chroma cross-color, task executors", default: []].append(try measureChroma(sameColor: false, taskExecutors: true))
            progress("round \(round)/\(rounds): default actor, \(callers) callers")
            samples["default actor cross", default: []].append(measureDefault(callers: callers))
            progress("round \(round)/\(rounds): chroma, caller on the same color")
            samples["chroma same-color", default: []].append(try measureChroma(sameColor: true))
            progress("round \(round)/\(rounds): default actor, 1 caller")
            samples["default actor 1 caller", default: []].append(measureDefault(callers: 1))
            if haveNIO {
                progress("round \(round)/\(rounds): SwiftNIO-pinned actor, \(callers) callers")
                if let ops = runPeer(nioPeer, [String(callers), String(duration), String(loops)]) {
                    samples["nio actor cross", default: []].append(ops)
                }
            }
        }
        endProgress()
        let machine = Machine.current()
        var report = Report(scenario: "hop", machine: machine)
        for name in names where samples[name] != nil {
            report.rows.append(Row(name: name, opsPerSecond: median(samples[name]!)))
        }
        func ops(_ name: String) -> Double? { report.rows.first { $0.name == name }?.opsPerSecond }
        if let a = ops("chroma cross-color"), let b = ops("default actor cross") {
            report.ratios.append(("chroma cross-color / default actor cross", a / b))
        }
        if let a = ops("chroma cross-color"), let b = ops("nio actor cross") {
            report.ratios.append(("chroma cross-color / nio actor cross", a / b))
        }
        if let a = ops("chroma same-color"), let b = ops("default actor 1 caller") {
            report.ratios.append(("chroma same-color / default actor 1 caller", a / b))
        }
        if let a = ops("chroma same-color"), let b = ops("default actor cross") {
            report.ratios.append(("chroma same-color / default actor cross", a / b))
        }
        try plot.write(report)
        if json {
            print(report.json())
            return
        }
        print("chroma-bench hop   (\(machine.nproc) cores, \(machine.cpu))")
        print("actor calls per second; \(loops) loop(s); \(callers) caller tasks in the cross cases; \(duration)s per measurement, median of \(rounds) rounds")
        let widths = [36, 12]
        print(zip(["system", "M calls/s"], widths).map { $0.padded(to: $1) }.joined(separator: " "))
        for row in report.rows {
            print(zip([row.name, fixed(row.opsPerSecond / 1e6, 2)], widths).map { $0.padded(to: $1) }.joined(separator: " "))
        }
        for ratio in report.ratios { print("\(ratio.name): \(fixed(ratio.value, 2))x") }
        if !haveNIO { print("nio peer skipped (build it with `make bench`, or see \(nioPeer))") }
        print("cross = each caller task runs on its own color (chroma: in an actor of that color, or nonisolated with that")
        print("        color's task executor) or on the global executor (default actor, NIO);")
        print("same-color = an actor calls an actor of its own color: no hop; default actor 1 caller = one task calling a default actor")
    }

    // MARK: Measurements

    /// Chroma: the target actor on color 0. Cross: `callers` tasks, each isolated to an
    /// actor of its own color (or, with `taskExecutors`, nonisolated tasks preferring their
    /// color's task executor). Same color: one actor of color 0 calls the target.
    func measureChroma(sameColor: Bool, taskExecutors: Bool = false) throws -> Double {
        let runtime = try Runtime(loops: loops)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let target = PinnedCounter(executor: runtime.executor(for: Color(0)))
        let deadline = nowNanoseconds() + UInt64(duration * 1e9)
        let total = PaddedCounter()
        let done = Semaphore()
        let start = nowNanoseconds()
        if sameColor {
            let caller = PinnedCaller(executor: runtime.executor(for: Color(0)))
            Task {
                total.value.add(UInt64(await caller.hammer(target, until: deadline)), ordering: .relaxed)
                done.signal()
            }
            done.wait()
        } else if taskExecutors {
            for i in 0..<callers {
                Task(executorPreference: runtime.taskExecutor(for: Color(UInt64(1 + i)))) {
                    total.value.add(UInt64(await callRepeatedly(target, until: deadline)), ordering: .relaxed)
                    done.signal()
                }
            }
            for _ in 0..<callers { done.wait() }
        } else {
            for i in 0..<callers {
                // Each caller is a task isolated to an actor of its own color.
                let caller = PinnedCaller(executor: runtime.executor(for: Color(UInt64(1 + i))))
                Task {
                    total.value.add(UInt64(await caller.hammer(target, until: deadline)), ordering: .relaxed)
                    done.signal()
                }
            }
            for _ in 0..<callers { done.wait() }
        }
        return Double(total.value.load(ordering: .relaxed)) / (Double(nowNanoseconds() - start) / 1e9)
    }

    /// A default actor, called by `callers` tasks on the global executor.
    func measureDefault(callers: Int) -> Double {
        let target = DefaultCounter()
        let deadline = nowNanoseconds() + UInt64(duration * 1e9)
        let total = PaddedCounter()
        let done = Semaphore()
        let start = nowNanoseconds()
        for _ in 0..<callers {
            Task.detached {
                var calls = 0
                while true {
                    for _ in 0..<64 { _ = await target.increment() }
                    calls += 64
                    if nowNanoseconds() >= deadline { break }
                }
                total.value.add(UInt64(calls), ordering: .relaxed)
                done.signal()
            }
        }
        for _ in 0..<callers { done.wait() }
        return Double(total.value.load(ordering: .relaxed)) / (Double(nowNanoseconds() - start) / 1e9)
    }
}

/// Calls `target` in batches of 64 until `deadline`; returns the number of calls. Runs on
/// the caller's isolation (an actor's, or none), so an actor calling it makes no extra hop.
func callRepeatedly(_ target: PinnedCounter, until deadline: UInt64, isolation: isolated (any Actor)? = #isolation) async -> Int {
    var calls = 0
    while true {
        for _ in 0..<64 { _ = await target.increment() }
        calls += 64
        if nowNanoseconds() >= deadline { return calls }
    }
}

/// The target: an actor pinned to a color.
actor PinnedCounter {
    let executor: ColorExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private var count = 0
    init(executor: ColorExecutor) { self.executor = executor }
    func increment() -> Int {
        count &+= 1
        return count
    }
}

/// A caller pinned to the target's color: its calls need no hop.
actor PinnedCaller {
    let executor: ColorExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    init(executor: ColorExecutor) { self.executor = executor }
    func hammer(_ target: PinnedCounter, until deadline: UInt64) async -> Int {
        await callRepeatedly(target, until: deadline)
    }
}

/// The baseline: a default actor.
actor DefaultCounter {
    private var count = 0
    func increment() -> Int {
        count &+= 1
        return count
    }
}
