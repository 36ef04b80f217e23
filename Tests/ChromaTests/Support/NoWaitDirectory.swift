import CChroma
import Foundation
import SystemPackage
import XCTest

/// A fresh directory on a file system that serves `RWF_NOWAIT` reads (tmpfs refuses
/// them): the first of the system's temporary directory, the working directory's
/// `.build`, or the home directory that does.
func noWaitDirectory() throws -> FilePath {
    let home = ProcessInfo.processInfo.environment["HOME"] ?? "/"
    for parent in ["/tmp", FileManager.default.currentDirectoryPath + "/.build", home] {
        var template = Array("\(parent)/chroma-cached-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { continue }
        let made = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let probe = made + "/probe"
        try Data(repeating: 1, count: 4096).write(to: URL(fileURLWithPath: probe))
        let fd = open(probe, O_RDONLY | O_CLOEXEC)
        var byte: UInt8 = 0
        let n = fd < 0 ? -1 : chroma_pread_nowait(fd, &byte, 1, nil, 0, 0)
        if fd >= 0 { close(fd) }
        if n == 1 { return FilePath(made) }
        try? FileManager.default.removeItem(atPath: made)
    }
    throw TimedOut(what: "a directory whose file system serves RWF_NOWAIT reads")
}

extension XCTestCase {
    /// A `noWaitDirectory` holding `data.bin` with `content` (page-cached, since it was just
    /// written); both are removed when the test ends.
    func pageCachedFile(_ content: [UInt8]) throws -> (directory: FilePath, data: FilePath) {
        let directory = try noWaitDirectory()
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory.string) }
        let data = directory.appending("data.bin")
        try Data(content).write(to: URL(fileURLWithPath: data.string))
        return (directory, data)
    }

    /// `path` opened read-only, closed when the test ends.
    func openReadOnly(_ path: FilePath) -> FileDescriptor {
        let fd = open(path.string, O_RDONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0, "open \(path.string)")
        addTeardownBlock { close(fd) }
        return FileDescriptor(rawValue: fd)
    }
}
