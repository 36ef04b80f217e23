@_spi(Engine) @_spi(CachedReads) import Chroma
import Glibc
import SystemPackage

/// A directory served over HTTP (see `HTTPRoutes.files(at:_:)`).
///
/// Files are opened and read on the blocking pool, never on a loop. Small files (up to
/// `cacheMaxFileSize`) are kept in memory, one cache per loop so no lock is taken, and
/// revalidated with `stat` (size, modification time, inode) once they are older than
/// `revalidateAfter`: until then a cached file is answered straight from the loop, with
/// no pool job at all. Larger files are sent from the page cache with `sendfile`
/// (a libevent file segment); as in nginx without `aio`, a read of pages not yet in memory
/// then blocks the loop for the disk.
///
/// Paths are percent-decoded before they are checked: a `..` segment gets 403, a NUL
/// byte or a bad escape 400. Symbolic links under `root` are followed.
public struct StaticFiles: Sendable {
    /// The directory served.
    public var root: String
    /// Files up to this size are cached in memory (default 256 KiB).
    public var cacheMaxFileSize: Int = 256 * 1024
    /// Bytes of file content each loop keeps at most (default 64 MiB).
    public var cacheCapacity: Int = 64 << 20
    /// How old a cached file may get before a request checks it with `stat` (default 1 s;
    /// `.zero` checks on every request).
    public var revalidateAfter: Duration = .seconds(1)

    /// Files under `root` (a trailing `/` is ignored), with the cache settings above.
    public init(root: String, cacheMaxFileSize: Int = 256 * 1024, cacheCapacity: Int = 64 << 20,
                revalidateAfter: Duration = .seconds(1)) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        self.cacheMaxFileSize = cacheMaxFileSize
        self.cacheCapacity = cacheCapacity
        self.revalidateAfter = revalidateAfter
    }
}

/// One file route of a running server: its per-loop caches.
final class FileServer: @unchecked Sendable {
    // Safe to share: `caches[i]` is only touched on loop i's thread: a request is served on
    // its connection's color, which the connection's evhttp state pins to the loop that
    // accepted it (`Placement.pin`), so the pool's completions on that color come back to
    // the same loop (`cache(for:)` checks it); the rest is immutable.
    private let files: StaticFiles
    private let runtime: Runtime
    private let caches: [FileCache]
    private let revalidateNanoseconds: UInt64

    init(files: StaticFiles, runtime: Runtime) {
        self.files = files
        self.runtime = runtime
        caches = (0..<runtime.loopCount).map { _ in FileCache() }
        revalidateNanoseconds = files.revalidateAfter < .zero ? 0 : files.revalidateAfter.chromaNanoseconds ?? .max
    }

    /// On the request's connection color: answers `relativePath` (percent-encoded, below
    /// the route's prefix).
    func serve(_ request: HTTPRequest, relativePath: String) {
        let relative: String
        switch StaticPath.resolve(relativePath) {
        case .file(let path): relative = path
        case .forbidden: return answer(request, .forbidden)
        case .malformed: return answer(request, .badRequest)
        }
        let cache = cache(for: request)
        if let entry = cache.entries[relative] {
            let now = coarseMonotonicNanoseconds()
            if now &- entry.checkedAt < revalidateNanoseconds || entry.revalidating {
                return send(entry, request)
            }
            revalidate(entry, relative, request, cache)
            return
        }
        load(relative, request, cache)
    }

    private func fullPath(_ relative: String) -> String { files.root + "/" + relative }

    /// The cache of the loop serving `request`: the loop this runs on, which must be the one
    /// the request's color is pinned to.
    private func cache(for request: HTTPRequest) -> FileCache {
        let index = runtime.loopIndex(of: request.color)
        precondition(runtime.currentLoopIndex == index, "a file route's cache is used on its request's loop")
        return caches[index]
    }

