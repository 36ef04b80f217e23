import ArgumentParser
import Glibc

/// `chroma-bench soak`: chroma-httpd, chroma-echo and chroma-kv (the release builds next
/// to chroma-bench) under a mixed, paced load for `--minutes`, watched for leaks. It fails
/// (exit status 1) on any lost answer or unexpected server behaviour, on RSS growth after
/// the warm-up (`SoakMemory`), or on descriptors that do not come back to their baseline
/// once the load stops (`SoakDescriptors`). Not part of `make bench`: it takes as long as
/// it is told to.
struct SoakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Leak and lost-answer check: chroma-httpd, chroma-echo and chroma-kv under a mixed load for M minutes.",
        discussion: """
            Fails (exit status 1) on a lost or wrong answer, a provoked close that does not come, RSS more than 5% \
            above its level at the warm-up's end (or still rising), or descriptors not back at their baseline \
            within 30 s of the load's end.
            """
    )

    @Option(help: "Minutes of load (fractions allowed, e.g. 0.5).")
    var minutes: Double = 30

    @Option(help: "Loops of each server.")
    var loops: Int = 2

    @Option(help: "Seconds between RSS and descriptor samples (default: 5, shorter for runs under 2.5 minutes).")
    var sampleSeconds: Double?

    func run() throws {
        guard minutes > 0, minutes <= 24 * 60, loops >= 1 else { throw ValidationError("--minutes must be in (0, 1440] and --loops positive") }
        if let sampleSeconds, !(sampleSeconds >= 0.2) { throw ValidationError("--sample-seconds must be at least 0.2") }
        let seconds = minutes * 60
        let interval = sampleSeconds ?? SoakSampler.defaultInterval(forSoakOf: seconds)
        let warmup = SoakMemory.warmup(seconds: seconds, interval: interval)
        let machine = Machine.current()
        let files = try SoakFiles()
        defer { files.remove() }
        let servers = try SoakServer.startAll(files: files, loops: loops)
        var stopped = false
        defer { if !stopped { for server in servers { _ = server.child.stop() } } }

        let ledger = SoakLedger()
        let clientCPUBefore = ownCPUSeconds()
        let start = nowSeconds()
        let sampler = SoakSampler(servers: servers, interval: interval, start: start)
        let load = SoakLoad(servers: servers, files: files, ledger: ledger)
        sampler.begin { [sampler] time in
            progress(progressLine(time: time, seconds: seconds, ledger: ledger, series: sampler.series()))
        }
        sleepSeconds(max(0, start + seconds - nowSeconds()))
        let loadEnd = nowSeconds() - start
        sampler.finish()
        progress("load stopped; waiting for the clients' last exchanges")
        load.finish()
        let cpu = servers.map { server in (server.target.rawValue, cpuSeconds(server.pid)) } + [("clients", ownCPUSeconds() - clientCPUBefore)]
        progress("waiting (at most \(Int(SoakDescriptors.settleTimeout)) s) for every server's descriptors to come back to baseline")
        let series = sampler.series()
        var peaks: [SoakTarget: Int] = [:]
        for (target, samples) in series { peaks[target] = samples.compactMap(\.descriptors).max() }
        let descriptors = settleDescriptors(servers, peaks: peaks)
        endProgress()

        var problems: [String] = []
        for server in servers {
            if let status = server.child.exitStatus() {
                problems.append("\(server.target.rawValue) exited during the soak (\(status))\(server.lastError.map { ": \($0)" } ?? "")")
            }
        }
        let (counts, kept) = ledger.snapshot()
        var memory: [SoakTarget: SoakMemory] = [:]
        for server in servers {
            let name = server.target.rawValue
            let count = counts[server.target]!
            if count.lost > 0 {
                problems.append("\(name): \(count.lost) of \(count.sent) answers lost")
            }
            if count.unexpected > 0 { problems.append("\(name): \(count.unexpected) unexpected events") }
            for line in kept[server.target] ?? [] { problems.append("  \(name): \(line)") }
            if let check = SoakMemory(series[server.target] ?? [], warmupEnd: warmup, loadEnd: loadEnd, interval: interval) {
                memory[server.target] = check
                problems += check.problems(name)
            } else {
                problems.append("\(name): no RSS samples")
            }
            problems += descriptors[server.target]!.problems(name)
        }
        for server in servers where !server.child.stop() {
            problems.append("\(server.target.rawValue) did not exit within 5 s of SIGTERM; killed")
        }
        stopped = true

        print("chroma-bench soak   (\(machine.nproc) cores, \(machine.cpu))")
        print("\(fixed(loadEnd / 60, 1)) min of mixed load from \(SoakLoad.threads) paced client threads on chroma-httpd, chroma-echo "
              + "and chroma-kv (\(loops) loop(s) each; kv with --dir, appendfsync everysec)")
        print("RSS and descriptors every \(fixed(interval, 1)) s; warm-up \(Int(warmup.rounded())) s; RSS warm-up = median of the samples "
              + "within one interval of its end, end = median of the last \(SoakMemory.endSamples) under load")
        print("")
        let header = ["server", "sent", "answered", "lost", "closes", "resets", "RSS MiB: warm-up", "end", "peak", "growth", "trend",
                      "fds: base", "peak", "after"]
        let widths = [13, 9, 9, 5, 7, 7, 17, 7, 7, 7, 7, 10, 5, 5]
        print(zip(header, widths).map { $0.padded(to: $1) }.joined(separator: " ").trimmingSpaces())
        for server in servers {
            let count = counts[server.target]!
            let check = memory[server.target]
            let fds = descriptors[server.target]!
            var cells = [server.target.rawValue, String(count.sent), String(count.answered), String(count.lost),
                         String(count.expectedCloses), String(count.resets)]
            if let check {
                cells += [mebibytes(check.warm), mebibytes(check.end), mebibytes(Double(check.peak)), percent(check.growth),
                          check.trend.map(percent) ?? "-"]
            } else {
                cells += ["-", "-", "-", "-", "-"]
            }
            cells += [String(fds.baseline), String(fds.peak), fds.after.map(String.init) ?? "-"]
            print(zip(cells, widths).map { $0.padded(to: $1) }.joined(separator: " ").trimmingSpaces())
        }
        print("")
        for server in servers {
            let count = counts[server.target]!
            let name = server.target.rawValue
            print("\(name) answers: \(kindList(count.answeredKinds))")
            if !count.closeKinds.isEmpty { print("\(name) provoked closes: \(kindList(count.closeKinds))") }
            if !count.resetKinds.isEmpty { print("\(name) client resets: \(kindList(count.resetKinds))") }
            if let settled = descriptors[server.target]!.settledAfter { print("\(name) descriptors back at baseline \(fixed(settled, 1)) s after the load") }
        }
        let cpuText = cpu.map { name, used in
            "\(name) " + (used.map { "\(fixed($0, 1)) s (\(Int(($0 / loadEnd * 100).rounded()))% of a core)" } ?? "-")
        }
        print("CPU used: " + cpuText.joined(separator: ", "))
        print("")
        if problems.isEmpty {
            print("PASS: no answer lost, nothing unexpected, RSS within \(Int(SoakMemory.growthLimit * 100))% after the warm-up, "
                  + "descriptors back at baseline")
        } else {
            print("FAIL:")
            for line in problems { print("  " + line) }
            throw ExitCode.failure
        }
    }
}

