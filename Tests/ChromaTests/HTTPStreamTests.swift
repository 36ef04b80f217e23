@testable import Chroma
@testable import ChromaHTTP
import Foundation
import XCTest

/// Streamed answers (`HTTPRequest.startStream`) and server-sent events: memory bounded by
/// the high watermark under a slow reader, every byte in order, the client leaving midway,
/// HEAD, handlers that fail before and after starting, and a stream dropped without `end`.
final class HTTPStreamTests: XCTestCase {
    /// The stream's bytes: `base[i % base.count]`, a period no piece size divides, so a
    /// piece sent twice, lost, or out of place shows.
    private static let base: [UInt8] = (0..<65_521).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }

    private static func piece(at offset: Int, count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let period = base.count
        var start = offset % period, filled = 0
        while filled < count {
            let n = min(count - filled, period - start)
            bytes.replaceSubrange(filled..<(filled + n), with: base[start..<(start + n)])
            filled += n
            start = 0
        }
        return bytes
    }

    /// Whether `bytes` are the stream's from `offset` on.
    private static func matches(_ bytes: ArraySlice<UInt8>, at offset: Int) -> Bool {
        bytes.withUnsafeBytes { got in
            base.withUnsafeBytes { want in
                var done = 0, position = offset % want.count
                while done < got.count {
                    let n = min(got.count - done, want.count - position)
                    if memcmp(got.baseAddress! + done, want.baseAddress! + position, n) != 0 { return false }
                    done += n
                    position = 0
                }
                return true
            }
        }
    }

    private func serve(_ runtime: Runtime, _ configure: (inout HTTPRoutes) -> Void) throws -> HTTPServer {
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(.ok, text: "hello") }
        configure(&routes)
        return try runtime.serveHTTP(host: "127.0.0.1", port: 0, routes: routes)
    }

    /// What the stream handler saw, for the test thread.
    private final class Observed: Sendable {
        let written = Locked(0)
        let parks = Locked(0)
        let parked = Locked(false)
        let peak = Locked(0)
        let error = Locked<String?>(nil)
        let finished = Signal()
    }

    func testBigStreamToASlowReaderStaysWithinItsWatermark() throws {
        let total = underTSan ? 20_000_000 : 100_000_000
        let pieceSize = 65_536, watermark = 256 * 1024
        let runtime = try startedRuntime()
        let seen = Observed()
        let server = try serve(runtime) { routes in
            routes.stream("/big") { request in
                guard let stream = request.startStream(headers: [("Content-Type", "application/octet-stream")], highWatermark: watermark) else { return }
                var offset = 0
                while offset < total {
                    let n = min(pieceSize, total - offset)
                    guard stream.write(HTTPStreamTests.piece(at: offset, count: n)) else { return }
                    offset += n
                    seen.written.withLock { $0 = offset }
                    if !stream.isWritable {
                        seen.parks.withLock { $0 += 1 }
                        seen.parked.withLock { $0 = true }
                        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in stream.whenWritable { done.resume() } }
                        seen.parked.withLock { $0 = false }
                    }
                }
                seen.peak.withLock { $0 = stream.peakBufferedBytes }
                stream.end()
                seen.finished.fire()
            }
        }
        // A small receive buffer, read in small pieces: the server must wait for this reader.
        let socket = TestClient()
        var receiveBuffer: Int32 = 128 * 1024
        setsockopt(socket.fd, SOL_SOCKET, SO_RCVBUF, &receiveBuffer, socklen_t(MemoryLayout<Int32>.size))
        try socket.connect(port: server.port)
        defer { socket.close() }
        socket.send("GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
        // What may sit between the two ends besides the stream's own output: the server's
        // send buffer (at most tcp_wmem's maximum) and this socket's receive buffer.
        var sendMax = 4 * 1024 * 1024
        if let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_wmem", encoding: .utf8),
           let last = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).last, let value = Int(last) { sendMax = value }
        var actualReceive: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(socket.fd, SOL_SOCKET, SO_RCVBUF, &actualReceive, &length)
        let inFlight = sendMax + Int(actualReceive) + watermark + pieceSize + 64 * 1024

        let reader = ChunkedReader(socket: socket, readSize: 16 * 1024)
        let head = try XCTUnwrap(reader.head())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 200"), head)
        XCTAssertTrue(head.lowercased().contains("transfer-encoding: chunked"), head)
        var received = 0, mismatches = 0, worstLead = 0, pauses = 0
        let pauseEvery = total / 10
        try reader.body { bytes in
            if !HTTPStreamTests.matches(bytes, at: received) { mismatches += 1 }
            received += bytes.count
            // Read after this reader's own count: the server can be ahead by no more than
            // what the buffers between hold.
            worstLead = max(worstLead, seen.written.snapshot - received)
            // Only where the writer cannot have finished: it may be up to `inFlight` ahead.
            if received >= (pauses + 1) * pauseEvery && received + inFlight < total {
                // The reader stops: the writer must come to wait for it, short of the end.
                pauses += 1
                XCTAssertTrue(waitUntil { seen.parked.snapshot }, "the writer waits for a stopped reader")
                let written = seen.written.snapshot
                XCTAssertLessThan(written, total, "the writer ran to the end past a stopped reader")
                worstLead = max(worstLead, written - received)
            }
        }
        XCTAssertGreaterThanOrEqual(pauses, 2, "the reader stopped midway")
        XCTAssertEqual(received, total)
        XCTAssertEqual(mismatches, 0, "pieces with a byte out of place")
        XCTAssertTrue(seen.finished.wait())
        XCTAssertLessThanOrEqual(worstLead, inFlight, "the stream ran ahead of its reader")
        XCTAssertGreaterThan(seen.parks.snapshot, 0, "the stream waited for its reader")
        XCTAssertGreaterThan(seen.peak.snapshot, 0)
        XCTAssertLessThanOrEqual(seen.peak.snapshot, watermark + pieceSize + 32, "output stays within the watermark and one piece")
        // The connection goes on after the stream's last chunk.
        socket.send("GET /hello HTTP/1.1\r\nHost: test\r\n\r\n")
        let next = try XCTUnwrap(reader.head())
        XCTAssertTrue(next.hasPrefix("HTTP/1.1 200"), next)
    }

    func testSendWaitsAndDeliversEverythingOverHTTP11AndHTTP10() throws {
        let total = underTSan ? 4_000_000 : 16_000_000
        let pieceSize = 100_000, watermark = 128 * 1024
        let runtime = try startedRuntime()
        let peak = Locked(0)
        let server = try serve(runtime) { routes in
            routes.stream("/sent") { request in
                guard let stream = request.startStream(highWatermark: watermark) else { return }
                var offset = 0
                while offset < total {
                    let n = min(pieceSize, total - offset)
                    try await stream.send(HTTPStreamTests.piece(at: offset, count: n))
                    offset += n
                }
                XCTAssertEqual(stream.bytesWritten, total)
                peak.withLock { $0 = max($0, stream.peakBufferedBytes) }
                stream.end()
                XCTAssertFalse(stream.isOpen)
            }
        }
        let expected = HTTPStreamTests.piece(at: 0, count: total)
        for version in ["--http1.1", "--http1.0"] {
            let result = try curl([version, "http://127.0.0.1:\(server.port)/sent"])
            XCTAssertEqual(result.status, 0, version)
            XCTAssertEqual(result.output.count, total, version)
            XCTAssertTrue(result.output == expected, version)
        }
        XCTAssertLessThanOrEqual(peak.snapshot, watermark + pieceSize + 32)
    }

    func testServerSentEventsReachCurlInTheirFormat() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime) { routes in
            routes.stream("/events") { request in
                guard let events = request.startEventStream() else { return }
                events.send(data: "first")
                events.send(data: "two\nlines", event: "update", id: "7")
                events.comment("keep-alive")
                events.send(data: "bad\r\nfield", event: "a\nb")
                events.stream.end()
                XCTAssertFalse(events.send(data: "after the end"))
            }
        }
        let result = try curl(["-N", "-D", "-", "http://127.0.0.1:\(server.port)/events"])
        XCTAssertEqual(result.status, 0)
        let text = String(decoding: result.output, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        XCTAssertEqual(parts.count, 2, text)
        let head = parts[0].lowercased()
        XCTAssertTrue(head.contains("content-type: text/event-stream"), head)
        XCTAssertTrue(head.contains("cache-control: no-cache"), head)
        XCTAssertEqual(parts.last, "data: first\n\nevent: update\nid: 7\ndata: two\ndata: lines\n\n: keep-alive\n\nevent: a b\ndata: bad\ndata: field\n\n")
    }

    func testClientLeavingMidStreamFailsSendAndClosesTheStream() throws {
        let runtime = try startedRuntime()
        let seen = Observed()
        let server = try serve(runtime) { routes in
            routes.stream("/endless") { request in
                guard let stream = request.startStream(highWatermark: 64 * 1024) else { return }
                let piece = [UInt8](repeating: 0x61, count: 16 * 1024)
                do {
                    while true { try await stream.send(piece) }
                } catch {
                    seen.error.withLock { $0 = "\(error)" }
                    XCTAssertFalse(stream.isOpen)
                    XCTAssertFalse(stream.write(piece))
                }
                seen.finished.fire()
            }
        }
        let socket = try TestClient(port: server.port)
        socket.send("GET /endless HTTP/1.1\r\nHost: test\r\n\r\n")
        XCTAssertEqual(socket.receive(200_000).count, 200_000)
        socket.reset()
        XCTAssertTrue(seen.finished.wait(), "send must fail once the client has gone")
        let error = try XCTUnwrap(seen.error.snapshot)
        XCTAssertTrue(error.contains("HTTPResponseStream.send"), error)
        // The server goes on serving.
        XCTAssertEqual(try curl(["http://127.0.0.1:\(server.port)/hello"]).output, Array("hello".utf8))
    }

    func testHeadStreamHasNoBodyAndTheConnectionGoesOn() throws {
        let runtime = try startedRuntime()
        let counted = Locked(0)
        let server = try serve(runtime) { routes in
            routes.stream("/s") { request in
                guard let stream = request.startStream(headers: [("X-Stream", "yes")]) else { return }
                XCTAssertTrue(stream.write("not sent for HEAD"))
                counted.withLock { $0 = stream.bytesWritten }
                stream.end()
            }
        }
        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        client.send("HEAD /s HTTP/1.1\r\nHost: test\r\n\r\n")
        let head = try XCTUnwrap(client.response(head: true))
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.headers["x-stream"], "yes")
        XCTAssertEqual(head.body, [])
        XCTAssertEqual(client.get("/hello")?.text, "hello", "no body bytes came between the answers")
        XCTAssertEqual(counted.snapshot, "not sent for HEAD".utf8.count)
    }

    struct Refused: Error {}

    func testFailuresBeforeAndAfterStartingAndAStreamDroppedWithoutEnd() throws {
        let runtime = try startedRuntime()
        let respondedAfterStart = Locked<Bool?>(nil)
        let server = try serve(runtime) { routes in
            routes.stream("/throws-first") { _ in throw Refused() }
            routes.stream("/throws-midway") { request in
                guard let stream = request.startStream() else { return }
                stream.write("partial")
                throw Refused()
            }
            routes.stream("/aborts") { request in
                guard let stream = request.startStream() else { return }
                stream.write("partial")
                stream.abort()
                XCTAssertFalse(stream.isOpen)
            }
            routes.stream("/dropped") { request in
                let stream = request.startStream()
                stream?.write("complete")
                respondedAfterStart.withLock { $0 = request.respond(.ok, text: "second answer") }
                XCTAssertNil(request.startStream(), "one answer per request")
            }
        }
        let base = "http://127.0.0.1:\(server.port)"
        let first = try curl(["-w", " %{http_code}", base + "/throws-first"])
        XCTAssertEqual(String(decoding: first.output, as: UTF8.self), "Internal Server Error\n 500")
        // curl's 18: the connection closed with the chunked body unfinished.
        for path in ["/throws-midway", "/aborts"] {
            let cut = try curl([base + path])
            XCTAssertEqual(cut.status, 18, path)
            XCTAssertEqual(cut.output, Array("partial".utf8), path)
        }
        let dropped = try curl([base + "/dropped"])
        XCTAssertEqual(dropped.status, 0)
        XCTAssertEqual(dropped.output, Array("complete".utf8))
        XCTAssertEqual(respondedAfterStart.snapshot, false)
    }
}

