@testable import ChromaKV
import XCTest

/// Single-key commands against one shard's store, with Redis's replies, and the command
/// table's errors. Time is passed by hand.
final class ShardCommandTests: XCTestCase {
    private var store = ShardStore()
    private var now: Int64 = 1_000_000

    /// Runs `words` as one command, as the server would after the table lookup.
    private func run(_ words: String...) -> RESPReply { run(words) }

    private func run(_ words: [String]) -> RESPReply {
        let arguments = words.map { Array($0.utf8) }
        switch CommandTable.look(up: arguments) {
        case .failure(let error): return error.reply
        case .success(let (command, kind)):
            XCTAssertEqual(kind, .singleKey, command.name)
            return ShardCommands.run(arguments, command: command, store: &store, now: now)
        }
    }

    private func bulk(_ text: String) -> RESPReply { .bulk(Array(text.utf8)) }

    func testStringsAndCounters() {
        XCTAssertEqual(run("GET", "k"), .null)
        XCTAssertEqual(run("SET", "k", "v"), .ok)
        XCTAssertEqual(run("get", "k"), bulk("v"), "names are case-insensitive")
        XCTAssertEqual(run("SET", "k", "w", "NX"), .null)
        XCTAssertEqual(run("SET", "new", "w", "XX"), .null)
        XCTAssertEqual(run("SET", "k", "w", "XX", "GET"), bulk("v"))
        XCTAssertEqual(run("SET", "k", "x", "NX", "XX"), .error("ERR syntax error"))
        XCTAssertEqual(run("INCR", "n"), .integer(1))
        XCTAssertEqual(run("INCRBY", "n", "41"), .integer(42))
        XCTAssertEqual(run("DECR", "n"), .integer(41))
        XCTAssertEqual(run("DECRBY", "n", "-9"), .integer(50))
        XCTAssertEqual(run("INCR", "k"), .error("ERR value is not an integer or out of range"))
        XCTAssertEqual(run("SET", "big", "9223372036854775807"), .ok)
        XCTAssertEqual(run("INCR", "big"), .error("ERR increment or decrement would overflow"))
    }

    func testExpiryIsExactAndLazy() {
        XCTAssertEqual(run("SET", "k", "v", "PX", "1500"), .ok)
        XCTAssertEqual(run("PTTL", "k"), .integer(1500))
        XCTAssertEqual(run("TTL", "k"), .integer(2), "rounded as Redis does")
        now += 1499
        XCTAssertEqual(run("GET", "k"), bulk("v"))
        now += 1
        XCTAssertEqual(run("GET", "k"), .null, "gone at its deadline")
        XCTAssertEqual(run("TTL", "k"), .integer(-2))
        XCTAssertEqual(run("SET", "k", "v"), .ok)
        XCTAssertEqual(run("TTL", "k"), .integer(-1))
        XCTAssertEqual(run("EXPIRE", "k", "10"), .integer(1))
        XCTAssertEqual(run("INCR", "k"), .error("ERR value is not an integer or out of range"))
        XCTAssertEqual(run("PERSIST", "k"), .integer(1))
        XCTAssertEqual(run("PERSIST", "k"), .integer(0))
        XCTAssertEqual(run("EXPIRE", "missing", "10"), .integer(0))
        XCTAssertEqual(run("SET", "k", "v", "EX", "0"), .error("ERR invalid expire time in 'set' command"))
        XCTAssertEqual(run("SET", "c", "1", "EX", "5"), .ok)
        XCTAssertEqual(run("INCR", "c"), .integer(2))
        XCTAssertEqual(run("TTL", "c"), .integer(5), "INCR keeps the expiry")
        XCTAssertEqual(run("SET", "c", "1"), .ok)
        XCTAssertEqual(run("TTL", "c"), .integer(-1), "SET drops it")
        // Active expiry removes keys nobody reads.
        XCTAssertEqual(run("SET", "a", "1", "PX", "10"), .ok)
        XCTAssertEqual(run("SET", "b", "1", "PX", "10"), .ok)
        now += 10
        XCTAssertEqual(store.expire(now: now, limit: 10), 2)
        XCTAssertEqual(store.count, 2, "c and k stay")
    }

