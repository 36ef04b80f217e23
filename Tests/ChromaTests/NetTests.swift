@testable import Chroma
import Foundation
import SystemPackage
import XCTest

/// TCP: echo, many connections, the stalled half-line client, accept under EMFILE, a peer
/// that resets mid-write, client connect, backpressure, shutdown.
final class NetTests: XCTestCase {
    /// An echo server recording how each connection closed (and, given `accepted`, the
    /// connections themselves).
    private func echoServer(_ runtime: Runtime, accepted: Locked<[Connection]>? = nil) throws -> (Listener, Locked<[CloseReason]>) {
        let reasons = Locked<[CloseReason]>([])
        let listener = try runtime.listen(host: "127.0.0.1", port: 0) { connection in
            XCTAssertEqual(Color.current, connection.color, "the accept handler runs on the connection's color")
            accepted?.withLock { $0.append(connection) }
            connection.onLines { line in connection.write(line + [10]) }
            connection.onClose { reason in reasons.withLock { $0.append(reason) } }
        }
        return (listener, reasons)
    }

    func testEchoLinesAndHalfClose() throws {
        let runtime = try startedRuntime(loops: 2)
        let (listener, reasons) = try echoServer(runtime)
        XCTAssertGreaterThan(listener.port, 0)
        let client = try TestClient(port: listener.port)
        defer { client.close() }
        client.send("hello\nworld\r\npart")
        XCTAssertEqual(String(decoding: client.receive(12), as: UTF8.self), "hello\nworld\n", "CRLF and LF both end a line")
        client.send("ial")
        shutdown(client.fd, Int32(SHUT_WR))
        XCTAssertEqual(String(decoding: client.receive(100), as: UTF8.self), "partial\n",
                       "the last line without a newline is delivered at end of input, its echo written before the close")
        XCTAssertTrue(waitUntil { reasons.snapshot == [.peerClosed] })
    }

