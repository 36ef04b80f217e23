@testable import Chroma
@testable import ChromaHTTP
import Foundation
import TestSupport
import XCTest

/// HTTPS with curl against a self-signed certificate made by the openssl CLI (installed by
/// `make setup`): plain answers, keep-alive, big files and ranges (encrypted from memory, not
/// sendfile), streamed answers, a plain-HTTP client on the TLS port, and the configuration's
/// errors.
final class HTTPSTests: XCTestCase {
    private var scratch: ScratchDirectory!
    private var certificate: String { scratch.path + "/cert.pem" }
    private var key: String { scratch.path + "/key.pem" }
    /// A key that belongs to another certificate.
    private var otherKey: String { scratch.path + "/other-key.pem" }
    /// 3 MB, no two 1 KiB stretches alike, so a slice from the wrong offset cannot pass.
    private var big: [UInt8] = []

    override func setUpWithError() throws {
        scratch = try ScratchDirectory("https", creating: ["www"])
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate, "-days", "2",
                     "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
        try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", otherKey])
        big = (0..<3_000_000).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
        try scratch.write(big, to: "www/big.bin")
    }

    override func tearDownWithError() throws {
        scratch.remove()
    }

    private func openssl(_ arguments: [String]) throws {
        let child = try Child("openssl", arguments)
        XCTAssertEqual(child.wait(), .exited(0), "openssl \(arguments.first ?? "")")
    }

