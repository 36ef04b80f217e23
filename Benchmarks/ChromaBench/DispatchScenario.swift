import CAllocCounter
import Chroma
import Glibc
import Synchronization

/// Shared state of one dispatch measurement. Counters are per color, padded to a cache line,
/// and written only on the color's loop; `published` mirrors them for the producers' flow
/// control in cross mode.
final class DispatchState: @unchecked Sendable {
    // Safe to share: counters[c], allocStart[c] and allocEnd[c] are written only by color
    // c's callbacks, which never overlap (guarantee 1); the main thread reads them after
    // `done` is signalled. Everything else is atomic or immutable.
    let runtime: Runtime
    let colors: Int
    let counters: UnsafeMutablePointer<UInt64>  // 8 words per color: one cache line each
    let allocStart: UnsafeMutablePointer<UInt64>
    let allocEnd: UnsafeMutablePointer<UInt64>
    let published: [PaddedCounter]
    let stop = Atomic<Bool>(false)
    let remaining: Atomic<Int>
    let done = Semaphore()

    init(runtime: Runtime, colors: Int) {
        self.runtime = runtime
        self.colors = colors
        counters = .allocate(capacity: colors * 8)
        counters.initialize(repeating: 0, count: colors * 8)
        allocStart = .allocate(capacity: colors * 8)
        allocStart.initialize(repeating: 0, count: colors * 8)
        allocEnd = .allocate(capacity: colors * 8)
        allocEnd.initialize(repeating: 0, count: colors * 8)
        published = (0..<colors).map { _ in PaddedCounter() }
        remaining = Atomic(colors)
    }

    deinit {
        counters.deallocate()
        allocStart.deallocate()
        allocEnd.deallocate()
    }

    var total: UInt64 { (0..<colors).reduce(0) { $0 + counters[$1 * 8] } }

    var allocsPerOp: Double {
        var allocs: UInt64 = 0
        for c in 0..<colors { allocs += allocEnd[c * 8] - allocStart[c * 8] }
        return Double(allocs) / Double(max(total, 1))
    }

    func chainFinished(_ color: Int) {
        allocEnd[color * 8] = chroma_bench_thread_mallocs()
        if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { done.signal() }
    }
}

final class PaddedCounter: Sendable {
    let value = Atomic<UInt64>(0)
}

nonisolated(unsafe) var dispatchStateRef: Unmanaged<DispatchState>?

/// The current measurement's state, borrowed without touching its reference count: the
/// callbacks of every loop read it, and a shared count would bounce between cores.
@inline(__always) func withDispatchState<R>(_ body: (DispatchState) -> R) -> R {
    dispatchStateRef.unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
}

/// Local mode, one closure value: a global function has no context, so re-queuing it
/// allocates nothing and touches no reference count.
@Sendable func localReusedStep() { withDispatchState { state in
    let color = Int(Color.current.unsafelyUnwrapped.rawValue)
    let slot = state.counters + color * 8
    slot.pointee &+= 1
    if slot.pointee == 1 { state.allocStart[color * 8] = chroma_bench_thread_mallocs() }
    if state.stop.load(ordering: .relaxed) { state.chainFinished(color); return }
    try! state.runtime.execute(on: Color(UInt64(color)), localReusedStep)
} }

/// Local mode, a fresh capturing closure per callback: one context allocation each.
@Sendable func localFreshStep(_ sequence: UInt64) { withDispatchState { state in
    let color = Int(Color.current.unsafelyUnwrapped.rawValue)
    let slot = state.counters + color * 8
    slot.pointee &+= 1
    if sequence == 0 { state.allocStart[color * 8] = chroma_bench_thread_mallocs() }
    if state.stop.load(ordering: .relaxed) { state.chainFinished(color); return }
    try! state.runtime.execute(on: Color(UInt64(color))) { localFreshStep(sequence &+ 1) }
} }

/// Captured mode's per-color state: what a program keeps per session or connection, and
/// what its callbacks capture. Each color's chain has its own, so its reference count stays
/// on that color's loop.
final class DispatchChain: @unchecked Sendable {
    // Safe to send: `handled` is read and written only by its color's callbacks, which never
    // overlap (guarantee 1), and by the main thread after `done` is signalled. The rest is
    // immutable.
    let runtime: Runtime
    let color: Color
    let index: Int
    var handled: UInt64 = 0

    init(runtime: Runtime, index: Int) {
        self.runtime = runtime
        self.index = index
        color = Color(UInt64(index))
    }
}

/// Captured mode, what user code writes: each callback queues a new closure capturing the
/// chain (a class reference) and the next counter value, so every callback costs one
/// context allocation and a retain and release of the chain.
@Sendable func capturedStep(_ chain: DispatchChain, _ sequence: UInt64) {
    chain.handled = sequence &+ 1
    let stopped = withDispatchState { state in
        if sequence == 0 { state.allocStart[chain.index * 8] = chroma_bench_thread_mallocs() }
        guard state.stop.load(ordering: .relaxed) else { return false }
        state.counters[chain.index * 8] = chain.handled
        state.chainFinished(chain.index)
        return true
    }
    if stopped { return }
    try! chain.runtime.execute(on: chain.color) { capturedStep(chain, sequence &+ 1) }
}

/// Cross mode: the item producers post; counts and publishes every 1024.
@Sendable func crossStep() { withDispatchState { state in
    let color = Int(Color.current.unsafelyUnwrapped.rawValue)
    let slot = state.counters + color * 8
    slot.pointee &+= 1
    if slot.pointee & 1023 == 0 { state.published[color].value.store(slot.pointee, ordering: .relaxed) }
} }

