@_spi(CachedReads) @testable import Chroma
import Foundation
import SystemPackage
import XCTest

/// `FileReader`: reads one after another into one buffer, each handler on the reader's
/// color, exactly once, never inside `read`; from the page cache on the loop with no pool
/// job, through the pool when the device is needed or the caller is off a loop; the same
/// errors as `Files.read(from:at:count:)`; cancellation, misuse and shutdown.
final class FileReaderTests: XCTestCase {
    private var directory: FilePath!
    private var data: FilePath!
    /// The content of `data`: 256 KiB, page-cached since it was just written.
    private let content = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ $0 >> 10) }

    override func setUpWithError() throws {
        (directory, data) = try pageCachedFile(content)
    }

    private func runtime(_ configuration: BlockingPool.Configuration = .init()) throws -> Runtime {
        try startedRuntime(pool: configuration)
    }

    private func openData() throws -> FileDescriptor { openReadOnly(data) }

    /// What one handler saw.
    private struct Seen: Sendable {
        let result: Result<Int, FileError>
        let offset: Int64
        let bytes: [UInt8]
        let color: Color?
        /// True when it ran on a thread whose `read` call was still on the stack.
        let insideRead: Bool
    }

    /// Reads `reads` (offset, count) one after another with a reader on `color`: the first
    /// started in a callback on `caller`, each next one by the handler before. Returns what
    /// every handler saw.
    private func chain(_ runtime: Runtime, _ fd: FileDescriptor, capacity: Int = 8192, caller: Color, on color: Color,
                       _ reads: [(Int64, Int)]) throws -> [Seen] {
        let seen = Locked<[Seen]>([])
        // The thread inside a `read` call, if any (the handler may run on another loop's
        // thread while the caller is still returning).
        let inRead = Locked<pthread_t?>(nil)
        @Sendable func insideRead() -> Bool { inRead.snapshot.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
        let done = Signal()
        let reader = runtime.files.reader(for: fd, capacity: capacity, on: color) { reader, result in
            let bytes = reader.withUnsafeBytes { Array($0) }
            let count = seen.withLock {
                $0.append(Seen(result: result, offset: reader.offset, bytes: bytes, color: Color.current, insideRead: insideRead()))
                return $0.count
            }
            guard count < reads.count else { return done.fire() }
            inRead.withLock { $0 = pthread_self() }
            do { try reader.read(at: reads[count].0, count: reads[count].1) } catch { XCTFail("read \(count): \(error)") }
            inRead.withLock { $0 = nil }
        }
        try runtime.execute(on: caller) {
            inRead.withLock { $0 = pthread_self() }
            do { try reader.read(at: reads[0].0, count: reads[0].1) } catch { XCTFail("read 0: \(error)") }
            inRead.withLock { $0 = nil }
        }
        XCTAssertTrue(done.wait(), "every read's handler ran")
        return seen.snapshot
    }

    private func expected(_ offset: Int64, _ count: Int) -> [UInt8] {
        let start = min(Int(offset), content.count)
        return Array(content[start..<min(start + count, content.count)])
    }

    // MARK: Reading

    func testReadsOneAfterAnotherFromTheCacheNeedNoPoolJobAndRunOnTheColor() throws {
        let runtime = try runtime()
        let fd = try openData()
        let reads: [(Int64, Int)] = (0..<100).map { (i: Int) -> (Int64, Int) in
            let offset = Int64((i &* 7_919) % 250_000)
            return (offset, 1 + (i &* 131) % 8192)
        }
        for (caller, target) in [(0, 0), (0, 1)] {
            let jobs = runtime.pool.submittedJobs, hits = runtime.pool.cachedReadCounts().hits
            let color = runtime.makeColor(onLoop: target)
            let seen = try chain(runtime, fd, caller: runtime.makeColor(onLoop: caller), on: color, reads)
            XCTAssertEqual(seen.count, reads.count)
            for (i, one) in seen.enumerated() {
                XCTAssertEqual(try one.result.get(), reads[i].1, "read \(i)")
                XCTAssertEqual(one.bytes, expected(reads[i].0, reads[i].1), "read \(i)'s bytes")
                XCTAssertEqual(one.offset, reads[i].0, "read \(i)'s offset")
                XCTAssertEqual(one.color, color, "read \(i) completed on the reader's color")
                XCTAssertFalse(one.insideRead, "read \(i)'s handler was queued, not run inside read")
            }
            XCTAssertEqual(runtime.pool.submittedJobs, jobs, "no pool job")
            XCTAssertEqual(runtime.pool.cachedReadCounts().hits, hits + reads.count)
        }
    }

    func testReadsThatWouldBlockGoThroughThePoolIntoTheSameBuffer() throws {
        let runtime = try runtime()
        let fd = try openData()
        runtime.pool.cachedReads.forceWouldBlock.store(true, ordering: .relaxed)
        let jobs = runtime.pool.submittedJobs
        let color = runtime.makeColor(onLoop: 1)
        let reads: [(Int64, Int)] = [(0, 8192), (100_000, 4096), (Int64(content.count - 10), 8192), (Int64(content.count), 8192)]
        let seen = try chain(runtime, fd, caller: color, on: color, reads)
        XCTAssertEqual(seen.map { try? $0.result.get() }, [8192, 4096, 10, 0], "the end of the file shortens the last two")
        for (i, one) in seen.enumerated() {
            XCTAssertEqual(one.bytes, expected(reads[i].0, reads[i].1), "read \(i)'s bytes")
            XCTAssertEqual(one.color, color)
        }
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 4, "each read was a pool job")
        XCTAssertEqual(runtime.pool.cachedReadCounts(), CachedReadCounts(hits: 0, misses: 4, overBudget: 0))
    }

    func testReadsStartedOffALoopUseThePoolAndCompleteOnTheColor() throws {
        let runtime = try runtime()
        let fd = try openData()
        let color = runtime.makeColor(onLoop: 1)
        let jobs = runtime.pool.submittedJobs
        let seen: Seen = try waitFor { done in
            let reader = runtime.files.reader(for: fd, capacity: 4096, on: color) { reader, result in
                done(Seen(result: result, offset: reader.offset, bytes: reader.withUnsafeBytes { Array($0) }, color: Color.current, insideRead: false))
            }
            try reader.read(at: 5_000, count: 4096)
        }
        XCTAssertEqual(try seen.result.get(), 4096)
        XCTAssertEqual(seen.bytes, expected(5_000, 4096))
        XCTAssertEqual(seen.color, color)
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 1)
    }

    // MARK: Errors

    func testErrorsAndShortReadsAreThoseOfFilesReadOnBothPaths() throws {
        // Both runtimes first: their descriptors must not reuse the closed one's number.
        let runtimes = [try runtime(), try runtime(.init(cachedReads: false))]
        let fd = try openData()
        let directoryFD = open(directory.string, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(directoryFD, 0)
        defer { close(directoryFD) }
        let closed = FileDescriptor(rawValue: dup(fd.rawValue))
        try closed.close()
        let cases: [(String, FileDescriptor, Int64, Int)] = [
            ("EBADF", closed, 0, 4096), ("EISDIR", FileDescriptor(rawValue: directoryFD), 0, 4096),
            ("end of file", fd, Int64(content.count), 4096), ("short at the end", fd, Int64(content.count - 100), 4096),
            ("count 0", fd, 0, 0), ("negative offset", fd, -1, 10),
        ]
        for runtime in runtimes {
            let color = runtime.makeColor(onLoop: 0)
            for (what, descriptor, offset, count) in cases {
                let viaReader = try chain(runtime, descriptor, capacity: 4096, caller: color, on: color, [(offset, count)])[0]
                let viaFiles: Result<[UInt8], FileError> = try waitFor { done in
                    try runtime.execute(on: color) {
                        do { try runtime.files.read(from: descriptor, at: offset, count: count, on: color, completion: done) } catch { XCTFail("\(error)") }
                    }
                }
                switch (viaReader.result, viaFiles) {
                case (.success(let n), .success(let bytes)):
                    XCTAssertEqual(n, bytes.count, what)
                    XCTAssertEqual(viaReader.bytes, bytes, what)
                case (.failure(let a), .failure(let b)):
                    if what == "negative offset" {
                        guard case .invalidArgument = a.code, case .invalidArgument = b.code else { return XCTFail("\(what): \(a), \(b)") }
                        XCTAssertEqual(a.descriptor, b.descriptor)
                    } else {
                        XCTAssertEqual(a, b, what)
                    }
                    XCTAssertEqual(viaReader.bytes, [], "\(what): a failed read has no bytes")
                default:
                    XCTFail("\(what): reader \(viaReader.result), files \(viaFiles)")
                }
            }
        }
    }

    func testACountAboveTheCapacityFailsThroughTheHandlerAndTheReaderReadsOn() throws {
        let runtime = try runtime()
        let fd = try openData()
        let color = runtime.makeColor(onLoop: 0)
        let seen = try chain(runtime, fd, capacity: 1024, caller: color, on: color, [(0, 1025), (0, 1024)])
        guard case .failure(let error) = seen[0].result, case .invalidArgument(let detail) = error.code else {
            return XCTFail("count 1025 over capacity 1024: \(seen[0].result)")
        }
        XCTAssertEqual(error.operation, "read")
        XCTAssertEqual(error.descriptor, fd)
        XCTAssertTrue(detail.contains("0...1024"), detail)
        XCTAssertFalse(seen[0].insideRead)
        XCTAssertEqual(try seen[1].result.get(), 1024)
        XCTAssertEqual(seen[1].bytes, expected(0, 1024))
    }

    // MARK: Cancel, misuse, shutdown

    func testACancelledReadReportsCancelledOnceAndTheReaderReadsAgain() throws {
        let runtime = try runtime(.init(workers: 1))
        let fd = try openData()
        runtime.pool.cachedReads.forceWouldBlock.store(true, ordering: .relaxed)
        let color = runtime.makeColor(onLoop: 0)
        // The pool's only worker waits until released, so the read stays queued.
        let worker = Signal(), release = Signal()
        try runtime.blocking(on: color) { worker.fire(); _ = release.wait() } completion: { _ in }
        XCTAssertTrue(worker.wait(), "the worker is busy")
        let results = Locked<[Result<Int, FileError>]>([])
        let second = Signal()
        let want = expected(8192, 4096)
        let reader = runtime.files.reader(for: fd, capacity: 4096, on: color) { reader, result in
            let count = results.withLock {
                $0.append(result)
                return $0.count
            }
            if count == 1 {
                do { try reader.read(at: 8192, count: 4096) } catch { XCTFail("the read after the cancel: \(error)") }
            } else {
                XCTAssertEqual(reader.withUnsafeBytes { Array($0) }, want)
                second.fire()
            }
        }
        let cancelled: Bool = try waitFor { done in
            try runtime.execute(on: color) {
                do { try reader.read(at: 0, count: 4096) } catch { XCTFail("\(error)") }
                done(reader.cancel())
            }
        }
        XCTAssertTrue(cancelled, "the queued read was cancelled")
        release.fire()
        XCTAssertTrue(second.wait(), "the read after the cancelled one completed")
        try runtime.shutdown()
        let all = results.snapshot
        XCTAssertEqual(all.count, 2, "one handler per read, the cancelled one included")
        guard case .failure(let error) = all.first, error.code == .cancelled else { return XCTFail("first: \(String(describing: all.first))") }
        XCTAssertEqual(try all.last?.get(), 4096)
    }

    /// A second `read` while one is in flight traps. Checked in a child process running
    /// this one test.
    func testAReadWhileOneIsInFlightTraps() throws {
        if ProcessInfo.processInfo.environment["CHROMA_TRAP_CHILD"] == "1" {
            let runtime = try runtime()
            let fd = try openData()
            let reader = runtime.files.reader(for: fd, capacity: 4096, on: runtime.makeColor(onLoop: 0)) { _, _ in }
            try reader.read(at: 0, count: 4096)
            try reader.read(at: 0, count: 4096)
            XCTFail("a second read while one was in flight returned")
            return
        }
        let status = try runThisTestInChild("ChromaTests.FileReaderTests/testAReadWhileOneIsInFlightTraps")
        XCTAssertTrue(status.signaled, "the child trapped (status \(status))")
    }

    func testAReadAfterShutdownThrowsAndNoHandlerRuns() throws {
        let runtime = try runtime()
        let fd = try openData()
        let calls = Counter()
        let reader = runtime.files.reader(for: fd, capacity: 4096, on: runtime.makeColor(onLoop: 0)) { _, _ in calls.increment() }
        try runtime.shutdown()
        XCTAssertThrowsError(try reader.read(at: 0, count: 4096)) { error in
            guard case ChromaError.shutDown(let operation) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(operation, "read")
        }
        XCTAssertThrowsError(try reader.read(at: 0, count: 4096), "a refused read leaves the reader free for the next call")
        XCTAssertEqual(calls.current, 0)
    }
}
