@_spi(CachedReads) @testable import Chroma
import CChroma
import Foundation
import SystemPackage
import XCTest

/// Reads the page cache answers on the loop: no pool job, and the same completion as
/// before (on the caller's color, exactly once, never inside the call) with the same
/// bytes and errors. What needs the device, what is above the inline cap or over the
/// pass budget, what is made off a loop, and everything with the path switched off goes to
/// the pool as before.
final class CachedReadTests: XCTestCase {
    private var directory: FilePath!
    private var data: FilePath!
    /// The content of `data`: 256 KiB, page-cached since it was just written.
    private let content = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }

    override func setUpWithError() throws {
        XCTAssertTrue(CachedReads.kernelSupportsNoWait, "this kernel answers RWF_NOWAIT reads")
        (directory, data) = try pageCachedFile(content)
    }

    // MARK: Helpers

    private func runtime(_ configuration: BlockingPool.Configuration = .init()) throws -> Runtime {
        try startedRuntime(pool: configuration)
    }

    private func openData() throws -> FileDescriptor { openReadOnly(data) }

    /// What a completion saw.
    private struct Completed<T: Sendable>: Sendable {
        let result: Result<T, FileError>
        let color: Color?
        /// True when it ran on the calling thread while the call was still running.
        let insideCall: Bool
    }

    /// Makes a file call in a callback on `caller` (a loop thread) and waits for its
    /// completion; `calls` counts how often the completion ran.
    private func callOnLoop<T: Sendable>(_ runtime: Runtime, caller: Color, completingOn color: Color, calls: Counter = Counter(),
                                         _ start: @escaping @Sendable (Color, @escaping Files.Completion<T>) throws -> Void) throws -> Completed<T> {
        let callingThread = Locked<pthread_t?>(nil)
        return try waitFor { (done: @escaping @Sendable (Completed<T>) -> Void) in
            try runtime.execute(on: caller) {
                callingThread.withLock { $0 = pthread_self() }
                do {
                    try start(color) { result in
                        calls.increment()
                        let inside = callingThread.snapshot.map { pthread_equal($0, pthread_self()) != 0 } ?? false
                        done(Completed(result: result, color: Color.current, insideCall: inside))
                    }
                } catch {
                    XCTFail("the call threw \(error)")
                }
                callingThread.withLock { $0 = nil }
            }
        }
    }

    /// Drops `fd`'s pages, then tells whether the page at `offset` is out of the page cache
    /// (mincore on a mapping, which does not read it in).
    private func dropPage(of fd: Int32, at offset: Int) -> Bool {
        XCTAssertEqual(chroma_drop_cached_pages(fd), 0)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let map = mmap(nil, page, PROT_READ, MAP_SHARED, fd, off_t(offset)), map != MAP_FAILED else {
            XCTFail("mmap: \(errno)")
            return true
        }
        defer { munmap(map, page) }
        var resident: UInt8 = 1
        XCTAssertEqual(mincore(map, page, &resident), 0)
        return resident & 1 == 0
    }

    /// The number of descriptors this process has open.
    private func openDescriptorCount() throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
    }

    // MARK: Answered on the loop

    func testACachedReadCompletesOnTheCallersColorOnceWithoutAPoolJob() throws {
        let runtime = try runtime()
        let fd = try openData()
        let calls = Counter()
        for (caller, target) in [(0, 0), (0, 1)] {
            let jobs = runtime.pool.submittedJobs, hits = runtime.pool.cachedReadCounts().hits
            let color = runtime.makeColor(onLoop: target)
            let completed = try callOnLoop(runtime, caller: runtime.makeColor(onLoop: caller), completingOn: color, calls: calls) {
                try runtime.files.read(from: fd, at: 12_345, count: 4096, on: $0, completion: $1)
            }
            XCTAssertEqual(try completed.result.get(), Array(content[12_345..<16_441]))
            XCTAssertEqual(completed.color, color, "the completion ran on the color it was given")
            XCTAssertFalse(completed.insideCall, "the completion was queued, not run inside the call")
            XCTAssertEqual(runtime.pool.submittedJobs, jobs, "no pool job")
            XCTAssertEqual(runtime.pool.cachedReadCounts().hits, hits + 1)
        }
        try runtime.shutdown()
        XCTAssertEqual(calls.current, 2, "each completion ran exactly once, shutdown having run everything queued")
    }

    func testAWholeFileReadFromTheCacheNeedsNoPoolJobAndLeavesNothingOpen() throws {
        let runtime = try runtime(.init(cachedReadMaxBytes: 1 << 20, cachedReadBytesPerPass: 1 << 20))
        let caller = runtime.makeColor(onLoop: 1)
        let path = data!
        _ = try callOnLoop(runtime, caller: caller, completingOn: caller) { try runtime.files.read(path, on: $0, completion: $1) }
        let jobs = runtime.pool.submittedJobs, descriptors = try openDescriptorCount()
        let completed = try callOnLoop(runtime, caller: caller, completingOn: runtime.makeColor(onLoop: 0)) {
            try runtime.files.read(path, on: $0, completion: $1)
        }
        XCTAssertEqual(try completed.result.get(), content)
        XCTAssertFalse(completed.insideCall)
        XCTAssertEqual(runtime.pool.submittedJobs, jobs, "no pool job")
        XCTAssertEqual(try openDescriptorCount(), descriptors, "the read closed what it opened")
        XCTAssertEqual(runtime.pool.cachedReadCounts(loop: 1).hits, 2, "both reads were answered on loop 1")
    }

    func testAsyncReadsOnAColorAreAnsweredWithoutAPoolJob() async throws {
        let runtime = try runtime()
        let fd = try openData()
        let color = runtime.makeColor(onLoop: 0), path = data!
        let jobs = runtime.pool.submittedJobs
        let (part, whole) = try await runtime.spawnAndWait(on: color) {
            (try await runtime.files.read(from: fd, at: 100, count: 1000), try await runtime.files.read(path))
        }
        XCTAssertEqual(part, Array(content[100..<1100]))
        XCTAssertEqual(whole, content, "the whole file needs the pool (above the inline cap) and still reads right")
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 1, "only the whole-file read, above 64 KiB, used the pool")
        XCTAssertEqual(runtime.pool.cachedReadCounts(), CachedReadCounts(hits: 1, misses: 1, overBudget: 0))
    }

    // MARK: Sent to the pool

    func testAReadThatWouldBlockGoesThroughThePoolAndCompletesOnceOnTheColor() throws {
        let runtime = try runtime(.init(cachedReadMaxBytes: 1 << 20, cachedReadBytesPerPass: 1 << 20))
        let fd = try openData()
        runtime.pool.cachedReads.forceWouldBlock.store(true, ordering: .relaxed)
        let calls = Counter()
        let color = runtime.makeColor(onLoop: 1), path = data!
        let jobs = runtime.pool.submittedJobs, descriptors = try openDescriptorCount()
        let part = try callOnLoop(runtime, caller: runtime.makeColor(onLoop: 0), completingOn: color, calls: calls) {
            try runtime.files.read(from: fd, at: 4096, count: 8192, on: $0, completion: $1)
        }
        let whole = try callOnLoop(runtime, caller: color, completingOn: color, calls: calls) {
            try runtime.files.read(path, on: $0, completion: $1)
        }
        XCTAssertEqual(try part.result.get(), Array(content[4096..<12_288]))
        XCTAssertEqual(try whole.result.get(), content)
        XCTAssertEqual([part.color, whole.color], [color, color])
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 2, "both reads went to the pool")
        XCTAssertEqual(runtime.pool.cachedReadCounts(), CachedReadCounts(hits: 0, misses: 2, overBudget: 0))
        XCTAssertEqual(try openDescriptorCount(), descriptors, "the whole-file attempt closed what it opened")
        try runtime.shutdown()
        XCTAssertEqual(calls.current, 2, "each completion ran exactly once")
    }

    func testAReadOfEvictedPagesReadsTheRightBytesOnWhicheverPathItTakes() throws {
        let runtime = try runtime()
        let fd = open(data.string, O_RDWR | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        // Clean pages only can be dropped: write them back first. Dropping is best effort
        // (a page still in a CPU's LRU batch stays), so drop until mincore shows it gone.
        XCTAssertEqual(fdatasync(fd), 0)
        XCTAssertTrue(waitUntil { dropPage(of: fd, at: 65_536) }, "the page was dropped from the page cache")
        let jobs = runtime.pool.submittedJobs
        let color = runtime.makeColor(onLoop: 0)
        let calls = Counter()
        let completed = try callOnLoop(runtime, caller: color, completingOn: color, calls: calls) {
            try runtime.files.read(from: FileDescriptor(rawValue: fd), at: 65_536, count: 4096, on: $0, completion: $1)
        }
        XCTAssertEqual(try completed.result.get(), Array(content[65_536..<69_632]))
        XCTAssertEqual(completed.color, color)
        // A RWF_NOWAIT read of an evicted page starts the device read; when the device
        // answers before the kernel looks again, the read is served without waiting. So
        // either path may be taken, and the counts must say which.
        let counts = runtime.pool.cachedReadCounts()
        XCTAssertEqual(counts.hits + counts.misses, 1, "\(counts)")
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + counts.misses, "a pool job exactly when it missed")
        try runtime.shutdown()
        XCTAssertEqual(calls.current, 1)
    }

    func testAReadLargerThanTheInlineCapUsesThePool() throws {
        let runtime = try runtime(.init(cachedReadMaxBytes: 8192, cachedReadBytesPerPass: 1 << 20))
        let fd = try openData()
        let color = runtime.makeColor(onLoop: 0)
        let jobs = runtime.pool.submittedJobs
        let big = try callOnLoop(runtime, caller: color, completingOn: color) {
            try runtime.files.read(from: fd, at: 0, count: 8193, on: $0, completion: $1)
        }
        XCTAssertEqual(try big.result.get(), Array(content[0..<8193]))
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 1)
        let capped = try callOnLoop(runtime, caller: color, completingOn: color) {
            try runtime.files.read(from: fd, at: 0, count: 8192, on: $0, completion: $1)
        }
        XCTAssertEqual(try capped.result.get(), Array(content[0..<8192]))
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 1, "a read of exactly the cap stays on the loop")
        XCTAssertEqual(runtime.pool.cachedReadCounts(), CachedReadCounts(hits: 1, misses: 0, overBudget: 0))
    }

    func testABurstPastThePassBudgetGoesToThePoolAndTheNextPassHasItsBudgetBack() throws {
        let runtime = try runtime(.init(cachedReadMaxBytes: 4096, cachedReadBytesPerPass: 16_384))
        let fd = try openData()
        let color = runtime.makeColor(onLoop: 0)
        let jobs = runtime.pool.submittedJobs
        let results = Locked<[Int: [UInt8]]>([:])
        let done = Signal()
        try runtime.execute(on: color) {
            for i in 0..<10 {
                try! runtime.files.read(from: fd, at: Int64(i) * 4096, count: 4096) { result in
                    results.withLock { $0[i] = try? result.get() }
                    done.fire()
                }
            }
        }
        XCTAssertTrue(done.wait(count: 10), "every read of the burst completed")
        for i in 0..<10 { XCTAssertEqual(results.snapshot[i], Array(content[(i * 4096)..<((i + 1) * 4096)]), "read \(i)") }
        XCTAssertEqual(runtime.pool.cachedReadCounts(), CachedReadCounts(hits: 4, misses: 0, overBudget: 6),
                       "16 KiB per pass: four 4 KiB reads on the loop, the other six on the pool")
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 6)
        // A timer's callback is a pass of its own, so the budget is whole again.
        let again: Result<[UInt8], FileError> = try waitFor { done in
            _ = try runtime.schedule(after: .zero, on: color) {
                try! runtime.files.read(from: fd, at: 0, count: 4096) { done($0) }
            }
        }
        XCTAssertEqual(try again.get(), Array(content[0..<4096]))
        XCTAssertEqual(runtime.pool.cachedReadCounts().hits, 5)
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 6)
    }

    func testWithCachedReadsSwitchedOffEveryReadIsAPoolJobAsBefore() throws {
        let runtime = try runtime(.init(cachedReads: false))
        let fd = try openData()
        let color = runtime.makeColor(onLoop: 0), path = data!
        let jobs = runtime.pool.submittedJobs
        let part = try callOnLoop(runtime, caller: color, completingOn: color) {
            try runtime.files.read(from: fd, at: 0, count: 4096, on: $0, completion: $1)
        }
        let whole = try callOnLoop(runtime, caller: color, completingOn: color) { try runtime.files.read(path, on: $0, completion: $1) }
        XCTAssertEqual(try part.result.get(), Array(content[0..<4096]))
        XCTAssertEqual(try whole.result.get(), content)
        XCTAssertEqual(part.color, color)
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 2)
        XCTAssertEqual(runtime.pool.cachedReadCounts(), CachedReadCounts())
        XCTAssertEqual(runtime.files.loadCached(path.string, cacheLimit: 1 << 20), .needsPool)
    }

    func testReadsMadeOffALoopUseThePool() throws {
        let runtime = try runtime()
        let fd = try openData()
        let jobs = runtime.pool.submittedJobs
        let bytes: Result<[UInt8], FileError> = try waitFor { done in
            try runtime.files.read(from: fd, at: 0, count: 4096, on: runtime.makeColor(), completion: done)
        }
        XCTAssertEqual(try bytes.get(), Array(content[0..<4096]))
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 1)
        XCTAssertEqual(runtime.files.loadCached(data.string, cacheLimit: 1 << 20), .needsPool)
        XCTAssertEqual(runtime.pool.cachedReadCounts(), CachedReadCounts())
    }

    func testAFileThatRefusesNoWaitReadsGoesToThePoolAndLeavesThePathOn() throws {
        let runtime = try runtime()
        let proc = open("/proc/self/stat", O_RDONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(proc, 0)
        defer { close(proc) }
        let fd = try openData()
        let color = runtime.makeColor(onLoop: 0)
        let jobs = runtime.pool.submittedJobs
        let stat = try callOnLoop(runtime, caller: color, completingOn: color) {
            try runtime.files.read(from: FileDescriptor(rawValue: proc), at: 0, count: 4096, on: $0, completion: $1)
        }
        XCTAssertFalse(try stat.result.get().isEmpty, "procfs refuses RWF_NOWAIT; the pool reads it")
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 1)
        XCTAssertTrue(runtime.pool.cachedReads.isEnabled, "one file's refusal does not turn the path off")
        _ = try callOnLoop(runtime, caller: color, completingOn: color) {
            try runtime.files.read(from: fd, at: 0, count: 4096, on: $0, completion: $1)
        }
        XCTAssertEqual(runtime.pool.submittedJobs, jobs + 1)
        XCTAssertEqual(runtime.pool.cachedReadCounts(), CachedReadCounts(hits: 1, misses: 1, overBudget: 0))
    }

    // MARK: The same errors

    func testErrorsAndShortReadsAreTheSameOnBothPaths() throws {
        let on = try runtime(), off = try runtime(.init(cachedReads: false))
        let fd = try openData()
        let directoryFD = open(directory.string, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(directoryFD, 0)
        defer { close(directoryFD) }
        let closed = FileDescriptor(rawValue: dup(fd.rawValue))
        try closed.close()
        let missing = directory.appending("missing"), dir = directory!, path = data!
        // A cached open answers ENOENT only from a cached negative lookup: make one.
        XCTAssertEqual(access(missing.string, F_OK), -1)
        let descriptorReads: [(String, FileDescriptor, Int64, Int)] = [
            ("EBADF", closed, 0, 4096), ("EISDIR", FileDescriptor(rawValue: directoryFD), 0, 4096),
            ("end of file", fd, Int64(content.count), 4096), ("short at the end", fd, Int64(content.count - 100), 4096),
            ("count 0", fd, 0, 0),
        ]
        let wholeReads: [(String, FilePath, Int)] = [("ENOENT", missing, .max), ("EISDIR", dir, .max), ("EFBIG", path, 10)]
        func both<T: Sendable & Equatable>(_ what: String,
                                           _ start: @escaping @Sendable (Runtime, Color, @escaping Files.Completion<T>) throws -> Void) throws {
            let results = try [on, off].map { runtime in
                let color = runtime.makeColor(onLoop: 0)
                return try callOnLoop(runtime, caller: color, completingOn: color) { try start(runtime, $0, $1) }.result
            }
            XCTAssertEqual(results[0], results[1], what)
        }
        for (what, descriptor, offset, count) in descriptorReads {
            try both(what) { try $0.files.read(from: descriptor, at: offset, count: count, on: $1, completion: $2) }
        }
        for (what, wholePath, maxBytes) in wholeReads {
            try both("whole file, \(what)") { try $0.files.read(wholePath, maxBytes: maxBytes, on: $1, completion: $2) }
        }
        let counts = on.pool.cachedReadCounts()
        XCTAssertEqual(counts.hits, 6, "EBADF, both ends of file, count 0, ENOENT and EFBIG were answered on the loop")
        XCTAssertEqual(counts.misses, 2, "the directories went to the pool")
        XCTAssertEqual(off.pool.cachedReadCounts(), CachedReadCounts())
    }

    // MARK: Static files

    func testLoadCachedReadsOpensOrRefusesWithoutEverBlocking() throws {
        let runtime = try runtime(.init(cachedReadMaxBytes: 1 << 20, cachedReadBytesPerPass: 4 << 20))
        let color = runtime.makeColor(onLoop: 1)
        let root = directory.string, path = data.string
        XCTAssertEqual(access(root + "/missing", F_OK), -1, "a cached negative lookup for the ENOENT case")
        let loads: [CachedFileLoad] = try waitFor { done in
            try runtime.execute(on: color) {
                let files = runtime.files
                var loads = [files.loadCached(path, cacheLimit: 1 << 20), files.loadCached(path, cacheLimit: 1000),
                             files.loadCached(root, cacheLimit: 1000), files.loadCached(root + "/missing", cacheLimit: 1000)]
                runtime.pool.cachedReads.forceWouldBlock.store(true, ordering: .relaxed)
                loads.append(files.loadCached(path, cacheLimit: 1 << 20))
                done(loads)
            }
        }
        guard case .contents(let bytes, let info) = loads[0] else { return XCTFail("read whole: \(loads[0])") }
        XCTAssertEqual(bytes, content)
        XCTAssertEqual(info.size, Int64(content.count))
        XCTAssertEqual(info.kind, .regular)
        guard case .open(let fd, let openInfo) = loads[1] else { return XCTFail("left open: \(loads[1])") }
        XCTAssertEqual(openInfo.inode, info.inode)
        var first: UInt8 = 0
        XCTAssertEqual(pread(fd, &first, 1, 0), 1)
        XCTAssertEqual(first, content[0])
        close(fd)
        XCTAssertEqual(loads[2], .directory)
        XCTAssertEqual(loads[3], .failed(ENOENT))
        XCTAssertEqual(loads[4], .needsPool)
        XCTAssertEqual(runtime.pool.cachedReadCounts(loop: 1), CachedReadCounts(hits: 4, misses: 1, overBudget: 0))
    }
}

extension CachedReadCounts {
    init(hits: Int, misses: Int, overBudget: Int) {
        self.init()
        self.hits = hits
        self.misses = misses
        self.overBudget = overBudget
    }
}
