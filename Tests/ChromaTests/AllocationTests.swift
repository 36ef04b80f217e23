import CAllocCounter
@_spi(CachedReads) @_spi(Engine) import Chroma
import ChromaHTTP
import Foundation
import Synchronization
import SystemPackage
import XCTest

/// Allocation budgets for the hot paths, so a change that adds a `malloc` per callback or
/// per request fails here rather than in a benchmark table. Counts are `malloc` calls on
/// the thread that does the work (`Benchmarks/CAllocCounter` interposes `malloc` in the
/// test binary), after a warm-up that lets queues and caches reach their working size.
/// Under a sanitizer, which owns `malloc`, there is nothing to count and these skip.
final class AllocationTests: XCTestCase {
    /// `malloc` calls on the loop thread per keep-alive `GET /hello` in the debug build the
    /// suite runs: 27.0 when this budget was set (evhttp's request, its header lists and
    /// buffers, the request and answer values), plus half a call of room for rare work
    /// such as the once-a-second date refresh. One more allocation per request fails it.
    static let helloBudget = 27.5

    override func setUpWithError() throws {
        try XCTSkipUnless(chroma_alloc_counter_is_active() == 1, "a sanitizer owns malloc: nothing to count")
    }

    /// The loop thread's `malloc` count, read there by a job on `color`.
    private func loopMallocs(_ runtime: Runtime, _ color: Color) throws -> UInt64 {
        try waitFor("the loop's malloc count") { done in
            try? runtime.execute(on: color) { done(chroma_bench_thread_mallocs()) }
        }
    }

    func testExecutingAContextFreeFunctionAllocatesNothing() throws {
        let runtime = try startedRuntime(loops: 1)
        let color = runtime.makeColor(onLoop: 0)
        let count = 20_000
        func postAll() throws {
            for _ in 0..<count { try runtime.execute(on: color, context: nil, countRun) }
        }
        try postAll()  // warm-up: the mailbox and the loop's queue reach their size
        XCTAssertTrue(waitUntil { functionRuns.load(ordering: .relaxed) == count })
        let loopBefore = try loopMallocs(runtime, color)
        let posterBefore = chroma_bench_thread_mallocs()
        try postAll()
        let posted = chroma_bench_thread_mallocs() - posterBefore
        XCTAssertTrue(waitUntil { functionRuns.load(ordering: .relaxed) == 2 * count })
        let ran = try loopMallocs(runtime, color) - loopBefore
        XCTAssertEqual(posted, 0, "posting \(count) function jobs from outside the runtime")
        XCTAssertEqual(ran, 0, "running \(count) function jobs on the loop")

        // The same from the loop: each job queues the next on its own color.
        chainLeft.store(count, ordering: .relaxed)
        chainColor.store(color.rawValue, ordering: .relaxed)
        chainRuntime.withLock { $0 = runtime }
        try runtime.execute(on: color, context: nil, chainStep)
        XCTAssertTrue(waitUntil { chainDone.load(ordering: .acquiring) })
        XCTAssertEqual(chainMallocs.load(ordering: .relaxed), 0, "\(count) function jobs each queued by the one before, on the loop")
    }

