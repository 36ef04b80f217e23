@testable import Chroma
@testable import ChromaHTTP
import Foundation
import XCTest

/// What file routes do for browsers, CDNs and download managers, driven with curl and a raw
/// client: validators and 304/412, ranges (206, 416, multipart, If-Range), the LRU cache,
/// directory listings, and a handler's own validators.
final class HTTPFileFeatureTests: XCTestCase {
    private var scratch: ScratchDirectory!
    private var root: String { scratch.path }
    /// 3 MB, past the small-file cache: served with sendfile.
    private var big: [UInt8] = []
    /// 10 KB, cached in memory.
    private var small: [UInt8] = []

    override func setUpWithError() throws {
        scratch = try ScratchDirectory("http-files", creating: ["sub", "listed", "listed/inner"])
        // No two 1 KiB stretches alike, so a slice from the wrong offset cannot pass.
        big = (0..<3_000_000).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
        small = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try scratch.write(big, to: "big.bin")
        try scratch.write(small, to: "small.bin")
        try scratch.write(Array("<p>index</p>".utf8), to: "sub/index.html")
        try scratch.write(Array("a".utf8), to: "listed/a <b>&.txt")
        try scratch.write(Array("hello".utf8), to: "listed/b.txt")
    }

    override func tearDownWithError() throws {
        scratch.remove()
    }

    private func serve(_ runtime: Runtime, _ files: StaticFiles? = nil, _ configure: (inout HTTPRoutes) -> Void = { _ in }) throws -> HTTPServer {
        var routes = HTTPRoutes()
        configure(&routes)
        routes.files(at: "/", files ?? StaticFiles(root: root))
        return try runtime.serveHTTP(host: "127.0.0.1", port: 0, routes: routes)
    }

