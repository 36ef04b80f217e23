// nio-hop CALLERS SECONDS LOOPS: CALLERS tasks on the global executor call an actor pinned
// to one event loop of a LOOPS-thread MultiThreadedEventLoopGroup, for SECONDS.
// Prints one line: "ops_per_s <n>".
import Dispatch
import NIOCore
import NIOPosix
import Synchronization

actor LoopCounter {
    nonisolated let loop: any EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.executor.asUnownedSerialExecutor() }
    private var count = 0
    init(loop: any EventLoop) { self.loop = loop }
    func increment() -> Int {
        count &+= 1
        return count
    }
}

final class Total: Sendable {
    let value = Atomic<Int>(0)
}

func nanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

let arguments = CommandLine.arguments
let callers = arguments.count > 1 ? Int(arguments[1]) ?? 100 : 100
let seconds = arguments.count > 2 ? Double(arguments[2]) ?? 1 : 1
let loops = arguments.count > 3 ? Int(arguments[3]) ?? 2 : 2

let group = MultiThreadedEventLoopGroup(numberOfThreads: loops)
let target = LoopCounter(loop: group.next())
let total = Total()
let done = DispatchSemaphore(value: 0)
let start = nanoseconds()
let deadline = start + UInt64(seconds * 1e9)
for _ in 0..<callers {
    Task.detached {
        var calls = 0
        while true {
            for _ in 0..<64 { _ = await target.increment() }
            calls += 64
            if nanoseconds() >= deadline { break }
        }
        total.value.add(calls, ordering: .relaxed)
        done.signal()
    }
}
for _ in 0..<callers { done.wait() }
let elapsed = Double(nanoseconds() - start) / 1e9
print("ops_per_s \(Int(Double(total.value.load(ordering: .relaxed)) / elapsed))")
try! group.syncShutdownGracefully()