    /// 1,000 concurrent connections, each with verified echoes.
    func testAThousandConcurrentConnections() throws {
        let count = underTSan ? 200 : 1000
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < rlim_t(3 * count + 200) {
            limit.rlim_cur = min(limit.rlim_max, rlim_t(3 * count + 200))
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let runtime = try startedRuntime(loops: 2)
        let (listener, _) = try echoServer(runtime)
        let clients = try (0..<count).map { _ in try TestClient(port: listener.port) }
        defer { for c in clients { c.close() } }
        for (i, client) in clients.enumerated() { client.send("connection \(i) line 1\nconnection \(i) line 2\n") }
        var wrong = 0
        for (i, client) in clients.enumerated() {
            let expected = "connection \(i) line 1\nconnection \(i) line 2\n"
            if String(decoding: client.receive(expected.utf8.count), as: UTF8.self) != expected { wrong += 1 }
        }
        XCTAssertEqual(wrong, 0, "every connection got exactly its own lines back")
    }

    /// CS:APP 12.2.2: a client sends half a line and stops. Others are still served while it
    /// stalls (no timeout is set yet, so it is still connected for every answer), and the
    /// idle (read) timeout, once set, closes the stalled one.
    func testStalledHalfLineClientDoesNotBlockOthersAndTimesOut() throws {
        let runtime = try startedRuntime(loops: 1)  // one loop: the stall and the others share it
        let accepted = Locked<[Connection]>([])
        let (listener, reasons) = try echoServer(runtime, accepted: accepted)
        let stalled = try TestClient(port: listener.port)
        defer { stalled.close() }
        stalled.send("GET / HTTP/1.1 and then noth")
        let other = try TestClient(port: listener.port)
        defer { other.close() }
        for i in 0..<20 {
            other.send("ping \(i)\n")
            let expected = "ping \(i)\n"
            XCTAssertEqual(String(decoding: other.receive(expected.utf8.count), as: UTF8.self), expected)
        }
        XCTAssertEqual(reasons.snapshot, [], "every ping was answered while the stalled client held its half line")
        XCTAssertTrue(waitUntil { accepted.snapshot.count == 2 })
        for connection in accepted.snapshot { connection.setTimeouts(read: .milliseconds(300)) }
        XCTAssertTrue(stalled.waitForClose(), "the stalled client was closed")
        XCTAssertTrue(waitUntil { reasons.snapshot == [.readTimeout, .readTimeout] }, "both idle connections timed out: \(reasons.snapshot)")
    }

    /// Accept under EMFILE: the server neither spins nor dies, and serves again once
    /// descriptors free up.
    func testAcceptUnderEMFILEPausesAndRecovers() throws {
        let runtime = try startedRuntime(loops: 1)
        let (listener, _) = try echoServer(runtime)
        // Client sockets exist before the limit drops; connecting them needs no descriptor.
        let clients = (0..<4).map { _ in TestClient() }
        defer { for c in clients { c.close() } }
        let exhausted = DescriptorExhaustion()
        defer { exhausted.end() }
        for client in clients { try client.connect(port: listener.port) }
        XCTAssertTrue(waitUntil { listener.acceptFailures > 0 }, "accept failed with EMFILE")
        // Not spinning: while three more retries fail (at least two retry delays), the loop
        // thread uses a small fraction of a core.
        let firstFailures = listener.acceptFailures
        let (wallStart, cpuStart) = (monotonicSeconds(), threadCPUSeconds(named: "chroma-loop-0"))
        XCTAssertTrue(waitUntil { listener.acceptFailures >= firstFailures + 3 }, "it kept retrying")
        let (wall, cpu) = (monotonicSeconds() - wallStart, threadCPUSeconds(named: "chroma-loop-0") - cpuStart)
        XCTAssertGreaterThanOrEqual(wall, 0.15, "retries are paced by the retry delay")
        XCTAssertLessThan(cpu / wall, 0.25, "the loop paused accepting instead of spinning (\(cpu) s of CPU in \(wall) s)")
        exhausted.end()
        for (i, client) in clients.enumerated() {
            let expected = "back \(i)\n"
            client.send(expected)
            XCTAssertEqual(String(decoding: client.receive(expected.utf8.count), as: UTF8.self), expected, "served again once descriptors freed up")
        }
    }

    /// A peer that resets while the server writes to it: only that connection closes (with
    /// an error), the process survives (no SIGPIPE), and other connections go on.
    func testPeerResetMidWriteDisturbsNoOne() throws {
        let runtime = try startedRuntime(loops: 1)
        let reasons = Locked<[CloseReason]>([])
        let big = [UInt8](repeating: UInt8(ascii: "z"), count: 4 << 20)
        let listener = try runtime.listen(host: "127.0.0.1", port: 0) { connection in
            connection.onLines { line in
                if line == Array("flood".utf8) { connection.write(big) } else { connection.write(line + [10]) }
            }
            connection.onClose { reason in reasons.withLock { $0.append(reason) } }
        }
        let other = try TestClient(port: listener.port)
        defer { other.close() }
        for round in 0..<5 {
            let victim = try TestClient(port: listener.port)
            victim.send("flood\n")
            _ = victim.receive(1000)  // the server is writing
            victim.reset()
            let expected = "still here \(round)\n"
            other.send(expected)
            XCTAssertEqual(String(decoding: other.receive(expected.utf8.count), as: UTF8.self), expected)
        }
        XCTAssertTrue(waitUntil { reasons.snapshot.count == 5 })
        for reason in reasons.snapshot {
            guard case .error(let errno) = reason else { return XCTFail("expected an error close, got \(reason)") }
            XCTAssertTrue(errno == .connectionReset || errno == .brokenPipe, "\(errno)")
        }
    }

    /// `connect`, then backpressure: with the peer not reading, writes fill the output to the
    /// high watermark (`isWritable` false); once the peer drains it, `onWritable` runs.
    func testConnectAndBackpressure() throws {
        let runtime = try startedRuntime(loops: 2)
        let serverFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(serverFD) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                XCTAssertEqual(bind(serverFD, $0, length), 0)
                XCTAssertEqual(Glibc.listen(serverFD, 8), 0)
                XCTAssertEqual(getsockname(serverFD, $0, &length), 0)
            }
        }
        let port = UInt16(bigEndian: address.sin_port)
        let connection = try waitFor { (done: @escaping @Sendable (Result<Connection, NetError>) -> Void) in
            try runtime.connect(host: "127.0.0.1", port: port, on: Color(3), completion: done)
        }.get()
        XCTAssertEqual(connection.color, Color(3))
        let accepted = accept(serverFD, nil, nil)
        XCTAssertGreaterThanOrEqual(accepted, 0)
        defer { Glibc.close(accepted) }
        let writable = Signal()
        let written = try waitFor { (done: @escaping @Sendable (Int) -> Void) in
            try runtime.execute(on: Color(3)) {
                connection.setWatermarks(low: 1024, high: 256 << 10)
                connection.onWritable { writable.fire() }
                var total = 0
                // The kernel's socket buffers take some first; keep going until it backs up.
                for _ in 0..<4096 where connection.isWritable {
                    connection.write([UInt8](repeating: 7, count: 16 << 10))
                    total += 16 << 10
                }
                XCTAssertFalse(connection.isWritable, "the output reached the high watermark")
                done(total)
            }
        }
        // Drain from the peer's side.
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while received < written {
            let n = recv(accepted, &buffer, buffer.count, 0)
            if n <= 0 { break }
            received += n
        }
        XCTAssertEqual(received, written, "every byte queued reached the peer")
        XCTAssertTrue(writable.wait(), "onWritable ran once the output drained")
        // A closed port: refused.
        let refused = try waitFor { (done: @escaping @Sendable (Result<Connection, NetError>) -> Void) in
            try runtime.connect(host: "127.0.0.1", port: 1, completion: done)
        }
        guard case .failure(let error) = refused else { return XCTFail("connected to a closed port") }
        XCTAssertEqual(error, NetError(operation: "connect", address: "127.0.0.1:1", code: .system(.connectionRefused)))
    }

    func testShutdownClosesConnections() throws {
        let runtime = try Runtime(loops: 2)
        try runtime.start()
        let (listener, reasons) = try echoServer(runtime)
        let client = try TestClient(port: listener.port)
        defer { client.close() }
        client.send("x\n")
        XCTAssertEqual(client.receive(2), Array("x\n".utf8))
        try runtime.shutdown()
        XCTAssertEqual(reasons.snapshot, [.shutdown])
        XCTAssertTrue(client.waitForClose())
        XCTAssertThrowsError(try runtime.listen(port: 0) { _ in })
    }

    /// One acceptor: loop 0 accepts and hands connections round-robin to every loop.
    func testOneAcceptorSpreadsConnectionsAcrossLoops() throws {
        let runtime = try startedRuntime(loops: 2)
        let loopsSeen = Locked<[Int: Int]>([:])
        let listener = try runtime.listen(host: "127.0.0.1", port: 0, acceptors: .oneLoop) { connection in
            XCTAssertEqual(Color.current, connection.color)
            loopsSeen.withLock { $0[runtime.loopIndex(of: connection.color), default: 0] += 1 }
            connection.onLines { line in connection.write(line + [10]) }
        }
        let clients = try (0..<10).map { _ in try TestClient(port: listener.port) }
        defer { for c in clients { c.close() } }
        for (i, client) in clients.enumerated() {
            let expected = "hello \(i)\n"
            client.send(expected)
            XCTAssertEqual(String(decoding: client.receive(expected.utf8.count), as: UTF8.self), expected)
        }
        XCTAssertEqual(loopsSeen.snapshot, [0: 5, 1: 5], "round-robin over both loops")
    }
}
