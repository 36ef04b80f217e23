import Chroma
@testable import ChromaKV
import Foundation
import XCTest

/// chroma-kv over real sockets: replies in request order across shards, fan-out commands,
/// expiry by the shards' timers, and a protocol error that closes one client only.
final class KVServerTests: XCTestCase {
    private var runtime: Runtime!
    private var server: KVServer!
    private var port: UInt16 = 0

    override func setUpWithError() throws {
        runtime = try Runtime(loops: 2, stealing: .off)
        try runtime.start()
        server = try KVServer(runtime: runtime, shardCount: 8)
        port = try server.listen(host: "127.0.0.1", port: 0).port
    }

    override func tearDownWithError() throws {
        _ = try runtime.shutdown()
    }

    func testPipelinedCommandsAcrossShardsAnswerInOrder() throws {
        let client = try RESPClient(port: port)
        let count = 500
        var pipeline = ""
        for i in 0..<count { pipeline += RESPClient.command("SET", "key:\(i)", "value:\(i)") }
        for i in 0..<count { pipeline += RESPClient.command("GET", "key:\(i)") }
        pipeline += "PING\r\n"
        client.send(pipeline)
        for i in 0..<count { XCTAssertEqual(try client.reply(), .ok, "SET \(i)") }
        for i in 0..<count { XCTAssertEqual(try client.reply(), .bulk(Array("value:\(i)".utf8)), "GET \(i)") }
        XCTAssertEqual(try client.reply(), .simple("PONG"))
    }

    func testFanOutCommandsGatherInKeyOrder() throws {
        let client = try RESPClient(port: port)
        let keys = (0..<40).map { "k\($0)" }
        client.send(RESPClient.command(["MSET"] + keys.flatMap { [$0, "v-\($0)"] }))
        XCTAssertEqual(try client.reply(), .ok)
        client.send(RESPClient.command(["MGET"] + keys + ["missing"]))
        XCTAssertEqual(try client.reply(), .array(keys.map { .bulk(Array("v-\($0)".utf8)) } + [.null]))
        client.send(RESPClient.command(["EXISTS"] + keys.prefix(10) + ["missing"]))
        XCTAssertEqual(try client.reply(), .integer(10))
        client.send(RESPClient.command("DBSIZE"))
        XCTAssertEqual(try client.reply(), .integer(40))
        client.send(RESPClient.command(["DEL"] + keys.prefix(5)))
        XCTAssertEqual(try client.reply(), .integer(5))
        client.send(RESPClient.command("DBSIZE") + RESPClient.command("FLUSHALL") + RESPClient.command("DBSIZE"))
        XCTAssertEqual(try client.reply(), .integer(35))
        XCTAssertEqual(try client.reply(), .ok)
        XCTAssertEqual(try client.reply(), .integer(0))
    }

    /// Keys nobody reads are removed by the shards' sweeps (not only when touched). Each
    /// shard's count is read by a timer of the shard's own color due 250 ms on: the sweep
    /// (every 100 ms) has a deadline between the keys' expiry and it, and one loop's timers
    /// fire in deadline order (with stealing off, a shard stays on its loop).
    func testExpiredKeysAreSweptWithoutBeingRead() throws {
        let client = try RESPClient(port: port)
        for i in 0..<20 { client.send(RESPClient.command("SET", "t\(i)", "x", "PX", "50")) }
        client.send(RESPClient.command("SET", "stays", "x"))
        for _ in 0..<21 { XCTAssertEqual(try client.reply(), .ok) }
        XCTAssertEqual(try storedKeys(), 21)
        XCTAssertEqual(try storedKeys(after: .milliseconds(250)), 1, "the sweeps removed every expired key")
    }

    /// Keys held by the shards' stores, expired ones not yet removed included, read on each
    /// shard's color `delay` from now.
    private func storedKeys(after delay: Duration = .zero) throws -> Int {
        let total = LockedCount()
        let done = DispatchSemaphore(value: 0)
        for shard in server.shards {
            _ = try runtime.schedule(after: delay, on: shard.color) {
                total.add(shard.store.count)
                done.signal()
            }
        }
        for _ in server.shards { XCTAssertEqual(done.wait(timeout: .now() + 10), .success) }
        return total.value
    }

    func testProtocolErrorClosesOnlyThatClient() throws {
        let bad = try RESPClient(port: port)
        let good = try RESPClient(port: port)
        bad.send("*1\r\n$-3\r\n")
        XCTAssertEqual(try bad.reply(), .error("ERR Protocol error: invalid bulk length"))
        XCTAssertTrue(bad.closedByServer())
        good.send(RESPClient.command("ECHO", "still here"))
        XCTAssertEqual(try good.reply(), .bulk(Array("still here".utf8)))
        good.send("FOO bar\r\n")
        XCTAssertEqual(try good.reply(), .error("ERR unknown command 'FOO', with args beginning with: 'bar' "))
        good.send(RESPClient.command("QUIT"))
        XCTAssertEqual(try good.reply(), .ok)
        XCTAssertTrue(good.closedByServer())
    }
}

/// A count added to from several threads.
final class LockedCount: @unchecked Sendable {
    // Safe to share: `total` is only touched with `lock` held.
    private let lock = NSLock()
    private var total = 0
    func add(_ n: Int) { lock.withLock { total += n } }
    var value: Int { lock.withLock { total } }
}
