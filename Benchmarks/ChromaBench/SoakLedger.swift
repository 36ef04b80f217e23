/// The three servers a soak runs, in the order the summary lists them.
enum SoakTarget: String, CaseIterable {
    case http = "chroma-httpd"
    case echo = "chroma-echo"
    case kv = "chroma-kv"
}

/// What the load clients saw of each server: requests sent and answered correctly, the
/// ones lost (no answer, or a wrong one), the closes the clients provoked on purpose, the
/// connections they reset themselves, and anything else unexpected. Any lost answer or
/// unexpected event fails the soak, so each keeps its first few descriptions.
///
/// A request counts as sent only when it is well formed and goes out on a connection the
/// client will not abort itself; everything the client provokes (a reset, a malformed
/// head, a trickle) is counted by kind instead.
final class SoakLedger: @unchecked Sendable {
    // Safe to share: every field is read and written with `lock` held.
    struct Counts {
        var sent = 0
        var answered = 0
        var lost = 0
        /// Closes (or close-with-answer) the clients provoked and got as expected.
        var expectedCloses = 0
        /// Connections the clients reset themselves.
        var resets = 0
        var unexpected = 0
        /// How many of each kind, for the detail lines: answers by request, provoked closes
        /// and resets by what was done.
        var answeredKinds: [String: Int] = [:]
        var closeKinds: [String: Int] = [:]
        var resetKinds: [String: Int] = [:]
    }

    /// Descriptions kept per server, of lost answers and of unexpected events each; the
    /// rest are only counted.
    static let keptProblems = 5

    private let lock = PThreadLock()
    private var counts: [SoakTarget: Counts] = [:]
    private var lostProblems: [SoakTarget: [String]] = [:]
    private var otherProblems: [SoakTarget: [String]] = [:]

    init() {
        for target in SoakTarget.allCases { counts[target] = Counts() }
    }

    /// `n` well-formed requests went out, each waiting for its answer.
    func sent(_ target: SoakTarget, _ n: Int = 1) {
        change(target) { $0.sent += n }
    }

    /// One request got its correct answer; `kind` names it in the detail line.
    func answered(_ target: SoakTarget, kind: String) {
        change(target) {
            $0.answered += 1
            $0.answeredKinds[kind, default: 0] += 1
        }
    }

    /// `n` requests got no answer or a wrong one; `why` says what happened to the first.
    func lost(_ target: SoakTarget, _ n: Int = 1, _ why: String) {
        change(target) { $0.lost += n }
        keep(target, "lost: " + why, in: &lostProblems)
    }

    /// The server closed (after its answer, if it gives one) a connection the client
    /// provoked, as expected.
    func expectedClose(_ target: SoakTarget, kind: String) {
        change(target) {
            $0.expectedCloses += 1
            $0.closeKinds[kind, default: 0] += 1
        }
    }

    /// Waits for the server to close `socket` after a provoked `kind` and records the
    /// close, or, if it does not come, the problem.
    func expectClose(_ target: SoakTarget, _ socket: SoakSocket, kind: String) {
        if let problem = socket.expectClose(operation: "close after \(kind)") {
            unexpected(target, problem)
        } else {
            expectedClose(target, kind: kind)
        }
    }

    /// A socket connected to `port`, or nil after counting the failure and pausing a
    /// second (so a server that refuses is not hammered).
    func connect(_ target: SoakTarget, port: UInt16, stop: SoakStop) -> SoakSocket? {
        switch SoakSocket.connect(port: port) {
        case .success(let socket): return socket
        case .failure(let error):
            unexpected(target, error.description)
            stop.pause(1)
            return nil
        }
    }

    /// The client reset a connection on purpose.
    func reset(_ target: SoakTarget, kind: String) {
        change(target) {
            $0.resets += 1
            $0.resetKinds[kind, default: 0] += 1
        }
    }

    /// Something that should not happen and is no lost answer: a refused connect, a
    /// provoked close that did not come, a wrong error answer.
    func unexpected(_ target: SoakTarget, _ why: String) {
        change(target) { $0.unexpected += 1 }
        keep(target, why, in: &otherProblems)
    }

    /// A copy of everything so far: the counts, and per server the descriptions kept
    /// (lost answers first).
    func snapshot() -> (counts: [SoakTarget: Counts], problems: [SoakTarget: [String]]) {
        lock.lock()
        defer { lock.unlock() }
        var problems: [SoakTarget: [String]] = [:]
        for target in SoakTarget.allCases { problems[target] = lostProblems[target, default: []] + otherProblems[target, default: []] }
        return (counts, problems)
    }

    private func change(_ target: SoakTarget, _ body: (inout Counts) -> Void) {
        lock.lock()
        body(&counts[target]!)
        lock.unlock()
    }

    private func keep(_ target: SoakTarget, _ why: String, in kept: inout [SoakTarget: [String]]) {
        lock.lock()
        if kept[target, default: []].count < Self.keptProblems { kept[target, default: []].append(why) }
        lock.unlock()
    }
}