    /// Reads the file (or opens it, when too big to cache): from the page cache right here
    /// when it holds everything needed, else on the pool.
    private func load(_ relative: String, _ request: HTTPRequest, _ cache: FileCache) {
        let path = fullPath(relative), limit = files.cacheMaxFileSize
        if let result = FileLoad.fromPageCache(runtime.files, path: path, cacheLimit: limit) {
            return finish(result, relative, request, cache)
        }
        do {
            try runtime.blocking(on: request.color, lane: .short) {
                try FileLoad.run(path: path, cacheLimit: limit)
            } completion: { [self] result in
                precondition(cache === self.cache(for: request))
                finish(result.mapError { $0 }, relative, request, cache)
            }
        } catch {
            answer(request, .serviceUnavailable)
        }
    }

    /// Answers with what `load` found, and caches a small file. On the request's loop.
    private func finish(_ result: Result<FileLoad.Outcome, any Error>, _ relative: String, _ request: HTTPRequest,
                        _ cache: FileCache) {
        switch result {
        case .success(.cached(let bytes, let identity)):
            let entry = CachedFile(bytes: bytes, identity: identity, contentType: StaticPath.contentType(of: relative))
            cache.insert(entry, for: relative, capacity: files.cacheCapacity)
            send(entry, request)
        case .success(.open(let fd, let size)):
            request.exchange.respondFile(status: 200, headers: [("Content-Type", StaticPath.contentType(of: relative))],
                                         fd: fd, offset: 0, length: size)
        case .success(.directory):
            // A directory named by a path without its slash: redirect. One named by
            // a path with it (its "index.html" is itself a directory): nothing to serve.
            if request.path.hasSuffix("/") {
                answer(request, .notFound)
            } else {
                redirect(request, to: request.path + "/")
            }
        case .success(.notRegular):
            answer(request, .notFound)
        case .failure(let error):
            answer(request, FileLoad.status(for: error))
        }
    }

    /// `stat`s a cached file on the pool; the same size, time and inode keep it.
    private func revalidate(_ entry: CachedFile, _ relative: String, _ request: HTTPRequest, _ cache: FileCache) {
        entry.revalidating = true
        let path = fullPath(relative)
        do {
            try runtime.blocking(on: request.color, lane: .short) {
                try FileLoad.identity(path: path)
            } completion: { [self] result in
                precondition(cache === self.cache(for: request))
                entry.revalidating = false
                if case .success(let identity) = result, identity == entry.identity {
                    entry.checkedAt = coarseMonotonicNanoseconds()
                    send(entry, request)
                } else {
                    cache.remove(relative, entry)
                    load(relative, request, cache)
                }
            }
        } catch {
            entry.revalidating = false
            answer(request, .serviceUnavailable)
        }
    }

    /// 301 to `location`, keeping the request's query.
    func redirect(_ request: HTTPRequest, to location: String) {
        let target = request.query.map { location + "?" + $0 } ?? location
        request.respond(HTTPResponse(status: 301, headers: [("Location", target), ("Content-Type", "text/plain; charset=utf-8")],
                                     body: Array("Moved Permanently\n".utf8)))
    }

    private func send(_ entry: CachedFile, _ request: HTTPRequest) {
        request.exchange.respond(status: 200, headers: entry.headers, body: entry.bytes)
    }

    private func answer(_ request: HTTPRequest, _ status: HTTPStatus) {
        request.respond(FileServer.responses[status] ?? HTTPResponse(status: status, text: "\(status)\n"))
    }

    private static let responses: [HTTPStatus: HTTPResponse] = [
        .badRequest: HTTPResponse(status: .badRequest, text: "Bad Request\n"),
        .forbidden: HTTPResponse(status: .forbidden, text: "Forbidden\n"),
        .notFound: HTTPResponse(status: .notFound, text: "Not Found\n"),
        .internalServerError: HTTPResponse(status: .internalServerError, text: "Internal Server Error\n"),
        .serviceUnavailable: HTTPResponse(status: .serviceUnavailable, text: "Service Unavailable\n"),
    ]
}

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
}

