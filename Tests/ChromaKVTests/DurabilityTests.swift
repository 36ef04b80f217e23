import Chroma
@testable import ChromaKV
import Foundation
import TestSupport
import XCTest

/// The data directory: a restart after a clean stop loads everything back, a torn last
/// record is cut off (and damage elsewhere refused), and compactions racing writes lose
/// nothing.
final class DurabilityTests: XCTestCase {
    private var directory = ""
    /// The port of the server `start` made last.
    private var port: UInt16 = 0

    override func setUpWithError() throws {
        directory = try KVTestDirectory.make()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A runtime and a server on `directory`, listening on a free port.
    private func start(_ fsync: AppendFsync = .always, floor: Int = 64 << 20, shards: Int? = 8) throws -> (Runtime, KVServer, RESPClient) {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        let server = try KVServer(runtime: runtime, shardCount: shards,
                                  storage: KVStorage(directory: directory, fsync: fsync, compactionFloor: floor))
        port = try server.listen(host: "127.0.0.1", port: 0).port
        return (runtime, server, try RESPClient(port: port))
    }

    private func stop(_ runtime: Runtime, _ server: KVServer) throws {
        _ = try runtime.shutdown()
        try server.close()
    }

    private func bulk(_ text: String) -> RESPReply { .bulk(Array(text.utf8)) }

    private func files(_ kind: String) throws -> [Int] {
        try FileManager.default.contentsOfDirectory(atPath: directory).compactMap { DataDirectory.generation(of: $0, kind: kind) }.sorted()
    }

    func testRestartAfterCleanStopLoadsEveryKind() throws {
        var (runtime, server, client) = try start()
        XCTAssertEqual(try client.call("SET", "s", "v"), .ok)
        XCTAssertEqual(try client.call("EXPIRE", "s", "500"), .integer(1))
        XCTAssertEqual(try client.call("RPUSH", "l", "a", "b", "c"), .integer(3))
        XCTAssertEqual(try client.call("LPUSH", "l", "z"), .integer(4))
        XCTAssertEqual(try client.call("LPOP", "l"), bulk("z"))
        XCTAssertEqual(try client.call("INCRBY", "n", "5"), .integer(5))
        XCTAssertEqual(try client.call("MSET", "m1", "1", "m2", "2"), .ok)
        XCTAssertEqual(try client.call("DEL", "m1"), .integer(1))
        XCTAssertEqual(try client.call("SET", "p", "v", "EX", "100"), .ok)
        XCTAssertEqual(try client.call("PERSIST", "p"), .integer(1))
        XCTAssertEqual(try client.call("SET", "gone", "x", "PX", "1"), .ok)
        try stop(runtime, server)

        (runtime, server, client) = try start(.everysec, shards: nil)
        XCTAssertEqual(server.shardCount, 8, "the shard count comes from the directory")
        XCTAssertEqual(try client.call("GET", "s"), bulk("v"))
        guard case .integer(let ttl) = try client.call("TTL", "s") else { return XCTFail("TTL") }
        XCTAssert((490...500).contains(ttl), "the deadline survives a restart: \(ttl)")
        XCTAssertEqual(try client.call("LRANGE", "l", "0", "-1"), .array([bulk("a"), bulk("b"), bulk("c")]))
        XCTAssertEqual(try client.call("GET", "n"), bulk("5"))
        XCTAssertEqual(try client.call("MGET", "m1", "m2"), .array([.null, bulk("2")]))
        XCTAssertEqual(try client.call("TTL", "p"), .integer(-1))
        XCTAssertEqual(try client.call("GET", "gone"), .null)
        XCTAssertEqual(try client.call("DBSIZE"), .integer(5))
        XCTAssertEqual(try client.call("FLUSHALL"), .ok)
        XCTAssertEqual(try client.call("SET", "after", "1"), .ok)
        try stop(runtime, server)

        (runtime, server, client) = try start()
        XCTAssertEqual(try client.call("DBSIZE"), .integer(1))
        XCTAssertEqual(try client.call("GET", "after"), bulk("1"))
        try stop(runtime, server)
    }

    func testTornLastRecordIsCutOffAndLogged() throws {
        var (runtime, server, client) = try start()
        for i in 0..<100 { XCTAssertEqual(try client.call("SET", "k\(i)", "v\(i)"), .ok) }
        try stop(runtime, server)
        let log = directory + "/" + DataDirectory.logName(try XCTUnwrap(try files("log").last))
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: log)[.size] as? Int)
        // The crash came while the last SET's record was half written.
        XCTAssertEqual(truncate(log, off_t(size - 5)), 0)