    func testLists() {
        XCTAssertEqual(run("RPUSH", "l", "a", "b"), .integer(2))
        XCTAssertEqual(run("LPUSH", "l", "y", "z"), .integer(4))
        XCTAssertEqual(run("LRANGE", "l", "0", "-1"), .array(["z", "y", "a", "b"].map(bulk)))
        XCTAssertEqual(run("LRANGE", "l", "-2", "10"), .array(["a", "b"].map(bulk)))
        XCTAssertEqual(run("LRANGE", "l", "3", "1"), .array([]))
        XCTAssertEqual(run("LPOP", "l"), bulk("z"))
        XCTAssertEqual(run("RPOP", "l", "2"), .array(["b", "a"].map(bulk)))
        XCTAssertEqual(run("RPOP", "l"), bulk("y"))
        XCTAssertEqual(run("RPOP", "l"), .null, "an emptied list is gone")
        XCTAssertEqual(run("SET", "s", "v"), .ok)
        XCTAssertEqual(run("LPUSH", "s", "x"), .error("WRONGTYPE Operation against a key holding the wrong kind of value"))
        XCTAssertEqual(run("GET", "l2") , .null)
        XCTAssertEqual(run("RPUSH", "l2", "x"), .integer(1))
        XCTAssertEqual(run("GET", "l2"), .error("WRONGTYPE Operation against a key holding the wrong kind of value"))
    }

    func testUnknownCommandsAndArityGetRedisErrors() {
        XCTAssertEqual(run("FOO", "a", "b"), .error("ERR unknown command 'FOO', with args beginning with: 'a' 'b' "))
        XCTAssertEqual(run("get\u{0}", "k"), .error("ERR unknown command 'get\u{0}', with args beginning with: 'k' "), "names are matched whole")
        XCTAssertEqual(run("GET"), .error("ERR wrong number of arguments for 'get' command"))
        XCTAssertEqual(run("GET", "a", "b"), .error("ERR wrong number of arguments for 'get' command"))
        XCTAssertEqual(run("LPOP", "a", "1", "2"), .error("ERR wrong number of arguments for 'lpop' command"))
        if case .success = CommandTable.look(up: [Array("MSET".utf8), Array("k".utf8)]) { XCTFail("MSET needs pairs") }
        if case .success = CommandTable.look(up: ["MSET", "k", "v", "k2"].map { Array($0.utf8) }) { XCTFail("MSET needs pairs") }
    }

    /// Every entry with its deadline, for comparing stores.
    private func entries(_ store: ShardStore) -> [String: String] {
        var found: [String: String] = [:]
        store.forEachEntry { key, value, deadline in
            found[String(decoding: key, as: UTF8.self)] = "\(value) \(deadline.map(String.init) ?? "-")"
        }
        return found
    }

    func testJournalReplaysToTheSameStore() throws {
        store.journaling = true
        var records: [[UInt8]] = []
        func command(_ words: String...) {
            _ = run(words)
            if store.hasJournal { records.append(store.takeJournal()) }
        }
        command("SET", "a", "1")
        command("SET", "t", "x", "PX", "100")
        command("INCRBY", "a", "41")
        command("RPUSH", "l", "a", "b", "c")
        command("LPUSH", "l", "y", "z")
        command("LPOP", "l", "2")
        command("RPOP", "l")
        command("SET", "p", "v", "EX", "100")
        command("PERSIST", "p")
        command("EXPIRE", "a", "50")
        store.remove(Array("p".utf8), now: now)  // DEL runs on the store itself
        records.append(store.takeJournal())
        command("SET", "gone", "v", "PX", "5")
        now += 10
        command("GET", "gone")  // the lazy expiry is a change too
        command("RPUSH", "e", "only")
        command("LPOP", "e")
        XCTAssertEqual(store.expire(now: now, limit: 10), 0)
        XCTAssertFalse(store.hasJournal)

        var copy = ShardStore()
        for record in records {
            var reader = JournalReader(record, from: Record.headerSize)
            try copy.replay(&reader)
        }
        XCTAssertEqual(entries(copy), entries(store))
        XCTAssertEqual(copy.liveBytes, store.liveBytes)
        XCTAssertEqual(entries(store).count, 3, "a, t and l")
    }
}
