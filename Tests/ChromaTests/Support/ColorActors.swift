@testable import Chroma
import Synchronization

/// An actor pinned to a color: its methods serialize with the color's callbacks.
actor ColorActor {
    let executor: ColorExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    let probe: OverlapProbe
    private(set) var calls = 0
    private var lastSequence: [Int: Int] = [:]
    private(set) var outOfOrder = 0

    init(executor: ColorExecutor, probe: OverlapProbe) {
        self.executor = executor
        self.probe = probe
    }

    /// Counts the call, checking no callback of the color overlaps it and that calls from
    /// one caller arrive in order.
    func call(from caller: Int, sequence: Int) {
        probe.enter()
        if Color.current != executor.color { probe.wrongColor.add(1, ordering: .relaxed) }
        if let last = lastSequence[caller], last >= sequence { outOfOrder += 1 }
        lastSequence[caller] = sequence
        calls += 1
        probe.leave()
    }

    func increment() -> Int {
        calls += 1
        return calls
    }
}

/// An actor that calls another; pinned to a color like `ColorActor`.
actor CallerActor {
    let executor: ColorExecutor
    let runtime: Runtime
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    init(executor: ColorExecutor, runtime: Runtime) {
        self.executor = executor
        self.runtime = runtime
    }

    /// Calls `target` `times` times; true if no queued callback of this color ran meanwhile.
    func callWithoutHop(_ target: ColorActor, times: Int) async -> Bool {
        let ranBetween = Counter()
        try! runtime.execute(on: executor.color) { ranBetween.increment() }
        for _ in 0..<times { _ = await target.increment() }
        return ranBetween.current == 0
    }
}

/// An in-flight counter shared by an actor and the callbacks of its color.
final class OverlapProbe: Sendable {
    let inFlight = Atomic<Int>(0)
    let overlaps = Atomic<Int>(0)
    let wrongColor = Atomic<Int>(0)
    func enter() {
        if inFlight.add(1, ordering: .sequentiallyConsistent).newValue != 1 { overlaps.add(1, ordering: .relaxed) }
    }
    func leave() { inFlight.subtract(1, ordering: .sequentiallyConsistent) }
}