        (runtime, server, client) = try start()
        XCTAssertEqual(server.recovery.messages.count, 1)
        XCTAssert(server.recovery.messages[0].contains("torn tail"), server.recovery.messages[0])
        XCTAssertEqual(try client.call("GET", "k98"), bulk("v98"))
        XCTAssertEqual(try client.call("GET", "k99"), .null, "the torn record is gone")
        XCTAssertEqual(try client.call("DBSIZE"), .integer(99))
        XCTAssertEqual(try client.call("SET", "k99", "again"), .ok)
        try stop(runtime, server)

        // Garbage after good records (a write that reached the file out of order) goes too.
        let newest = directory + "/" + DataDirectory.logName(try XCTUnwrap(try files("log").last))
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: newest))
        handle.seekToEndOfFile()
        handle.write(Data([0x10, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]))
        try handle.close()
        (runtime, server, client) = try start()
        XCTAssertEqual(server.recovery.messages.count, 1)
        XCTAssert(server.recovery.messages[0].contains("11 bytes"), server.recovery.messages[0])
        XCTAssertEqual(try client.call("GET", "k99"), bulk("again"))
        XCTAssertEqual(try client.call("DBSIZE"), .integer(100))
        try stop(runtime, server)
    }

    func testDamageOutsideTheNewestLogOrAnotherShardCountIsRefused() throws {
        var (runtime, server, client) = try start()
        XCTAssertEqual(try client.call("SET", "a", "1"), .ok)
        try stop(runtime, server)
        (runtime, server, client) = try start()
        XCTAssertEqual(try client.call("SET", "b", "2"), .ok)
        try stop(runtime, server)
        let oldest = directory + "/" + DataDirectory.logName(try XCTUnwrap(try files("log").first))
        let bytes = try XCTUnwrap(FileManager.default.contents(atPath: oldest))
        var damaged = [UInt8](bytes)
        damaged[damaged.count - 2] ^= 0xff
        try Data(damaged).write(to: URL(fileURLWithPath: oldest))

        XCTAssertThrowsError(try DataDirectory.load(directory, shards: 8)) { error in
            let text = String(describing: error)
            XCTAssert(text.contains(oldest) && text.contains("not the newest"), text)
        }
        try Data(bytes).write(to: URL(fileURLWithPath: oldest))
        XCTAssertThrowsError(try DataDirectory.load(directory, shards: 4)) { error in
            XCTAssert(String(describing: error).contains("start with --shards 8"), String(describing: error))
        }
        XCTAssertEqual(try DataDirectory.load(directory, shards: 8).keys, 2)
    }

    func testAFailedLogWriteRefusesWritesAndKeepsServingReads() throws {
        var (runtime, server, client) = try start(.always)
        // "kept" on another shard than "big": its shard's state stays all on disk.
        let bigShard = server.shard(for: Array("big".utf8))
        let kept = try XCTUnwrap((0..<100).map { "kept\($0)" }.first { server.shard(for: Array($0.utf8)) !== bigShard })
        XCTAssertEqual(try client.call("SET", kept, "1"), .ok)
        // The file-size limit makes the next write fail (EFBIG), as a full disk would.
        let log = directory + "/" + DataDirectory.logName(try XCTUnwrap(try files("log").last))
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: log)[.size] as? Int)
        var saved = rlimit()
        XCTAssertEqual(getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &saved), 0)
        let oldHandler = signal(SIGXFSZ, SIG_IGN)
        var limit = saved
        limit.rlim_cur = rlim_t(size + 100)
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit), 0)
        let refused = RESPReply.error("MISCONF Errors writing to the AOF file; the server refuses writes")
        XCTAssertEqual(try client.call("SET", "big", String(repeating: "x", count: 4096)), refused)
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &saved), 0)
        signal(SIGXFSZ, oldHandler)
        XCTAssertEqual(try client.call("SET", "later", "2"), refused, "the log stays failed")
        XCTAssertEqual(try client.call("DEL", kept), refused)
        XCTAssertEqual(try client.call("GET", kept), .bulk(Array("1".utf8)), "reads of a shard whose changes are all on disk go on")
        XCTAssertEqual(try client.call("GET", "big"), refused, "a shard whose last change never reached the disk answers nothing from it")
        _ = try runtime.shutdown()
        XCTAssertNoThrow(try server.close(), "a failed log closes without writing")

        (runtime, server, client) = try start()
        XCTAssertEqual(try client.call("GET", kept), .bulk(Array("1".utf8)))
        XCTAssertEqual(try client.call("GET", "big"), .null, "the failed write is not in the log")
        XCTAssertEqual(try client.call("GET", "later"), .null)
        try stop(runtime, server)
    }

    func testCompactionRacingWritesLosesNothing() throws {
        var (runtime, server, _) = try start(.no, floor: 16 << 10)
        let port = self.port
        let writers = 4, rounds = KVTestDirectory.underTSan ? 15 : 40, keys = 50
        let failures = Locked<[String]>([])
        DispatchQueue.concurrentPerform(iterations: writers) { writer in
            do {
                let client = try RESPClient(port: port)
                for round in 0..<rounds {
                    var batch = ""
                    for key in 0..<keys { batch += RESPClient.command("SET", "w\(writer):\(key)", "r\(round)") }
                    batch += RESPClient.command("INCR", "count\(writer)")
                    batch += RESPClient.command("RPUSH", "list\(writer)", "\(round)")
                    client.send(batch)
                    for _ in 0..<(keys + 2) {
                        if case .error(let text) = try client.reply() { throw KVTestDirectory.Failure(text) }
                    }
                }
            } catch {
                failures.withLock { $0.append("writer \(writer): \(error)") }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        try stop(runtime, server)
        let snapshots = try files("snapshot")
        XCTAssertEqual(snapshots.count, 1, "older snapshots are removed")
        XCTAssertGreaterThan(snapshots.last ?? 0, 2, "the log was compacted more than once while it was written")
        XCTAssert(try files("log").allSatisfy { $0 >= snapshots[0] }, "logs older than the snapshot are removed")

        let client: RESPClient
        (runtime, server, client) = try start()
        for writer in 0..<writers {
            for key in 0..<keys { XCTAssertEqual(try client.call("GET", "w\(writer):\(key)"), bulk("r\(rounds - 1)")) }
            XCTAssertEqual(try client.call("GET", "count\(writer)"), bulk("\(rounds)"))
            XCTAssertEqual(try client.call("LRANGE", "list\(writer)", "0", "-1"), .array((0..<rounds).map { bulk("\($0)") }))
        }
        XCTAssertEqual(try client.call("DBSIZE"), .integer(writers * (keys + 2)))
        try stop(runtime, server)
    }
}

/// Scratch data directories for the durability tests.
enum KVTestDirectory {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// True in a build with ThreadSanitizer (`make tsan` sets CHROMA_TSAN=1).
    static let underTSan = ProcessInfo.processInfo.environment["CHROMA_TSAN"] == "1"

    /// A fresh empty directory.
    static func make() throws -> String {
        var template = Array((NSTemporaryDirectory() + "chroma-kv-test.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure("mkdtemp: \(String(cString: strerror(errno)))") }
        return String(cString: made)
    }
}