/// Reads an HTTP/1.1 answer with a chunked body from a blocking socket, a little at a time.
private final class ChunkedReader {
    private let socket: TestClient
    private let readSize: Int
    private var buffer: [UInt8] = []
    private var start = 0

    init(socket: TestClient, readSize: Int) {
        self.socket = socket
        self.readSize = readSize
    }

    struct Malformed: Error { let what: String }

    private func fill() throws {
        if start > 1 << 20 {
            buffer.removeFirst(start)
            start = 0
        }
        var chunk = [UInt8](repeating: 0, count: readSize)
        let n = recv(socket.fd, &chunk, chunk.count, 0)
        guard n > 0 else { throw Malformed(what: "the connection closed or went silent") }
        buffer += chunk[..<n]
    }

    private func line() throws -> String {
        while true {
            if let end = buffer[start...].firstRange(of: [13, 10]) {
                let text = String(decoding: buffer[start..<end.lowerBound], as: UTF8.self)
                start = end.upperBound
                return text
            }
            try fill()
        }
    }

    /// The status line and headers, up to the blank line.
    func head() throws -> String? {
        var lines: [String] = []
        while true {
            let next = try line()
            if next.isEmpty { return lines.joined(separator: "\r\n") }
            lines.append(next)
        }
    }

    /// The chunks' contents, passed on as they arrive, to the last (empty) chunk.
    func body(_ consume: (ArraySlice<UInt8>) -> Void) throws {
        while true {
            let sizeLine = try line()
            guard var size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16) else { throw Malformed(what: "chunk size") }
            if size == 0 {
                guard try line().isEmpty else { throw Malformed(what: "trailer") }
                return
            }
            while size > 0 {
                if start == buffer.count { try fill() }
                let n = min(size, buffer.count - start)
                consume(buffer[start..<(start + n)])
                start += n
                size -= n
            }
            guard try line().isEmpty else { throw Malformed(what: "chunk end") }
        }
    }
}