    /// A server with /hello, the scratch files under /files, and a 4 MB streamed /stream.
    private func serve(_ runtime: Runtime) throws -> HTTPServer {
        let tls = try HTTPSConfiguration(certificateFile: certificate, keyFile: key)
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(.ok, text: "Hello, World!") }
        routes.files(at: "/files", StaticFiles(root: scratch.path + "/www"))
        routes.stream("/stream") { request in
            guard let stream = request.startStream(highWatermark: 256 * 1024) else { return }
            var offset = 0
            while offset < HTTPSTests.streamed {
                let n = min(100_000, HTTPSTests.streamed - offset)
                try await stream.send(HTTPSTests.piece(at: offset, count: n))
                offset += n
            }
            stream.end()
        }
        return try runtime.serveHTTPS(host: "127.0.0.1", port: 0, tls: tls, routes: routes)
    }

    private static let streamed = 4_000_000

    private static func piece(at offset: Int, count: Int) -> [UInt8] {
        (offset..<offset + count).map { UInt8(truncatingIfNeeded: ($0 &* 40_503) >> 7) }
    }

    /// curl trusting only the test's certificate, with localhost resolved to the server.
    private func https(_ server: HTTPServer, _ arguments: [String]) throws -> (output: [UInt8], status: Int32) {
        try curl(["--cacert", certificate, "--resolve", "localhost:\(server.port):127.0.0.1"] + arguments)
    }

    private func url(_ server: HTTPServer, _ path: String) -> String { "https://localhost:\(server.port)\(path)" }

    func testAGetOverHTTPSIsAnsweredAndTheCertificateVerifies() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        let result = try https(server, [url(server, "/hello")])
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(String(decoding: result.output, as: UTF8.self), "Hello, World!")
        XCTAssertEqual(server.stats.answers.successful, 1)
    }

    /// An answer's head and body are separate pieces of the output; under TLS each write is
    /// a record of its own, so a small answer must be joined first and leave as one record.
    /// Counted with `openssl s_client -msg`, which prints every record it receives: after the
    /// handshake, each record is a header line and an inner-content line, followed by a
    /// handshake message (a session ticket) or an alert (close_notify), or else by the
    /// application data it carried.
    func testASmallAnswerLeavesInOneTLSRecord() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        let request = "GET /hello HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
        let child = try Child("sh", ["-c", "printf '\(request)' | openssl s_client -connect 127.0.0.1:\(server.port) -msg -ign_eof -quiet 2>&1"],
                              standardOutput: .pipe)
        let lines = String(decoding: child.readToEnd(child.standardOutput!), as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(child.wait(), .exited(0))
        XCTAssertTrue(lines.contains { $0.hasSuffix("Hello, World!") || $0.contains("Hello, World!<<<") }, "the answer arrived")
        let received = lines.filter { $0.hasPrefix("<<< ") }
        var applicationRecords = 0
        for (index, line) in received.enumerated() where line.contains("InnerContent") {
            let next = index + 1 < received.count ? received[index + 1] : ""
            if !next.contains("Handshake") && !next.contains("Alert") { applicationRecords += 1 }
        }
        XCTAssertEqual(applicationRecords, 1, "head and body of a 13-byte answer in one record:\n" + received.joined(separator: "\n"))
    }

    func testTwoRequestsInOneCurlShareOneTLSConnection() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        let result = try https(server, ["-w", " connects=%{num_connects}\n", url(server, "/hello"), url(server, "/hello")])
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(String(decoding: result.output, as: UTF8.self),
                       "Hello, World! connects=1\nHello, World! connects=0\n", "the second request reuses the connection")
        XCTAssertEqual(server.stats.connections, 1)
        XCTAssertEqual(server.stats.requests, 2)
    }

    func testABigFileAndARangeOfItArriveByteExact() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        let whole = try https(server, [url(server, "/files/big.bin")])
        XCTAssertEqual(whole.status, 0)
        XCTAssertEqual(whole.output.count, big.count)
        XCTAssertTrue(whole.output == big, "the whole file, byte for byte")
        let range = try https(server, ["-r", "1000000-2100000", "-D", scratch.path + "/head.txt", url(server, "/files/big.bin")])
        XCTAssertEqual(range.status, 0)
        let head = try String(contentsOfFile: scratch.path + "/head.txt", encoding: .utf8)
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 206"), head)
        XCTAssertTrue(range.output == Array(big[1_000_000...2_100_000]), "the slice, byte for byte (\(range.output.count) bytes)")
        // Twice on one connection: the second answer starts where the first one's writes left the session.
        let twice = try https(server, ["-w", "%{num_connects}", url(server, "/files/big.bin"), url(server, "/files/big.bin")])
        XCTAssertEqual(twice.status, 0)
        XCTAssertTrue(twice.output == big + Array("1".utf8) + big + Array("0".utf8), "both answers byte for byte, one connection (\(twice.output.count) bytes)")
    }

    func testAHeadOverTheLimitIsAnswered413OverTLS() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        // 20 KB: more than one TLS record, so the limit is seen before the head's end.
        let header = "X-Big: " + String(repeating: "a", count: 20_000)
        let result = try https(server, ["-H", header, "-o", "/dev/null", "-w", "%{http_code}", url(server, "/hello")])
        XCTAssertEqual(String(decoding: result.output, as: UTF8.self), "413")
        let good = try https(server, [url(server, "/hello")])
        XCTAssertEqual(String(decoding: good.output, as: UTF8.self), "Hello, World!")
    }

    func testAStreamedAnswerArrivesByteExact() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        let result = try https(server, [url(server, "/stream")])
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(result.output.count, HTTPSTests.streamed)
        XCTAssertTrue(result.output == HTTPSTests.piece(at: 0, count: HTTPSTests.streamed), "the streamed body, byte for byte")
    }

    func testAPlainHTTPClientOnTheTLSPortFailsAloneAndTheServerGoesOn() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        let plain = try curl(["--max-time", "10", "http://127.0.0.1:\(server.port)/hello"])
        XCTAssertNotEqual(plain.status, 0, "no answer for plain HTTP")
        XCTAssertNotEqual(plain.status, 28, "refused at once, not left to time out")
        let good = try https(server, [url(server, "/hello")])
        XCTAssertEqual(good.status, 0)
        XCTAssertEqual(String(decoding: good.output, as: UTF8.self), "Hello, World!")
        XCTAssertTrue(waitUntil { server.stats.openConnections == 0 }, "the failed handshake's connection was closed")
    }

    func testAMissingCertificateFileIsNamedInTheError() {
        let missing = scratch.path + "/absent.pem"
        XCTAssertThrowsError(try HTTPSConfiguration(certificateFile: missing, keyFile: key)) { error in
            guard case ChromaError.system(_, "open", ENOENT) = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains(missing), "\(error)")
        }
    }

    func testAFileThatHoldsNoCertificateIsNamedInTheError() throws {
        let garbage = scratch.path + "/garbage.pem"
        try scratch.write(Array("not a certificate\n".utf8), to: "garbage.pem")
        XCTAssertThrowsError(try HTTPSConfiguration(certificateFile: garbage, keyFile: key)) { error in
            guard case ChromaError.invalidArgument = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains(garbage) && "\(error)".contains("certificate"), "\(error)")
        }
        // A certificate given as the key.
        XCTAssertThrowsError(try HTTPSConfiguration(certificateFile: certificate, keyFile: certificate)) { error in
            guard case ChromaError.invalidArgument = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains(certificate) && "\(error)".contains("key"), "\(error)")
        }
    }

    func testAKeyThatDoesNotMatchTheCertificateIsRefused() {
        XCTAssertThrowsError(try HTTPSConfiguration(certificateFile: certificate, keyFile: otherKey)) { error in
            guard case ChromaError.invalidArgument = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains(otherKey) && "\(error)".contains("does not match"), "\(error)")
        }
    }
}