    func testValidatorsAnd304And412WithCurl() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        let etagFile = root + "/etag.txt"
        for name in ["small.bin", "big.bin"] {
            let url = "http://127.0.0.1:\(server.port)/\(name)"
            // The first answer saves its tag; comparing with it answers 304 with no body.
            let first = try curl(["--etag-save", etagFile, "-o", "/dev/null", "-w", "%{http_code}", url])
            XCTAssertEqual(String(decoding: first.output, as: UTF8.self), "200", name)
            let tag = try String(contentsOfFile: etagFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            XCTAssertTrue(tag.hasPrefix("\"") && tag.hasSuffix("\"") && tag.count > 4, "a strong tag: \(tag)")
            let revalidated = try curl(["--etag-compare", etagFile, "-w", "%{http_code}", url])
            XCTAssertEqual(String(decoding: revalidated.output, as: UTF8.self), "304", name)
            // -z: If-Modified-Since from the file's own time; an older date gets the file.
            let notModified = try curl(["-z", root + "/" + name, "-o", "/dev/null", "-w", "%{http_code}", url])
            XCTAssertEqual(String(decoding: notModified.output, as: UTF8.self), "304", name)
            let modified = try curl(["-z", "Sun, 06 Nov 1994 08:49:37 GMT", "-o", "/dev/null", "-w", "%{http_code}", url])
            XCTAssertEqual(String(decoding: modified.output, as: UTF8.self), "200", name)
            let failed = try curl(["-H", "If-Match: \"not-this\"", "-o", "/dev/null", "-w", "%{http_code}", url])
            XCTAssertEqual(String(decoding: failed.output, as: UTF8.self), "412", name)
            let matched = try curl(["-H", "If-Match: \(tag)", "-o", "/dev/null", "-w", "%{http_code}", url])
            XCTAssertEqual(String(decoding: matched.output, as: UTF8.self), "200", name)
            let unmodified = try curl(["-H", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT", "-o", "/dev/null", "-w", "%{http_code}", url])
            XCTAssertEqual(String(decoding: unmodified.output, as: UTF8.self), "412", name)
        }
        // The headers themselves, and a 304 on a keep-alive connection that then goes on.
        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        let answer = try XCTUnwrap(client.get("/small.bin"))
        let etag = try XCTUnwrap(answer.headers["etag"]), lastModified = try XCTUnwrap(answer.headers["last-modified"])
        XCTAssertEqual(answer.headers["accept-ranges"], "bytes")
        var info = stat()
        XCTAssertEqual(stat(root + "/small.bin", &info), 0)
        XCTAssertEqual(HTTPDateText.parse(lastModified), info.st_mtim.tv_sec)
        let cached = try XCTUnwrap(client.get("/small.bin", headers: "If-None-Match: \(etag)\r\n"))
        XCTAssertEqual(cached.status, 304)
        XCTAssertEqual(cached.body, [])
        XCTAssertEqual(cached.headers["etag"], etag)
        XCTAssertNil(cached.headers["content-length"])
        XCTAssertEqual(client.get("/small.bin")?.body, small, "the connection goes on after a 304")
        // A changed file gets a new tag: the old one no longer matches.
        try scratch.write(Array("changed".utf8), to: "changed.txt")
        let before = try XCTUnwrap(client.get("/changed.txt")?.headers["etag"])
        try scratch.write(Array("changed again, longer".utf8), to: "changed.txt")
        let server2 = try serve(runtime, StaticFiles(root: root, revalidateAfter: .zero))
        let other = try HTTPTestClient(port: server2.port)
        defer { other.close() }
        let after = try XCTUnwrap(other.get("/changed.txt", headers: "If-None-Match: \(before)\r\n"))
        XCTAssertEqual(after.status, 200)
        XCTAssertNotEqual(after.headers["etag"], before)
    }

    func testHandlersGetConditionalAnswersFromTheirOwnValidators() throws {
        let runtime = try startedRuntime()
        let validators = HTTPValidators(etag: "\"v7\"", lastModified: 1_000_000)
        let server = try serve(runtime) { routes in
            routes.get("/doc") { request in
                request.respond(HTTPResponse(status: .ok, headers: validators.headers, body: Array("document".utf8)))
            }
            routes.get("/async-doc") { _ async throws -> HTTPResponse in
                HTTPResponse(status: .ok, headers: validators.headers, body: Array("document".utf8))
            }
            routes.add("PUT", "/doc") { request in
                switch request.preconditions(validators) {
                case .proceed: request.respond(.ok, text: "stored")
                case .failed: request.respond(.preconditionFailed, text: "stale")
                case .notModified: request.respond(.notModified, text: "")
                }
            }
        }
        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        for path in ["/doc", "/async-doc"] {
            XCTAssertEqual(client.get(path)?.text, "document")
            XCTAssertEqual(client.get(path, headers: "If-None-Match: \"v7\"\r\n")?.status, 304, path)
            XCTAssertEqual(client.get(path, headers: "If-Modified-Since: \(HTTPDateText.format(1_000_000))\r\n")?.status, 304, path)
            XCTAssertEqual(client.get(path, headers: "If-None-Match: \"v6\"\r\n")?.status, 200, path)
            XCTAssertEqual(client.get(path, headers: "If-Match: \"v6\"\r\n")?.status, 412, path)
        }
        client.send("PUT /doc HTTP/1.1\r\nHost: t\r\nIf-Match: \"v6\"\r\nContent-Length: 0\r\n\r\n")
        XCTAssertEqual(client.response()?.status, 412)
        client.send("PUT /doc HTTP/1.1\r\nHost: t\r\nIf-Match: \"v7\"\r\nContent-Length: 0\r\n\r\n")
        XCTAssertEqual(client.response()?.text, "stored")
    }

    func testRangesWithCurl() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        for (name, content) in [("big.bin", big), ("small.bin", small)] {
            let url = "http://127.0.0.1:\(server.port)/\(name)"
            let first = try curl(["-r", "0-99", "-w", "\n%{http_code}", url])
            XCTAssertEqual(Array(first.output.dropLast(4)), Array(content[0..<100]), name)
            XCTAssertEqual(String(decoding: first.output.suffix(3), as: UTF8.self), "206", name)
            let tail = try curl(["-r", "-1000", url])
            XCTAssertEqual(tail.output, Array(content.suffix(1000)), name)
            let middle = try curl(["-r", "5000-", url])
            XCTAssertEqual(middle.output, Array(content[5000...]), name)
            let outside = try curl(["-r", "\(content.count)-", "-o", "/dev/null", "-w", "%{http_code}", url])
            XCTAssertEqual(String(decoding: outside.output, as: UTF8.self), "416", name)
        }
        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        let partial = try XCTUnwrap(client.get("/big.bin", headers: "Range: bytes=1000000-1999999\r\n"))
        XCTAssertEqual(partial.status, 206)
        XCTAssertEqual(partial.headers["content-range"], "bytes 1000000-1999999/3000000")
        XCTAssertEqual(partial.body, Array(big[1_000_000..<2_000_000]))
        let unsatisfiable = try XCTUnwrap(client.get("/big.bin", headers: "Range: bytes=4000000-\r\n"))
        XCTAssertEqual(unsatisfiable.status, 416)
        XCTAssertEqual(unsatisfiable.headers["content-range"], "bytes */3000000")
        // If-Range: the current tag keeps the range; a stale one sends everything.
        let etag = try XCTUnwrap(client.get("/big.bin")?.headers["etag"])
        XCTAssertEqual(client.get("/big.bin", headers: "Range: bytes=0-9\r\nIf-Range: \(etag)\r\n")?.body, Array(big[0..<10]))
        let stale = try XCTUnwrap(client.get("/big.bin", headers: "Range: bytes=0-9\r\nIf-Range: \"old\"\r\n"))
        XCTAssertEqual(stale.status, 200)
        XCTAssertEqual(stale.body.count, big.count)
        // HEAD ignores Range (only GET has ranges); overlapping ranges get the whole file.
        client.send("HEAD /small.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n")
        let head = try XCTUnwrap(client.response(head: true))
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.headers["content-length"], String(small.count))
        let overlapping = try XCTUnwrap(client.get("/small.bin", headers: "Range: bytes=0-99,50-149\r\n"))
        XCTAssertEqual(overlapping.status, 200)
        XCTAssertEqual(overlapping.body, small)
    }