@Sendable func crossDone() { withDispatchState { state in
    if state.remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { state.done.signal() }
} }

/// Cross mode through the C-convention path: the context is the color's counter, so a
/// callback does what the C peer's `count_item` does (count, publish every 1024), with no
/// closure and no color lookup. The producers' items are then `{function, context}` pairs,
/// the C peer's `{fn, arg}`.
func crossFunctionStep(_ context: UnsafeMutableRawPointer?) {
    let counter = context.unsafelyUnwrapped.assumingMemoryBound(to: UInt64.self)
    counter.pointee &+= 1
    if counter.pointee & 1023 == 0 {
        withDispatchState { state in
            let color = (state.counters.distance(to: counter)) / 8
            state.published[color].value.store(counter.pointee, ordering: .relaxed)
        }
    }
}

enum DispatchMode: String, CaseIterable {
    case local, function, fresh, captured, cross
    case crossFunction = "cross-function"
    var isCross: Bool { self == .cross || self == .crossFunction }
    /// The raw-C peer's mode measured beside this one.
    var peerMode: String { isCross ? "cross" : self == .captured ? "captured" : "local" }
}

/// One Chroma measurement: ops/s and allocations per callback.
func measureChromaDispatch(mode: DispatchMode, loops: Int, colors: Int, seconds: Double,
                           stealing: Stealing = .on) throws -> Row {
    let runtime = try Runtime(loops: loops, stealing: stealing)
    try runtime.start()
    let state = DispatchState(runtime: runtime, colors: colors)
    dispatchStateRef = .passUnretained(state)
    defer {
        _ = try? runtime.shutdown()
        dispatchStateRef = nil
    }
    let start = nowSeconds()
    var posted: [UInt64] = []
    switch mode {
    case .local, .function, .fresh, .captured:
        for c in 0..<colors {
            if mode == .captured {
                let chain = DispatchChain(runtime: runtime, index: c)
                try runtime.execute(on: chain.color) { capturedStep(chain, 0) }
            } else if mode == .local {
                try runtime.execute(on: Color(UInt64(c)), localReusedStep)
            } else if mode == .function {
                try runtime.execute(on: Color(UInt64(c)), context: nil, localFunctionStep)
            } else {
                try runtime.execute(on: Color(UInt64(c))) { localFreshStep(0) }
            }
        }
        sleepSeconds(seconds)
        state.stop.store(true, ordering: .relaxed)
        state.done.wait()
    case .cross, .crossFunction:
        // One producer thread per loop, each posting round-robin to that loop's colors.
        let producers = (0..<loops).map { p in
            BenchThread {
                let mine = stride(from: p, to: colors, by: loops).map { Color(UInt64($0)) }
                // Each color's counter, looked up once: reaching `state` per post would bounce
                // its reference count between the producers' cores.
                let contexts = mine.map { UnsafeMutableRawPointer(state.counters + Int($0.rawValue) * 8) }
                var sent: UInt64 = 0
                while !state.stop.load(ordering: .relaxed) {
                    if mode == .crossFunction {
                        for i in 0..<1024 {
                            let k = mine.count == 1 ? 0 : i % mine.count
                            try! runtime.execute(on: mine[k], context: contexts[k], crossFunctionStep)
                        }
                    } else if mine.count == 1 {
                        let color = mine[0]
                        for _ in 0..<1024 { try! runtime.execute(on: color, crossStep) }
                    } else {
                        for i in 0..<1024 { try! runtime.execute(on: mine[i % mine.count], crossStep) }
                    }
                    sent += 1024
                    // Flow control: at most 256k items outstanding, as the C peer does.
                    while true {
                        let consumed = mine.reduce(UInt64(0)) { $0 + state.published[Int($1.rawValue)].value.load(ordering: .relaxed) }
                        if sent - min(consumed, sent) <= 1 << 18 { break }
                        sched_yield()
                    }
                }
                for color in mine { try! runtime.execute(on: color, crossDone) }
                let lock = postedLock
                lock.lock(); postedByProducers.append(sent); lock.unlock()
            }
        }
        sleepSeconds(seconds)
        state.stop.store(true, ordering: .relaxed)
        for producer in producers { producer.join() }
        state.done.wait()
        posted = postedByProducers
        postedByProducers = []
    }
    let elapsed = nowSeconds() - start
    let ops = mode.isCross ? Double(posted.reduce(0, +)) : Double(state.total)
    return Row(name: "chroma \(mode.rawValue) \(loops) loop\(loops == 1 ? "" : "s")", opsPerSecond: ops / elapsed,
               allocsPerOp: mode.isCross ? nil : state.allocsPerOp)
}

let postedLock = PThreadLock()
nonisolated(unsafe) var postedByProducers: [UInt64] = []

final class PThreadLock: @unchecked Sendable {
    // Safe to share: a pthread mutex.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
}

/// Local mode through the C-convention path: a function and a raw context, no ARC at all.
/// A global function, so referring to it costs no lazy-global check.
func localFunctionStep(_ context: UnsafeMutableRawPointer?) {
    withDispatchState { state in
        let color = Int(Color.current.unsafelyUnwrapped.rawValue)
        let slot = state.counters + color * 8
        slot.pointee &+= 1
        if slot.pointee == 1 { state.allocStart[color * 8] = chroma_bench_thread_mallocs() }
        if state.stop.load(ordering: .relaxed) { state.chainFinished(color); return }
        try! state.runtime.execute(on: Color(UInt64(color)), context: context, localFunctionStep)
    }
}