/// A file in a loop's cache. Its loop's thread only.
final class CachedFile: @unchecked Sendable {
    // Safe to send: it only travels in pool completions that run on a color of its own
    // loop, the one thread that touches its mutable fields.
    let bytes: [UInt8]
    let identity: FileIdentity
    let headers: [(name: String, value: String)]
    var checkedAt: UInt64
    var revalidating = false

    init(bytes: [UInt8], identity: FileIdentity, contentType: String) {
        self.bytes = bytes
        self.identity = identity
        self.headers = [("Content-Type", contentType)]
        self.checkedAt = coarseMonotonicNanoseconds()
    }
}

/// One loop's cached files, by path below the root. Its loop's thread only.
final class FileCache: @unchecked Sendable {
    // Safe to send: like `CachedFile`, only its own loop's thread touches it.
    private(set) var entries: [String: CachedFile] = [:]
    private var bytes = 0

    func insert(_ entry: CachedFile, for path: String, capacity: Int) {
        guard entry.bytes.count <= capacity else { return }
        if let old = entries.removeValue(forKey: path) { bytes -= old.bytes.count }
        // Over capacity: drop entries (in the dictionary's arbitrary order) until it fits.
        while bytes + entry.bytes.count > capacity, let victim = entries.first {
            entries.removeValue(forKey: victim.key)
            bytes -= victim.value.bytes.count
        }
        entries[path] = entry
        bytes += entry.bytes.count
    }

    func remove(_ path: String, _ entry: CachedFile) {
        guard entries[path] === entry else { return }
        entries.removeValue(forKey: path)
        bytes -= entry.bytes.count
    }
}

/// The blocking part of serving a file: runs on a pool worker, with the file calls of
/// `Files` (each retries on EINTR).
enum FileLoad {
    enum Outcome: Sendable {
        case cached([UInt8], FileIdentity)
        /// Too big to cache: the open descriptor and its size, for sendfile.
        case open(Int32, Int)
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
            return .open(fd.rawValue, size)
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
        case .open(let fd, let info): return .success(.open(fd, Int(info.size)))
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

/// Request paths to file paths.
enum StaticPath {
    enum Resolution: Equatable {
        /// The path below the root, decoded, with `.` and empty segments removed.
        case file(String)
        /// A `..` segment.
        case forbidden
        /// A bad percent escape or a NUL byte.
        case malformed
    }

    static func resolve(_ encoded: String) -> Resolution {
        var decoded: [UInt8] = []
        decoded.reserveCapacity(encoded.utf8.count)
        var bytes = encoded.utf8.makeIterator()
        while let byte = bytes.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = bytes.next().flatMap(hexValue), let low = bytes.next().flatMap(hexValue) else { return .malformed }
                decoded.append(high << 4 | low)
            } else {
                decoded.append(byte)
            }
        }
        if decoded.contains(0) { return .malformed }
        var segments: [ArraySlice<UInt8>] = []
        for segment in decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if segment.elementsEqual("..".utf8) { return .forbidden }
            if segment.elementsEqual(".".utf8) { continue }
            segments.append(segment)
        }
        if segments.isEmpty || decoded.last == UInt8(ascii: "/") { segments.append(ArraySlice("index.html".utf8)) }
        let joined = segments.joined(separator: [UInt8(ascii: "/")])
        return .file(String(decoding: Array(joined), as: UTF8.self))
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// A MIME type from the file name's extension.
    static func contentType(of path: String) -> String {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return "application/octet-stream" }
        switch path[path.index(after: dot)...].lowercased() {
        case "html", "htm": return "text/html; charset=utf-8"
        case "txt": return "text/plain; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "json": return "application/json"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "webp": return "image/webp"
        case "ico": return "image/x-icon"
        case "wasm": return "application/wasm"
        case "pdf": return "application/pdf"
        default: return "application/octet-stream"
        }
    }
}
