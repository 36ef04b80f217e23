@testable import Chroma
import Foundation
import SystemPackage
import XCTest

/// `runtime.files`: every operation on real files in a temporary directory, its typed
/// errors, and the stress, atomicity and lane behaviour the pool promises for files.
final class FilesTests: XCTestCase {
    private var directory: FilePath!
    private var runtime: Runtime!

    override func setUpWithError() throws {
        var template = Array("/tmp/chroma-files-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        XCTAssertNotNil(made)
        directory = FilePath(String(cString: template))
        runtime = try startedRuntime(loops: 2)
    }

    override func tearDownWithError() throws {
        if let directory { try? FileManager.default.removeItem(atPath: directory.string) }
    }

    private var files: Files { runtime.files }

    private func path(_ name: String) -> FilePath { directory.appending(name) }

    /// Runs one file call and waits for its completion; also checks it ran on `color`.
    private func call<T: Sendable>(on color: Color = Color(3), file: StaticString = #filePath, line: UInt = #line,
                                   _ start: (Color, @escaping Files.Completion<T>) throws -> Void) throws -> Result<T, FileError> {
        let (result, ranOn) = try waitFor { (done: @escaping @Sendable ((Result<T, FileError>, Color?)) -> Void) in
            try start(color) { done(($0, Color.current)) }
        }
        XCTAssertEqual(ranOn, color, "the completion ran on the caller's color", file: file, line: line)
        return result
    }

    private func success<T: Sendable>(file: StaticString = #filePath, line: UInt = #line,
                                      _ start: (Color, @escaping Files.Completion<T>) throws -> Void) throws -> T {
        try call(file: file, line: line, start).get()
    }

    private func failure<T: Sendable>(file: StaticString = #filePath, line: UInt = #line,
                                      _ start: (Color, @escaping Files.Completion<T>) throws -> Void) throws -> FileError {
        switch try call(file: file, line: line, start) {
        case .success(let value):
            XCTFail("expected an error, got \(value)", file: file, line: line)
            throw TimedOut(what: "an error")
        case .failure(let error):
            return error
        }
    }

    // MARK: Every operation succeeds

    func testDescriptorOperations() throws {
        let p = path("data.bin")
        let fd = try success { try files.open(p, .readWrite, options: [.create, .exclusiveCreate], permissions: [.ownerReadWrite], on: $0, completion: $1) }
        let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try success { try files.write(bytes, to: fd, at: 100, on: $0, completion: $1) }
        try success { try files.fsync(fd, on: $0, completion: $1) }
        try success { try files.fdatasync(fd, on: $0, completion: $1) }
        let back = try success { try files.read(from: fd, at: 100, count: bytes.count, on: $0, completion: $1) }
        XCTAssertEqual(back, bytes)
        let head = try success { try files.read(from: fd, at: 0, count: 100, on: $0, completion: $1) }
        XCTAssertEqual(head, [UInt8](repeating: 0, count: 100), "the hole before offset 100 reads as zeros")
        let tail = try success { try files.read(from: fd, at: 10_050, count: 1000, on: $0, completion: $1) }
        XCTAssertEqual(tail, Array(bytes[9950...]), "a read past the end returns what is there")
        let info = try success { try files.stat(fd, on: $0, completion: $1) }
        XCTAssertEqual(info.size, 10_100)
        XCTAssertEqual(info.kind, .regular)
        XCTAssertEqual(info.permissions, [.ownerReadWrite])
        try success { try files.truncate(fd, to: 50, on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.stat(fd, on: $0, completion: $1) }.size, 50)
        try success { try files.close(fd, on: $0, completion: $1) }
        XCTAssertEqual(fcntl(fd.rawValue, F_GETFD), -1, "the descriptor is closed")
    }

    func testWholeFileReadAndWrite() throws {
        let p = path("whole.txt")
        let text = Array("hello, colors\n".utf8)
        try success { try files.write(text, to: p, on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.read(p, on: $0, completion: $1) }, text)
        let replacement = Array("atomically replaced\n".utf8)
        try success { try files.write(replacement, to: p, atomic: true, on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.read(p, on: $0, completion: $1) }, replacement)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.string), ["whole.txt"],
                       "no temporary file is left behind")
        // Empty files and files without a size (procfs) read whole too.
        try success { try files.write([], to: path("empty"), on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.read(path("empty"), on: $0, completion: $1) }, [])
        let status = try success { try files.read("/proc/self/status", on: $0, completion: $1) }
        XCTAssertTrue(String(decoding: status, as: UTF8.self).contains("Pid:"))
    }

    /// A file above 1 MiB starts in the short lane and finishes in the long one; its bytes
    /// arrive intact.
    func testBigWholeFileReadContinuesInTheLongLane() throws {
        let p = path("big.bin")
        var bytes = [UInt8](repeating: 0, count: 3 << 20 + 123)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i ^ (i >> 11)) }
        try success { try files.write(bytes, to: p, on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.read(p, on: $0, completion: $1) }, bytes)
    }

    func testPathOperations() throws {
        let nested = path("a/b/c")
        try success { try files.makeDirectory(nested, withIntermediates: true, on: $0, completion: $1) }
        try success { try files.makeDirectory(nested, withIntermediates: true, on: $0, completion: $1) }
        try success { try files.makeDirectory(path("plain"), on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.stat(nested, on: $0, completion: $1) }.kind, .directory)
        try success { try files.write(Array("x".utf8), to: path("a/file"), on: $0, completion: $1) }
        XCTAssertEqual(symlink("file", path("a/link").string), 0)
        XCTAssertEqual(try success { try files.lstat(path("a/link"), on: $0, completion: $1) }.kind, .symbolicLink)
        XCTAssertEqual(try success { try files.stat(path("a/link"), on: $0, completion: $1) }.kind, .regular)
        let entries = try success { try files.list(path("a"), on: $0, completion: $1) }
        XCTAssertEqual(Set(entries.map(\.name)), ["b", "file", "link"])
        XCTAssertEqual(entries.first { $0.name == "b" }?.kind, .directory)
        XCTAssertEqual(entries.first { $0.name == "file" }?.kind, .regular)
        try success { try files.rename(path("a/file"), to: path("a/renamed"), on: $0, completion: $1) }
        try success { try files.truncate(path("a/renamed"), to: 4096, on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.stat(path("a/renamed"), on: $0, completion: $1) }.size, 4096)
        try success { try files.remove(path("a/renamed"), on: $0, completion: $1) }
        try success { try files.remove(path("a/link"), on: $0, completion: $1) }
        try success { try files.remove(nested, on: $0, completion: $1) }
        try success { try files.remove(path("a/b"), on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.list(path("a"), on: $0, completion: $1) }, [])
    }

    // MARK: Typed errors

    func testNoSuchFile() throws {
        let missing = path("missing")
        let error = try failure { try files.read(missing, on: $0, completion: $1) }
        XCTAssertEqual(error, FileError(operation: "read", path: missing, code: .system(.noSuchFileOrDirectory)))
        XCTAssertTrue(error.description.hasPrefix("read \(missing): No such file or directory"), error.description)
        XCTAssertEqual(try failure { try files.stat(missing, on: $0, completion: $1) }.errno, .noSuchFileOrDirectory)
        XCTAssertEqual(try failure { try files.remove(missing, on: $0, completion: $1) }.errno, .noSuchFileOrDirectory)
        XCTAssertEqual(try failure { try files.rename(missing, to: path("x"), on: $0, completion: $1) },
                       FileError(operation: "rename", path: missing, code: .system(.noSuchFileOrDirectory)))
        XCTAssertEqual(try failure { try files.list(missing, on: $0, completion: $1) }.errno, .noSuchFileOrDirectory)
        XCTAssertEqual(try failure { try files.makeDirectory(path("no/such/parent"), on: $0, completion: $1) }.errno,
                       .noSuchFileOrDirectory)
    }

    func testPermissionDenied() throws {
        // Root ignores permission bits on ordinary files, but not the mode of a read-only
        // sysctl; everyone else is refused a file with no permissions.
        let target: FilePath
        if geteuid() == 0 {
            target = "/proc/sys/kernel/ngroups_max"
        } else {
            target = path("locked")
            try success { try files.write([1], to: target, permissions: [], on: $0, completion: $1) }
        }
        let error = try failure { try files.open(target, .writeOnly, on: $0, completion: $1) }
        XCTAssertEqual(error, FileError(operation: "open", path: target, code: .system(.permissionDenied)))
        XCTAssertEqual(try failure { try files.write([1], to: target, on: $0, completion: $1) }.errno, .permissionDenied)
    }

    func testIsADirectory() throws {
        let error = try failure { try files.read(directory, on: $0, completion: $1) }
        XCTAssertEqual(error.errno, .isDirectory)
        XCTAssertEqual(error.path, directory)
        XCTAssertEqual(try failure { try files.open(directory, .writeOnly, on: $0, completion: $1) },
                       FileError(operation: "open", path: directory, code: .system(.isDirectory)))
        XCTAssertEqual(try failure { try files.write([1], to: directory, on: $0, completion: $1) }.errno, .isDirectory)
    }

    func testNotADirectory() throws {
        try success { try files.write([1], to: path("file"), on: $0, completion: $1) }
        let inside = path("file/child")
        XCTAssertEqual(try failure { try files.stat(inside, on: $0, completion: $1) },
                       FileError(operation: "stat", path: inside, code: .system(.notDirectory)))
        XCTAssertEqual(try failure { try files.list(path("file"), on: $0, completion: $1) }.errno, .notDirectory)
        XCTAssertEqual(try failure { try files.read(inside, on: $0, completion: $1) }.errno, .notDirectory)
    }

    func testBadDescriptor() throws {
        let bad = FileDescriptor(rawValue: 1_000_000)
        XCTAssertEqual(try failure { try files.read(from: bad, at: 0, count: 10, on: $0, completion: $1) },
                       FileError(operation: "read", descriptor: bad, code: .system(.badFileDescriptor)))
        XCTAssertEqual(try failure { try files.write([1], to: bad, at: 0, on: $0, completion: $1) }.errno, .badFileDescriptor)
        XCTAssertEqual(try failure { try files.fsync(bad, on: $0, completion: $1) },
                       FileError(operation: "fsync", descriptor: bad, code: .system(.badFileDescriptor)))
        XCTAssertEqual(try failure { try files.stat(bad, on: $0, completion: $1) }.errno, .badFileDescriptor)
        XCTAssertEqual(try failure { try files.close(bad, on: $0, completion: $1) }.errno, .badFileDescriptor)
        XCTAssertEqual(try failure { try files.truncate(bad, to: 0, on: $0, completion: $1) }.errno, .badFileDescriptor)
    }

    func testTooManyOpenFiles() throws {
        try success { try files.write([1], to: path("f"), on: $0, completion: $1) }
        var limit = rlimit()
        XCTAssertEqual(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit), 0)
        let saved = limit
        // Room for what is open now plus a few (and the holes below the highest open
        // descriptor): opens must hit EMFILE before filling all of it.
        let highest = (0..<Int32(4096)).last { fcntl($0, F_GETFD) != -1 } ?? 0
        limit.rlim_cur = rlim_t(highest + 8)
        XCTAssertEqual(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit), 0)
        var opened: [FileDescriptor] = []
        defer {
            for fd in opened { _ = try? fd.close() }
            var restore = saved
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &restore)
        }
        var emfile: FileError?
        for _ in 0..<(Int(highest) + 16) {
            switch try call({ try files.open(path("f"), .readOnly, on: $0, completion: $1) }) {
            case .success(let fd): opened.append(fd)
            case .failure(let error): emfile = error
            }
            if emfile != nil { break }
        }
        XCTAssertEqual(emfile, FileError(operation: "open", path: path("f"), code: .system(.tooManyOpenFiles)))
        // Descriptors freed, opens work again.
        for fd in opened { try fd.close() }
        opened.removeAll()
        opened.append(try success { try files.open(path("f"), .readOnly, on: $0, completion: $1) })
    }

    func testNegativeArgumentsAreRefused() throws {
        let fd = FileDescriptor(rawValue: 0)
        let error = try failure { try files.read(from: fd, at: -1, count: 1, on: $0, completion: $1) }
        guard case .invalidArgument = error.code else { return XCTFail("\(error)") }
        XCTAssertEqual(error.operation, "read")
        XCTAssertEqual(error.descriptor, fd)
        guard case .invalidArgument = try failure({ try files.truncate(path("x"), to: -5, on: $0, completion: $1) }).code else {
            return XCTFail("truncate to a negative size")
        }
    }

    // MARK: Atomic writes

    /// A failure between writing the temporary file and renaming it (injected, as a crash or
    /// a full disk would cause) leaves the old file intact and no temporary file behind.
    func testInterruptedAtomicWriteLeavesTheOldFileIntact() throws {
        let p = path("config.json")
        let old = Array("{\"version\": 1}".utf8)
        try success { try files.write(old, to: p, atomic: true, on: $0, completion: $1) }
        FileFailpoints.set { step, target in step == .afterTempWrite && target == p ? .noSpace : nil }
        defer { FileFailpoints.set(nil) }
        let error = try failure { try files.write(Array("{\"version\": 2, \"half\"".utf8), to: p, atomic: true, on: $0, completion: $1) }
        XCTAssertEqual(error, FileError(operation: "write.injected", path: p, code: .system(.noSpace)))
        XCTAssertEqual(try success { try files.read(p, on: $0, completion: $1) }, old, "the old content is intact")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.string), ["config.json"],
                       "the temporary file was removed")
        FileFailpoints.set(nil)
        let new = Array("{\"version\": 2}".utf8)
        try success { try files.write(new, to: p, atomic: true, on: $0, completion: $1) }
        XCTAssertEqual(try success { try files.read(p, on: $0, completion: $1) }, new)
    }

    // MARK: Stress

    /// 100,000 concurrent 4 KiB preads of a 64 MiB file from 100 colors: every buffer holds
    /// the right bytes and every completion ran on its submitting color.
    func testConcurrentPreadsFromManyColors() throws {
        let reads = underTSan ? 20_000 : 100_000
        let fileSize = 64 << 20
        let p = path("64m.bin")
        // Each 8-byte word holds its own offset: any misplaced byte shows.
        var content = [UInt8](repeating: 0, count: fileSize)
        content.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in words.indices { words[i] = UInt64(i * 8).littleEndian }
        }
        try success { try files.write(content, to: p, on: $0, completion: $1) }
        content = []
        let stress = try Runtime(loops: 2, pool: .init(queueCapacity: reads))
        try stress.start()
        defer { _ = try? stress.shutdown() }
        let fd = try FileDescriptor.open(p, .readOnly)
        defer { try? fd.close() }
        let bad = Counter()
        let wrongColor = Counter()
        let done = Signal()
        let blocks = fileSize / 4096
        for i in 0..<reads {
            let color = Color(UInt64(i % 100))
            // Offsets 8-byte aligned but not block aligned, so reads straddle pages.
            let offset = Int64((i &* 7919) % blocks) * 4096 + Int64((i % 64) * 8)
            try stress.files.read(from: fd, at: offset, count: 4096, on: color) { result in
                if Color.current != color { wrongColor.increment() }
                switch result {
                case .success(let bytes):
                    let expectedCount = min(4096, fileSize - Int(offset))
                    var ok = bytes.count == expectedCount
                    if ok {
                        bytes.withUnsafeBytes { raw in
                            for w in 0..<(raw.count / 8) where raw.loadUnaligned(fromByteOffset: w * 8, as: UInt64.self) != UInt64(Int(offset) + w * 8).littleEndian {
                                ok = false
                                break
                            }
                        }
                    }
                    if !ok { bad.increment() }
                case .failure:
                    bad.increment()
                }
                done.fire()
            }
        }
        XCTAssertTrue(done.wait(count: reads, seconds: 120), "every read completed")
        XCTAssertEqual(bad.current, 0, "every buffer held the right bytes")
        XCTAssertEqual(wrongColor.current, 0, "every completion ran on its submitting color")
    }

    func testCancelledFileOperationReportsCancelled() throws {
        let held = try Runtime(loops: 1, pool: .init(workers: 1))
        try held.start()
        defer { _ = try? held.shutdown() }
        let gate = Signal()
        let started = Signal()
        try held.blocking(on: .main, lane: .short, { started.fire(); XCTAssertTrue(gate.wait()) }, completion: { _ in })
        XCTAssertTrue(started.wait())
        let p = path("never")
        let result = Locked<Result<Void, FileError>?>(nil)
        let done = Signal()
        let job = try held.files.write([1, 2, 3], to: p, on: Color(9)) { r in
            result.withLock { $0 = r }
            done.fire()
        }
        XCTAssertTrue(job.cancel())
        XCTAssertTrue(done.wait())
        gate.fire()
        XCTAssertEqual(result.snapshot.map { r -> FileError? in if case .failure(let e) = r { return e } else { return nil } },
                       FileError(operation: "write", path: p, code: .cancelled))
        XCTAssertFalse(FileManager.default.fileExists(atPath: p.string), "the cancelled write never ran")
    }

    // MARK: Limits and special files

    func testAtomicWriteKeepsTheExistingPermissions() throws {
        let p = path("secret")
        try success { try files.write(Array("v1".utf8), to: p, permissions: [.ownerReadWrite], on: $0, completion: $1) }
        XCTAssertEqual(chmod(p.string, 0o600), 0)
        try success { try files.write(Array("v2".utf8), to: p, atomic: true, on: $0, completion: $1) }
        let info = try success { try files.stat(p, on: $0, completion: $1) }
        XCTAssertEqual(info.permissions, [.ownerReadWrite], "an atomic replace keeps the old file's mode, not the 0644 default")
        XCTAssertEqual(try success { try files.read(p, on: $0, completion: $1) }, Array("v2".utf8))
    }

    func testWholeFileReadLimits() throws {
        let p = path("five")
        try success { try files.write([1, 2, 3, 4, 5], to: p, on: $0, completion: $1) }
        XCTAssertEqual(try failure { try files.read(p, maxBytes: 4, on: $0, completion: $1) },
                       FileError(operation: "read", path: p, code: .system(.fileTooLarge)))
        XCTAssertEqual(try success { try files.read(p, maxBytes: 5, on: $0, completion: $1) }, [1, 2, 3, 4, 5])
        // A device without a size is cut off at the limit instead of filling memory.
        XCTAssertEqual(try failure { try files.read("/dev/zero", maxBytes: 1 << 20, on: $0, completion: $1) }.errno, .fileTooLarge)
        // A FIFO never blocks a worker: with no writer it reads as empty; with a silent
        // writer holding it open, it fails with EAGAIN at once.
        let fifo = path("fifo")
        XCTAssertEqual(mkfifo(fifo.string, 0o600), 0)
        XCTAssertEqual(try success { try files.read(fifo, on: $0, completion: $1) }, [])
        let writer = open(fifo.string, O_RDWR)
        XCTAssertGreaterThanOrEqual(writer, 0)
        defer { close(writer) }
        let error = try failure { try files.read(fifo, on: $0, completion: $1) }
        XCTAssertEqual(error.path, fifo)
        XCTAssertEqual(error.errno, .resourceTemporarilyUnavailable, "\(error)")
    }

    func testDescriptorReadCountIsBounded() throws {
        let fd = FileDescriptor(rawValue: 0)
        let error = try failure { try files.read(from: fd, at: 0, count: Files.maxReadCount + 1, on: $0, completion: $1) }
        guard case .invalidArgument = error.code else { return XCTFail("\(error)") }
        XCTAssertEqual(try success { try files.read(from: FileDescriptor(rawValue: 1_000_000), at: 0, count: 0, on: $0, completion: $1) }, [],
                       "a zero-byte read makes no system call")
    }
}