    func testReadsTheCacheAnswersThroughAFileReaderAllocateNothing() throws {
        let runtime = try startedRuntime(loops: 1)
        let directory = try noWaitDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory.string) }
        let path = directory.appending("data.bin").string
        try Data(repeating: 7, count: 64 << 10).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let warmUp = 1_000, measured = 10_000
        let counts = ReaderCounts()
        let color = runtime.makeColor(onLoop: 0)
        let hits = runtime.pool.cachedReadCounts().hits
        let reader = runtime.files.reader(for: FileDescriptor(rawValue: fd), capacity: 4096, on: color) { reader, result in
            let n = counts.completed.add(1, ordering: .relaxed).newValue
            if case .failure = result { counts.failures.add(1, ordering: .relaxed) }
            if n == warmUp { counts.start.store(chroma_bench_thread_mallocs(), ordering: .relaxed) }
            if n == warmUp + measured {
                counts.end.store(chroma_bench_thread_mallocs(), ordering: .relaxed)
                counts.done.store(true, ordering: .releasing)
                return
            }
            do { try reader.read(at: Int64(n * 4096 % (64 << 10)), count: 4096) } catch { counts.failures.add(1, ordering: .relaxed) }
        }
        try runtime.execute(on: color) {
            do { try reader.read(at: 0, count: 4096) } catch { counts.failures.add(1, ordering: .relaxed) }
        }
        XCTAssertTrue(waitUntil { counts.done.load(ordering: .acquiring) }, "every read completed")
        XCTAssertEqual(counts.failures.load(ordering: .relaxed), 0)
        XCTAssertEqual(runtime.pool.cachedReadCounts().hits - hits, warmUp + measured, "every read was answered on the loop")
        XCTAssertEqual(counts.end.load(ordering: .relaxed) - counts.start.load(ordering: .relaxed), 0,
                       "\(measured) reads through one FileReader, each queued by the handler before, on the loop")
    }

    /// `ByteArray.make` is one allocation, the array's storage: a boxed closure or a second
    /// buffer would show here.
    func testMakingAByteArrayIsOneAllocation() {
        let source = ByteArrayTests.Pattern(wanted: 4096)
        _ = ByteArray.make(count: 4096, source)  // warm-up
        let before = chroma_bench_thread_mallocs()
        for _ in 0..<1000 { _ = ByteArray.make(count: 4096, source) }
        XCTAssertEqual(chroma_bench_thread_mallocs() - before, 1000)
    }

    func testAHelloRequestStaysWithinItsAllocationBudget() throws {
        let runtime = try startedRuntime(loops: 1)
        var routes = HTTPRoutes()
        let hello = HTTPResponse(text: "Hello, World!")
        routes.get("/hello") { request in request.respond(hello) }
        let server = try runtime.serveHTTP(host: "127.0.0.1", port: 0, routes: routes)
        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        let probe = runtime.makeColor(onLoop: 0)
        for _ in 0..<100 { XCTAssertEqual(client.get("/hello")?.status, 200) }
        let before = try loopMallocs(runtime, probe)
        let requests = 1_000
        var answered = 0
        for _ in 0..<requests where client.get("/hello")?.text == "Hello, World!" { answered += 1 }
        let perRequest = Double(try loopMallocs(runtime, probe) - before) / Double(requests)
        XCTAssertEqual(answered, requests)
        XCTAssertLessThanOrEqual(perRequest, Self.helloBudget, "mallocs per GET /hello on the loop thread")
        print("GET /hello: \(perRequest) mallocs per request on the loop thread (budget \(Self.helloBudget))")
    }
}

/// What the FileReader allocation test's handler saw (atomics: nothing to allocate).
private final class ReaderCounts: Sendable {
    let completed = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let start = Atomic<UInt64>(0)
    let end = Atomic<UInt64>(0)
    let done = Atomic<Bool>(false)
}

private let functionRuns = Atomic<Int>(0)

private func countRun(_: UnsafeMutableRawPointer?) {
    functionRuns.add(1, ordering: .relaxed)
}

private let chainLeft = Atomic<Int>(0)
private let chainColor = Atomic<UInt64>(0)
private let chainStart = Atomic<UInt64>(.max)
private let chainMallocs = Atomic<UInt64>(.max)
private let chainDone = Atomic<Bool>(false)
private let chainRuntime = Locked<Runtime?>(nil)

/// One link of the chain: the first notes the loop thread's count, the last how far it got.
private func chainStep(_: UnsafeMutableRawPointer?) {
    let now = chroma_bench_thread_mallocs()
    if chainStart.load(ordering: .relaxed) == .max { chainStart.store(now, ordering: .relaxed) }
    guard chainLeft.subtract(1, ordering: .relaxed).newValue > 0 else {
        chainMallocs.store(now - chainStart.load(ordering: .relaxed), ordering: .relaxed)
        chainDone.store(true, ordering: .releasing)
        return
    }
    let runtime = chainRuntime.withLock { $0 }!
    try? runtime.execute(on: Color(chainColor.load(ordering: .relaxed)), context: nil, chainStep)
}
