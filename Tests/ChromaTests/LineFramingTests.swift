import Chroma
import Foundation
import XCTest

/// Line framing where reads cut the input, found by the line-framing fuzz target: a line of
/// exactly the limit whose CR and LF arrive in different reads, and the last unended line.
/// Each client sends a short line first and waits for its echo, which proves the server
/// read everything sent with it (one small send on loopback is read whole), so the cut
/// falls where the test puts it.
final class LineFramingTests: XCTestCase {
    /// An echo server with a 4-byte line limit, callback or async reader.
    private func echoServer(_ runtime: Runtime, async: Bool) throws -> (Listener, Locked<[CloseReason]>) {
        let reasons = Locked<[CloseReason]>([])
        let listener = try runtime.listen(host: "127.0.0.1", port: 0) { connection in
            connection.onClose { reason in reasons.withLock { $0.append(reason) } }
            if async {
                runtime.spawn(on: connection.color) {
                    for await line in connection.lines(maxLength: 4) { try await connection.send(line + [10]) }
                    connection.close()
                    return 0
                } completion: { _ in }
            } else {
                connection.onLines(maxLength: 4) { line in connection.write(line + [10]) }
            }
        }
        return (listener, reasons)
    }

    private func checkCRAtTheLimitWaitsForItsLF(async: Bool) throws {
        let runtime = try startedRuntime(loops: 1)
        let (listener, reasons) = try echoServer(runtime, async: async)
        let client = try TestClient(port: listener.port)
        defer { client.close() }
        client.send("x\nabcd\r")
        XCTAssertEqual(String(decoding: client.receive(2), as: UTF8.self), "x\n", "the first line, read with the 4 bytes and CR after it")
        client.send("\nabcde\n")
        XCTAssertEqual(String(decoding: client.receive(100), as: UTF8.self), "abcd\n",
                       "4 bytes and a CR may still be a line: its LF came in the next read; the 5-byte line after it is too long")
        XCTAssertTrue(waitUntil { reasons.snapshot == [.lineTooLong] }, "closed for the 5-byte line, got \(reasons.snapshot)")
    }

    func testALineAtTheLimitSplitBetweenCRAndLFIsOneLine() throws {
        try checkCRAtTheLimitWaitsForItsLF(async: false)
    }

    func testALineAtTheLimitSplitBetweenCRAndLFIsOneLineForAsyncReaders() throws {
        try checkCRAtTheLimitWaitsForItsLF(async: true)
    }

    private func checkTheLastLineKeepsTheLimit(async: Bool) throws {
        let runtime = try startedRuntime(loops: 1)
        let (listener, reasons) = try echoServer(runtime, async: async)
        let client = try TestClient(port: listener.port)
        defer { client.close() }
        client.send("ok\nabcd\r")
        XCTAssertEqual(String(decoding: client.receive(3), as: UTF8.self), "ok\n")
        shutdown(client.fd, Int32(SHUT_WR))
        XCTAssertEqual(client.receive(100), [], "the unended last line (4 bytes and a CR) is over the limit: not delivered")
        XCTAssertTrue(waitUntil { reasons.snapshot == [.lineTooLong] }, "closed as too long, got \(reasons.snapshot)")
    }

    func testTheLastUnendedLineIsHeldToTheLimit() throws {
        try checkTheLastLineKeepsTheLimit(async: false)
    }

    func testTheLastUnendedLineIsHeldToTheLimitForAsyncReaders() throws {
        try checkTheLastLineKeepsTheLimit(async: true)
    }
}
