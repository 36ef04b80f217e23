import ArgumentParser
import Chroma
import Glibc

/// `chroma-bench`: Chroma's throughput benchmarks, each measured side by side with its
/// peers in one run (A B A B …, medians, then ratios).
struct ChromaBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chroma-bench",
        abstract: "Chroma throughput benchmarks, with side-by-side peer baselines.",
        subcommands: [DispatchCommand.self, DiskCommand.self, HopCommand.self, EchoCommand.self, HTTPCommand.self, StealCommand.self, KVCommand.self, PaperCommand.self, SoakCommand.self],
        defaultSubcommand: DispatchCommand.self
    )
}

struct DispatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatch",
        abstract: "Callbacks per second: local (a callback queues the next on its own color) and cross (threads outside the runtime post to colors)."
    )

    @Option(help: "Loop counts to measure, comma-separated (e.g. 1,2,4,8,16).")
    var loops: String = "1,2"

    @Option(help: "Colors per run (default: one per loop).")
    var colors: Int?

    @Option(help: "Modes, comma-separated: local (one closure re-queued), function (a C-convention function + context re-queued), fresh (a new capturing closure per callback), captured (a new closure per callback capturing a class reference and a counter), cross (producer threads post closures), cross-function (they post function + context jobs).")
    var mode: String = "local,function,fresh,captured,cross,cross-function"

    @Option(help: "Seconds per measurement.")
    var duration: Double = 1.0

    @Option(help: "Rounds per row; each round runs Chroma then the C peer; medians are reported.")
    var rounds: Int = 3

    @Option(help: "Path of the raw-C libevent peer (built by `make bench`); skipped when missing.")
    var cPeer: String = ".build/peers/c-dispatch"

    @Option(help: "Work stealing: on (the default) or off (colors stay on rawValue % loops).")
    var stealing: String = "on"

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @OptionGroup var plot: PlotOption

    func run() throws {
        let loopCounts = loops.split(separator: ",").compactMap { Int($0) }
        let modes = try mode.split(separator: ",").map { name -> DispatchMode in
            guard let m = DispatchMode(rawValue: String(name)) else {
                throw ValidationError("unknown mode \(name); use local, function, fresh, captured, cross or cross-function")
            }
            return m
        }
        guard !loopCounts.isEmpty, loopCounts.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--loops needs positive counts, e.g. 1,2")
        }
        guard stealing == "on" || stealing == "off" else { throw ValidationError("--stealing is on or off, not \(stealing)") }
        let machine = Machine.current()
        let havePeer = isExecutable(cPeer)
        var report = Report(scenario: "dispatch", machine: machine)
        var table: [[String]] = []
        var chromaLocal: [Int: Double] = [:]
        var peerLocal: [Int: Double] = [:]
        let combos = loopCounts.flatMap { l in modes.map { (l, $0) } }
        for (index, (loopCount, mode)) in combos.enumerated() {
            let colorCount = colors ?? loopCount
            var chroma: [Double] = []
            var allocs: [Double] = []
            var peer: [Double] = []
            for round in 1...rounds {
                progress("[\(index + 1)/\(combos.count)] \(mode.rawValue) \(loopCount) loop(s), round \(round)/\(rounds): chroma")
                let row = try measureChromaDispatch(mode: mode, loops: loopCount, colors: colorCount, seconds: duration,
                                                    stealing: stealing == "on" ? .on : .off)
                chroma.append(row.opsPerSecond)
                if let a = row.allocsPerOp { allocs.append(a) }
                if havePeer {
                    progress("[\(index + 1)/\(combos.count)] \(mode.rawValue) \(loopCount) loop(s), round \(round)/\(rounds): raw C")
                    if let ops = runPeer(cPeer, [mode.peerMode, String(loopCount), String(duration)]) { peer.append(ops) }
                }
            }
            endProgress()
            let chromaOps = median(chroma)
            let name = "chroma \(mode.rawValue) \(loopCount)"
            report.rows.append(Row(name: name, opsPerSecond: chromaOps, allocsPerOp: allocs.isEmpty ? nil : median(allocs)))
            var cells = [mode.rawValue, String(loopCount), fixed(chromaOps / 1e6, 1)]
            if !peer.isEmpty {
                let peerOps = median(peer)
                let peerName = "c-libevent \(mode.peerMode) \(loopCount)"
                if !report.rows.contains(where: { $0.name == peerName }) {
                    report.rows.append(Row(name: peerName, opsPerSecond: peerOps))
                }
                report.ratios.append(("\(name) / \(peerName)", chromaOps / peerOps))
                cells += [fixed(peerOps / 1e6, 1), fixed(chromaOps / peerOps, 2)]
                if mode == .local { peerLocal[loopCount] = peerOps }
            } else {
                cells += ["-", "-"]
            }
            cells.append(allocs.isEmpty ? "-" : fixed(median(allocs), 2))
            if mode == .local { chromaLocal[loopCount] = chromaOps }
            table.append(cells)
        }
        var scaling: [String] = []
        if let one = chromaLocal[1] {
            for l in loopCounts where l > 1 {
                guard let many = chromaLocal[l] else { continue }
                report.ratios.append(("chroma local \(l) / chroma local 1", many / one))
                var line = "scaling, local: \(l) loops / 1 loop = \(fixed(many / one, 2))x"
                if let p1 = peerLocal[1], let pl = peerLocal[l] {
                    report.ratios.append(("c-libevent local \(l) / c-libevent local 1", pl / p1))
                    line += "   (raw C: \(fixed(pl / p1, 2))x)"
                }
                scaling.append(line)
            }
        }
        try plot.write(report)
        if json {
            print(report.json())
            return
        }
        print("chroma-bench dispatch   (\(machine.nproc) cores, \(machine.cpu))")
        print("duration \(duration)s per measurement, median of \(rounds) rounds, Chroma and raw C alternating\(havePeer ? "" : "; raw C peer not found at \(cPeer)")")
        let header = ["mode", "loops", "chroma M/s", "raw C M/s", "ratio", "allocs/cb"]
        let widths = [15, 7, 12, 11, 7, 9]
        print(zip(header, widths).map { $0.padded(to: $1) }.joined(separator: " "))
        for cells in table {
            print(zip(cells, widths).map { $0.padded(to: $1) }.joined(separator: " "))
        }
        for line in scaling { print(line) }
        print("modes: local = one closure value re-queued from its own callback; function = the same with execute(on:context:_:),")
        print("       a C-convention function + context; fresh = a new capturing closure per callback;")
        print("       captured = a new closure per callback capturing its chain's state object (a class) and a counter, what")
        print("       user code writes: one context allocation, one retain/release (raw C: a malloc'd {state*, counter} item")
        print("       per callback on the loop's {fn, arg} run queue, freed after it runs);")
        print("       cross = one producer thread per loop posting closures from outside the runtime (raw C: mutex + event_active")
        print("       mailbox of {fn, arg} items); cross-function = the same posting execute(on:context:_:) jobs, the C items' shape")
    }
}