    func testMultipleRangesAnswerMultipartByteranges() throws {
        let runtime = try startedRuntime()
        let server = try serve(runtime)
        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        for (name, content) in [("big.bin", big), ("small.bin", small)] {
            let answer = try XCTUnwrap(client.get("/\(name)", headers: "Range: bytes=0-9,2000-2099,-5\r\n"))
            XCTAssertEqual(answer.status, 206, name)
            let type = try XCTUnwrap(answer.headers["content-type"])
            XCTAssertTrue(type.hasPrefix("multipart/byteranges; boundary="), type)
            let boundary = String(type.dropFirst("multipart/byteranges; boundary=".count))
            let parts = try multipartParts(answer.body, boundary: boundary)
            XCTAssertEqual(parts.map(\.range), ["bytes 0-9/\(content.count)", "bytes 2000-2099/\(content.count)",
                                                "bytes \(content.count - 5)-\(content.count - 1)/\(content.count)"], name)
            XCTAssertEqual(parts.map(\.body), [Array(content[0..<10]), Array(content[2000..<2100]), Array(content.suffix(5))], name)
            XCTAssertEqual(parts.map(\.type), Array(repeating: "application/octet-stream", count: 3))
        }
    }

    /// Splits a multipart/byteranges body at `boundary`; each part's Content-Range,
    /// Content-Type and bytes.
    private func multipartParts(_ body: [UInt8], boundary: String) throws -> [(range: String, type: String, body: [UInt8])] {
        let delimiter = Array("--\(boundary)".utf8)
        var parts: [(String, String, [UInt8])] = []
        var rest = body[...]
        let first = try XCTUnwrap(rest.firstRange(of: delimiter), "no boundary in the body")
        rest = rest[first.upperBound...]
        while !rest.starts(with: Array("--".utf8)) {
            let headEnd = try XCTUnwrap(rest.firstRange(of: Array("\r\n\r\n".utf8)))
            let head = String(decoding: rest[..<headEnd.lowerBound], as: UTF8.self)
            var range = "", type = ""
            for line in head.components(separatedBy: "\r\n") {
                if line.lowercased().hasPrefix("content-range: ") { range = String(line.dropFirst(15)) }
                if line.lowercased().hasPrefix("content-type: ") { type = String(line.dropFirst(14)) }
            }
            let next = try XCTUnwrap(rest[headEnd.upperBound...].firstRange(of: Array("\r\n".utf8) + delimiter))
            parts.append((range, type, Array(rest[headEnd.upperBound..<next.lowerBound])))
            rest = rest[next.upperBound...]
        }
        XCTAssertEqual(Array(rest), Array("--\r\n".utf8), "the closing boundary ends the body")
        return parts
    }

