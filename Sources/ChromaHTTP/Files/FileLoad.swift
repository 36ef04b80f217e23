@_spi(Engine) @_spi(CachedReads) import Chroma
import Glibc
import SystemPackage

/// What identifies a version of a file: a change to any of these re-reads it.
struct FileIdentity: Sendable, Equatable {
    var size: Int
    var modifiedSeconds: Int
    var modifiedNanoseconds: Int
    var inode: UInt64
    var device: UInt64

    init(_ info: stat) {
        size = Int(info.st_size)
        modifiedSeconds = info.st_mtim.tv_sec
        modifiedNanoseconds = info.st_mtim.tv_nsec
        inode = UInt64(info.st_ino)
        device = UInt64(info.st_dev)
    }

    init(_ info: FileInfo) {
        size = Int(info.size)
        modifiedSeconds = Int(info.modified.seconds)
        modifiedNanoseconds = Int(info.modified.nanoseconds)
        inode = info.inode
        device = info.device
    }

    /// A strong entity tag (inode, size and modification time in nanoseconds, in hex, as
    /// nginx makes its tags from time and size) and the modification time in seconds.
    var validators: HTTPValidators {
        let nanoseconds = UInt64(bitPattern: Int64(modifiedSeconds)) &* 1_000_000_000 &+ UInt64(modifiedNanoseconds)
        let etag = "\"" + String(inode, radix: 16) + "-" + String(size, radix: 16) + "-" + String(nanoseconds, radix: 16) + "\""
        return HTTPValidators(etag: etag, lastModified: modifiedSeconds)
    }
}

/// The blocking part of serving a file: runs on a pool worker, with the file calls of
/// `Files` (each retries on EINTR).
enum FileLoad {
    enum Outcome: Sendable {
        case cached([UInt8], FileIdentity)
        /// Too big to cache: the open descriptor and the version opened, for sendfile.
        case open(Int32, FileIdentity)
        case directory
        case notRegular
    }

    /// Opens `path` and reads it whole when it is at most `cacheLimit` bytes. `O_NONBLOCK`:
    /// a FIFO in the tree never blocks the worker (and is refused as not regular).
    static func run(path: String, cacheLimit: Int) throws(FileError) -> Outcome {
        let path = FilePath(path)
        let fd = try EngineFileCalls.open(path, O_RDONLY | O_NONBLOCK, operation: "open")
        var handedOver = false
        defer { if !handedOver { _ = Glibc.close(fd.rawValue) } }
        let info = try EngineFileCalls.stat(fd, operation: "stat", path: path)
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: return .directory
        default: return .notRegular
        }
        let size = Int(info.st_size)
        if size > cacheLimit {
            handedOver = true
            return .open(fd.rawValue, FileIdentity(info))
        }
        // A file that shrank meanwhile is served as it now is.
        let bytes = try EngineFileCalls.read(fd, count: size, offset: 0, operation: "read", path: path)
        var identity = FileIdentity(info)
        identity.size = bytes.count
        return .cached(bytes, identity)
    }

    /// The same work done on the loop from the page cache (`Files.loadCached`), never
    /// waiting for the device; nil when it must go to the pool (then nothing was left open).
    static func fromPageCache(_ files: Files, path: String, cacheLimit: Int) -> Result<Outcome, any Error>? {
        switch files.loadCached(path, cacheLimit: cacheLimit) {
        case .contents(let bytes, let info):
            var identity = FileIdentity(info)
            identity.size = bytes.count
            return .success(.cached(bytes, identity))
        case .open(let fd, let info): return .success(.open(fd, FileIdentity(info)))
        case .directory: return .success(.directory)
        case .notRegular: return .success(.notRegular)
        case .failed(let code):
            return .failure(FileError(operation: "open", path: FilePath(path), code: .system(Errno(rawValue: code))))
        case .needsPool: return nil
        }
    }

    static func identity(path: String) throws(FileError) -> FileIdentity {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw FileError(operation: "stat", path: FilePath(path), code: .system(Errno(rawValue: errno)))
        }
        return FileIdentity(info)
    }

    static func status(for error: any Error) -> HTTPStatus {
        // Not a system call's refusal: the pool was overloaded, or the job cancelled.
        guard let errno = (error as? FileError)?.errno else { return .serviceUnavailable }
        switch errno.rawValue {
        case ENOENT, ENOTDIR, ENAMETOOLONG, ELOOP: return .notFound
        case EACCES, EPERM: return .forbidden
        case EMFILE, ENFILE, ENOMEM: return .serviceUnavailable
        default: return .internalServerError
        }
    }
}