/// "GET /small.bin 1234, HEAD /big.bin 56", largest first.
private func kindList(_ kinds: [String: Int]) -> String {
    kinds.isEmpty ? "none" : kinds.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        .map { "\($0.key) \($0.value)" }.joined(separator: ", ")
}

/// "soak 1:05 / 3:00  answered: httpd 1234, echo 5678, kv 9012  lost 0  RSS MiB: 14.2 6.1 9.3"
private func progressLine(time: Double, seconds: Double, ledger: SoakLedger, series: [SoakTarget: [SoakSample]]) -> String {
    func clock(_ t: Double) -> String { "\(Int(t) / 60):" + String(Int(t) % 60).leftPadded(to: 2) }
    let counts = ledger.snapshot().counts
    let answered = SoakTarget.allCases.map { "\($0.rawValue.dropFirst(7)) \(counts[$0]!.answered)" }.joined(separator: ", ")
    let lost = SoakTarget.allCases.reduce(0) { $0 + counts[$1]!.lost }
    let rss = SoakTarget.allCases.map { target in series[target]?.last?.residentBytes.map { mebibytes(Double($0)) } ?? "-" }.joined(separator: " ")
    return "soak \(clock(time)) / \(clock(seconds))  answered: \(answered)  lost \(lost)  RSS MiB: \(rss)"
}
