@_spi(CachedReads) @testable import Chroma
import ChromaHTTP
import Foundation
import SystemPackage
import XCTest

/// A static file the server has not cached yet, whose pages the kernel holds, is answered
/// on the loop without a pool job; with cached reads off, the same request goes through
/// the pool, with the same answer.
final class StaticFileCacheMissTests: XCTestCase {
    private var root: FilePath!
    private let content = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7) }

    override func setUpWithError() throws {
        root = try noWaitDirectory()
        try Data(content).write(to: URL(fileURLWithPath: root.appending("page.bin").string))
        try FileManager.default.createDirectory(atPath: root.appending("sub").string, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let root { try? FileManager.default.removeItem(atPath: root.string) }
    }

    /// Serves `root` and answers `paths` in turn on one connection; returns the answers and
    /// the pool jobs submitted meanwhile.
    private func serve(cachedReads: Bool, _ paths: [String]) throws -> (answers: [TestResponse?], poolJobs: Int, hits: Int) {
        var configuration = BlockingPool.Configuration()
        configuration.cachedReads = cachedReads
        let runtime = try Runtime(loops: 1, pool: configuration)
        try runtime.start()
        defer { _ = try? runtime.shutdown() }
        var routes = HTTPRoutes()
        routes.files(at: "/", StaticFiles(root: root.string))
        let server = try runtime.serveHTTP(host: "127.0.0.1", port: 0, routes: routes)
        let client = try HTTPTestClient(port: server.port)
        defer { client.socket.close() }
        let before = runtime.pool.submittedJobs
        let answers = paths.map { client.get($0) }
        return (answers, runtime.pool.submittedJobs - before, runtime.pool.cachedReadCounts().hits)
    }

    func testAFirstRequestForAPageCachedFileIsAnsweredOnTheLoopWithoutAPoolJob() throws {
        let fast = try serve(cachedReads: true, ["/page.bin", "/sub"])
        let pool = try serve(cachedReads: false, ["/page.bin", "/sub"])
        XCTAssertEqual(fast.poolJobs, 0, "a file and a directory, both from the page cache")
        XCTAssertEqual(fast.hits, 2)
        XCTAssertEqual(pool.poolJobs, 2, "with cached reads off, each goes to the pool")
        for (a, b) in zip(fast.answers, pool.answers) {
            XCTAssertEqual(a?.status, b?.status)
            XCTAssertEqual(a?.body, b?.body)
        }
        XCTAssertEqual(fast.answers[0]?.status, 200)
        XCTAssertEqual(fast.answers[0]?.body, content)
        XCTAssertEqual(fast.answers[1]?.status, 301)
    }

    /// A name never looked up needs the file system (the kernel has no negative entry for it
    /// yet), so that lookup goes to the pool; either way the answer is the same 404.
    func testAMissingFileGetsTheSame404OnBothPaths() throws {
        let fast = try serve(cachedReads: true, ["/missing", "/missing"])
        let pool = try serve(cachedReads: false, ["/missing"])
        XCTAssertEqual(fast.answers.map { $0?.status }, [404, 404])
        XCTAssertEqual(pool.answers.map { $0?.status }, [404])
        XCTAssertLessThanOrEqual(fast.poolJobs, 1, "once looked up, the missing name is answered from the kernel's cache")
    }
}
