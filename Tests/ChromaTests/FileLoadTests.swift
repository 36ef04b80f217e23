import Chroma
@testable import ChromaHTTP
import Foundation
import Glibc
import SystemPackage
import XCTest

/// The static-file server's pool job alone: what it makes of a path, and which status a
/// failure becomes.
final class FileLoadTests: XCTestCase {
    private var scratch: ScratchDirectory!
    private var root: String { scratch.path }

    override func setUpWithError() throws {
        scratch = try ScratchDirectory("fileload", creating: ["dir"])
    }

    override func tearDownWithError() throws {
        scratch.remove()
    }

    private func write(_ bytes: [UInt8], to name: String) throws {
        try scratch.write(bytes, to: name)
    }

    func testASmallFileIsReadWholeWithItsIdentity() throws {
        let bytes = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        try write(bytes, to: "small.bin")
        guard case .cached(let read, let identity) = try FileLoad.run(path: root + "/small.bin", cacheLimit: 4096) else {
            return XCTFail("a file under the cache limit is read")
        }
        XCTAssertEqual(read, bytes)
        XCTAssertEqual(identity, try FileLoad.identity(path: root + "/small.bin"))
    }

    func testAnEmptyFileIsAnEmptyArray() throws {
        try write([], to: "empty.txt")
        guard case .cached(let read, let identity) = try FileLoad.run(path: root + "/empty.txt", cacheLimit: 4096) else {
            return XCTFail("an empty file is cached")
        }
        XCTAssertEqual(read, [])
        XCTAssertEqual(identity.size, 0)
    }

    func testAFileOverTheCacheLimitIsHandedOverOpen() throws {
        try write([UInt8](repeating: 7, count: 5000), to: "big.bin")
        guard case .open(let fd, let identity) = try FileLoad.run(path: root + "/big.bin", cacheLimit: 4096) else {
            return XCTFail("a file over the cache limit is returned open")
        }
        defer { close(fd) }
        XCTAssertEqual(identity.size, 5000)
        XCTAssertEqual(identity, try FileLoad.identity(path: root + "/big.bin"))
        XCTAssertGreaterThanOrEqual(fcntl(fd, F_GETFD), 0, "the descriptor is still open")
        XCTAssertEqual(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC)
    }

    func testDirectoriesAndFifosAreNotRead() throws {
        guard case .directory = try FileLoad.run(path: root + "/dir", cacheLimit: 4096) else {
            return XCTFail("a directory is reported as one")
        }
        XCTAssertEqual(mkfifo(root + "/fifo", 0o600), 0)
        guard case .notRegular = try FileLoad.run(path: root + "/fifo", cacheLimit: 4096) else {
            return XCTFail("a FIFO is opened without blocking and refused")
        }
    }

    func testFailuresBecomeStatuses() throws {
        XCTAssertThrowsError(try FileLoad.run(path: root + "/missing", cacheLimit: 4096)) { error in
            XCTAssertEqual((error as? FileError)?.errno, .noSuchFileOrDirectory)
            XCTAssertEqual((error as? FileError)?.operation, "open")
            XCTAssertEqual(FileLoad.status(for: error), .notFound)
        }
        XCTAssertThrowsError(try FileLoad.identity(path: root + "/missing")) { error in
            XCTAssertEqual(FileLoad.status(for: error), .notFound)
        }
        XCTAssertEqual(FileLoad.status(for: ChromaError.overloaded(operation: "blocking", capacity: 1)), .serviceUnavailable)
        XCTAssertEqual(FileLoad.status(for: FileError(operation: "read", code: .system(.permissionDenied))), .forbidden)
        XCTAssertEqual(FileLoad.status(for: FileError(operation: "read", code: .system(.ioError))), .internalServerError)
    }
}