    func testTheCacheEvictsTheLeastRecentlyUsedFile() throws {
        let runtime = try startedRuntime(loops: 1)
        for name in ["a", "b", "c", "d"] { try scratch.write([UInt8](repeating: 1, count: 1000), to: name) }
        let server = try serve(runtime, StaticFiles(root: root, cacheCapacity: 3000, revalidateAfter: .seconds(3600)))
        let client = try HTTPTestClient(port: server.port)
        defer { client.close() }
        func get(_ name: String) { XCTAssertEqual(client.get("/" + name)?.status, 200, name) }
        get("a"); get("b"); get("c")
        var stats = server.stats.fileCache
        XCTAssertEqual([stats.misses, stats.hits, stats.evictions, stats.entries, stats.bytes], [3, 0, 0, 3, 3000])
        get("a")  // now b is the least recently used
        get("d")  // evicts b
        stats = server.stats.fileCache
        XCTAssertEqual([stats.misses, stats.hits, stats.evictions, stats.entries, stats.bytes], [4, 1, 1, 3, 3000])
        get("a"); get("c"); get("d")  // all still cached
        XCTAssertEqual(server.stats.fileCache.hits, 4)
        get("b")  // was evicted: a miss, which evicts a (the least recently used now)
        stats = server.stats.fileCache
        XCTAssertEqual([stats.misses, stats.hits, stats.evictions], [5, 4, 2])
        get("c")
        XCTAssertEqual(server.stats.fileCache.hits, 5)
        get("a")
        XCTAssertEqual(server.stats.fileCache.misses, 6, "a was evicted")
        // A file bigger than a loop's share is served but never cached.
        try scratch.write([UInt8](repeating: 2, count: 4000), to: "e")
        get("e"); get("e")
        stats = server.stats.fileCache
        XCTAssertEqual(stats.misses, 8)
        XCTAssertLessThanOrEqual(stats.bytes, 3000)
    }

    func testTheCacheCapacityIsSharedByTheLoops() throws {
        let runtime = try startedRuntime(loops: 2)
        let server = FileServer(files: StaticFiles(root: root, cacheCapacity: 1000), runtime: runtime)
        XCTAssertEqual(server.cacheShare, 500)
    }

    func testDirectoryIndexAndListing() throws {
        let runtime = try startedRuntime()
        let plain = try serve(runtime)
        let listing = try serve(runtime, StaticFiles(root: root, directoryListing: true))
        let a = try HTTPTestClient(port: plain.port), b = try HTTPTestClient(port: listing.port)
        defer { a.close(); b.close() }
        XCTAssertEqual(a.get("/sub/")?.text, "<p>index</p>", "index.html when present")
        XCTAssertEqual(b.get("/sub/")?.text, "<p>index</p>", "index.html comes before a listing")
        XCTAssertEqual(a.get("/listed/")?.status, 404, "no listing unless enabled")
        let page = try XCTUnwrap(b.get("/listed/"))
        XCTAssertEqual(page.status, 200)
        XCTAssertEqual(page.headers["content-type"], "text/html; charset=utf-8")
        XCTAssertTrue(page.text.contains("<a href=\"a%20%3Cb%3E%26.txt\">a &lt;b&gt;&amp;.txt</a> 1"), page.text)
        XCTAssertTrue(page.text.contains("<a href=\"b.txt\">b.txt</a> 5"), page.text)
        XCTAssertTrue(page.text.contains("<a href=\"inner/\">inner/</a>"), page.text)
        XCTAssertTrue(page.text.contains("<a href=\"../\">"), page.text)
        XCTAssertLessThan(page.text.range(of: "a &lt;")!.lowerBound, page.text.range(of: "b.txt")!.lowerBound, "sorted")
        // The link works, and a directory that does not exist is still 404.
        XCTAssertEqual(b.get("/listed/a%20%3Cb%3E%26.txt")?.text, "a")
        XCTAssertEqual(b.get("/missing/")?.status, 404)
        XCTAssertEqual(b.get("/listed/inner/")?.status, 200)
    }
}
