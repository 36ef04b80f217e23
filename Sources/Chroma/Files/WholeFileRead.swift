import Glibc
import SystemPackage

/// A whole-file read, in one or two steps: in the short lane, open and fstat, and the read
/// itself if the file is small; a big file is closed and continues in the long lane, where
/// it is opened again (a read waiting for the long lane holds no descriptor). Made on a
/// loop, it first tries all of it from the page cache (`readCached`), with no pool job.
final class WholeFileRead: FileJob<[UInt8]>, @unchecked Sendable {
    // Safe to share: the pool runs a job's steps one at a time and hands it from worker to
    // worker under its lock, which orders the steps' accesses to `demoted`.
    private let maxBytes: Int
    @exclusivity(unchecked) private var demoted = false

    init(path: FilePath, maxBytes: Int, color: Color, completion: @escaping Files.Completion<[UInt8]>) {
        self.maxBytes = maxBytes
        super.init("read", .short, color, path: path, descriptor: nil, completion: completion)
    }

    override func run() -> Bool {
        do throws(FileError) {
            guard let bytes = try step() else { return false }
            result = .success(bytes)
        } catch {
            result = .failure(error)
        }
        return true
    }

    /// Loop thread, before submission: the whole read from the page cache, or nothing
    /// (false: everything it opened is closed again, and the pool does the whole read).
    /// True when it finished, with the bytes or with the error the pool would have met.
    func readCached(_ reads: CachedReads, slot: UnsafeMutablePointer<CachedReads.LoopSlot>) -> Bool {
        let path = self.path!
        let outcome = path.withPlatformString { reads.readWholeFile($0, refuseAbove: maxBytes, slot: slot) }
        switch outcome {
        case .contents(let bytes, _): result = .success(bytes)
        case .failed(let code): result = .failure(FileCalls.fail("read", path: path, errno: code))
        case .open(let fd, _):
            _ = Glibc.close(fd)  // not asked for (no `keepOpenAbove`); never happens
            return false
        case .directory, .notRegular, .needsPool: return false
        }
        return true
    }

    /// Returns the bytes, or nil to continue in the long lane.
    private func step() throws(FileError) -> [UInt8]? {
        let path = self.path!
        let fd = try FileCalls.open(path, O_RDONLY | O_NONBLOCK, nil, operation: "read")
        do throws(FileError) {
            let st = try FileCalls.rawStat(fd, operation: "read", path: path, reportFD: false)
            let size = Int(st.st_size)
            if size > maxBytes { throw FileCalls.fail("read", path: path, errno: EFBIG) }
            if !demoted && (st.st_mode & S_IFMT) == S_IFREG && size > FileCalls.shortLaneBytes {
                demoted = true
                _ = Glibc.close(fd.rawValue)
                return nil
            }
            let bytes = try FileCalls.readToEnd(fd, sizeHint: size, limit: maxBytes, path: path)
            try FileCalls.close(fd, operation: "read.close", path: path, reportFD: false)
            return bytes
        } catch {
            if error.operation != "read.close" { _ = Glibc.close(fd.rawValue) }
            throw error
        }
    }
}
