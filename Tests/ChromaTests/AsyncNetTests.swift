import Chroma
import Foundation
import XCTest

/// Connections in async code: input as async sequences, `send` honoring backpressure.
final class AsyncNetTests: XCTestCase {
    func testAsyncLinesEcho() throws {
        let runtime = try startedRuntime(loops: 2)
        let listener = try runtime.listen(host: "127.0.0.1", port: 0) { connection in
            runtime.spawn(on: connection.color) {
                var count = 0
                for await line in connection.lines() {
                    XCTAssertEqual(Color.current, connection.color)
                    try await connection.send(line + [10])
                    count += 1
                }
                return count
            } completion: { result in
                XCTAssertEqual(try? result.get(), 3, "three lines, the last one unterminated")
                connection.close()
            }
        }
        let client = try TestClient(port: listener.port)
        defer { client.close() }
        client.send("one\ntwo\r\nthr")
        client.send("ee")
        shutdown(client.fd, Int32(SHUT_WR))
        XCTAssertEqual(String(decoding: client.receive(100), as: UTF8.self), "one\ntwo\nthree\n")
    }

    /// `send` waits while the output is at the high watermark: with a peer that reads
    /// nothing, the buffered output never grows past one chunk beyond the mark.
    func testSendHonorsBackpressure() throws {
        let runtime = try startedRuntime(loops: 2)
        let chunk = 16 << 10, chunks = 400, high = 64 << 10
        let maxPending = Locked(0)
        let finished = Signal()
        let listener = try runtime.listen(host: "127.0.0.1", port: 0) { connection in
            connection.setWatermarks(low: 4 << 10, high: high)
            runtime.spawn(on: connection.color) {
                for _ in 0..<chunks {
                    try await connection.send([UInt8](repeating: 1, count: chunk))
                    let pending = connection.pendingOutput
                    maxPending.withLock { $0 = max($0, pending) }
                }
                return true
            } completion: { result in
                XCTAssertEqual(try? result.get(), true)
                finished.fire()
            }
        }
        let client = try TestClient(port: listener.port)
        defer { client.close() }
        // Read nothing until the first chunk was queued, then everything.
        XCTAssertEqual(client.receive(chunk * chunks).count, chunk * chunks, "every byte arrived")
        XCTAssertTrue(finished.wait())
        XCTAssertLessThanOrEqual(maxPending.snapshot, high + chunk, "send waited at the high watermark")
    }

    /// Cancelling a task ends its wait: a pending `lines()` iteration ends, a `send`
    /// waiting at the high watermark throws `CancellationError`.
    func testCancellationEndsPendingReadsAndSends() throws {
        let runtime = try startedRuntime(loops: 1)
        let waiting = Signal()
        let outcomes = Locked<[String]>([])
        let ended = Signal()
        let tasks = Locked<[Task<Void, Never>]>([])
        let listener = try runtime.listen(host: "127.0.0.1", port: 0) { connection in
            connection.setWatermarks(low: 1024, high: 16 << 10)
            let reader = runtime.spawn(on: connection.color) {
                waiting.fire()
                for await _ in connection.lines() {}
                return "reader ended"
            } completion: { result in
                outcomes.withLock { $0.append((try? result.get()) ?? "reader threw") }
                ended.fire()
            }
            let sender = runtime.spawn(on: connection.color) {
                // The peer reads nothing, so this blocks at the high watermark.
                waiting.fire()
                while true { try await connection.send([UInt8](repeating: 1, count: 64 << 10)) }
            } completion: { (result: Result<Never, any Error>) in
                if case .failure(let error) = result { outcomes.withLock { $0.append(error is CancellationError ? "sender cancelled" : "\(error)") } }
                ended.fire()
            }
            tasks.withLock { $0 = [reader, sender] }
        }
        let client = try TestClient(port: listener.port)
        defer { client.close() }
        XCTAssertTrue(waiting.wait(count: 2))
        XCTAssertTrue(waitUntil { tasks.snapshot.count == 2 })
        for task in tasks.snapshot { task.cancel() }
        XCTAssertTrue(ended.wait(count: 2), "both tasks ended")
        XCTAssertEqual(Set(outcomes.snapshot), ["reader ended", "sender cancelled"])
    }
}
