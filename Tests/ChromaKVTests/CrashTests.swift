import Chroma
@testable import ChromaKV
import Foundation
import TestSupport
import Synchronization
import XCTest

/// The chroma-kv binary, killed with SIGKILL in the middle of a write flood from clients
/// that record every acknowledged SET, then started again on the same directory.
final class CrashTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try KVTestDirectory.make()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// What one writer saw: per key, the last value acknowledged (with when), and the one
    /// sent and never answered (the server died first).
    private struct Writer {
        var acknowledged: [String: (value: Int, at: Double)] = [:]
        var unanswered: (key: String, value: Int)?
    }

    /// Floods a child server on `fsync` from `writers` clients (each SET waits for its
    /// answer), kills it once `acknowledgements` SETs were answered, and returns what the
    /// writers saw and when the kill came.
    private func floodAndKill(_ fsync: AppendFsync, writers: Int, acknowledgements: Int) throws -> ([Writer], Double) {
        let child = try KVChild(directory: directory, fsync: fsync)
        let answered = Atomic<Int>(0)
        let killed = Atomic<Bool>(false)
        let reached = DispatchSemaphore(value: 0)
        let results = Locked([Writer](repeating: Writer(), count: writers))
        let group = DispatchGroup()
        for writer in 0..<writers {
            DispatchQueue.global().async(group: group) {
                var seen = Writer()
                defer { results.withLock { $0[writer] = seen } }
                guard let client = try? RESPClient(port: child.port) else { return }
                var value = 0
                while !killed.load(ordering: .relaxed) {
                    value += 1
                    let key = "w\(writer):\(value % 64)"
                    seen.unanswered = (key, value)
                    client.send(RESPClient.command("SET", key, "\(value)"))
                    guard case .simple("OK")? = try? client.reply() else { return }
                    seen.acknowledged[key] = (value, KVChild.now())
                    seen.unanswered = nil
                    if answered.add(1, ordering: .relaxed).newValue == acknowledgements { reached.signal() }
                }
            }
        }
        XCTAssertEqual(reached.wait(timeout: .now() + 60), .success, "the flood reached \(acknowledgements) answers")
        let killedAt = KVChild.now()
        child.kill()
        killed.store(true, ordering: .relaxed)
        XCTAssertEqual(group.wait(timeout: .now() + 30), .success, "writers stop once the server is gone")
        return (results.withLock { $0 }, killedAt)
    }

    /// The values a restarted server holds for `keys`.
    private func recovered(_ keys: [String]) throws -> [String: Int] {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let server = try KVServer(runtime: runtime, storage: KVStorage(directory: directory))
        let client = try RESPClient(port: try server.listen(host: "127.0.0.1", port: 0).port)
        var values: [String: Int] = [:]
        for key in keys {
            if case .bulk(let bytes?) = try client.call("GET", key) { values[key] = Int(String(decoding: bytes, as: UTF8.self)) }
        }
        return values
    }

    func testAlwaysLosesNoAcknowledgedWrite() throws {
        let (writers, _) = try floodAndKill(.always, writers: 8, acknowledgements: KVTestDirectory.underTSan ? 800 : 4000)
        let keys = writers.flatMap { $0.acknowledged.keys }
        let values = try recovered(keys)
        var lost = 0
        for writer in writers {
            for (key, (value, _)) in writer.acknowledged {
                // The one SET in flight may have landed too: then the key holds that value.
                let inFlight = writer.unanswered?.key == key ? writer.unanswered?.value : nil
                if values[key] != value && values[key] != inFlight { lost += 1 }
            }
        }
        XCTAssertEqual(lost, 0, "acknowledged SETs lost with appendfsync always, of \(keys.count) keys")
    }

    func testSIGTERMStopsCleanlyAndARestartHasEverything() throws {
        let child = try KVChild(directory: directory, fsync: .everysec)
        let client = try RESPClient(port: child.port)
        for i in 0..<200 { XCTAssertEqual(try client.call("SET", "k\(i)", "v\(i)"), .ok) }
        XCTAssertEqual(try client.call("RPUSH", "list", "a", "b"), .integer(2))
        XCTAssertEqual(child.terminate(), 0, "chroma-kv exits 0 after SIGTERM")
        let runtime = try Runtime(loops: 1)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        let server = try KVServer(runtime: runtime, storage: KVStorage(directory: directory))
        let again = try RESPClient(port: try server.listen(host: "127.0.0.1", port: 0).port)
        for i in 0..<200 { XCTAssertEqual(try again.call("GET", "k\(i)"), .bulk(Array("v\(i)".utf8))) }
        XCTAssertEqual(try again.call("LRANGE", "list", "0", "-1"), .array([.bulk([97]), .bulk([98])]))
    }

    func testEverysecLosesAtMostAboutOneSecond() throws {
        let (writers, killedAt) = try floodAndKill(.everysec, writers: 8, acknowledgements: KVTestDirectory.underTSan ? 800 : 4000)
        let values = try recovered(writers.flatMap { $0.acknowledged.keys })
        for writer in writers {
            for (key, (value, at)) in writer.acknowledged {
                let found = values[key] ?? 0
                // Values only grow per key, so an older value means the newer one was lost.
                if found < value {
                    XCTAssertGreaterThan(at, killedAt - 1.5, "\(key)=\(value), acknowledged \(killedAt - at) s before the kill, was lost")
                }
            }
        }
    }
}

/// The chroma-kv binary (built beside this test bundle) run as a child on a data directory.
final class KVChild: @unchecked Sendable {
    // Safe to share: `port` is set in init, then only read; `child` is used by one thread
    // at a time.
    let port: UInt16
    private let child: Child

    init(directory: String, fsync: AppendFsync) throws {
        // The test bundle runs as an executable (argv[0]) in the build folder.
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("chroma-kv").path
        child = try Child(binary, ["--port", "0", "--loops", "2", "--dir", directory, "--appendfsync", fsync.rawValue],
                          standardOutput: .pipe)
        // The one line it prints once listening: "chroma-kv listening on port P with …".
        guard let line = child.readLine(child.standardOutput!) else { throw KVTestDirectory.Failure("chroma-kv exited before listening") }
        let words = line.split(separator: " ")
        guard let at = words.firstIndex(of: "port"), at + 1 < words.count, let port = UInt16(words[at + 1]) else {
            throw KVTestDirectory.Failure("no port in: \(line)")
        }
        self.port = port
    }

    /// SIGTERM, then waits for the child to exit; its exit status (-1 if a signal ended it).
    func terminate() -> Int32 {
        child.send(SIGTERM)
        if case .exited(let code) = child.wait() { return code }
        return -1
    }

    /// SIGKILL, then waits for the child to be gone.
    func kill() {
        child.send(SIGKILL)
        child.wait()
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
