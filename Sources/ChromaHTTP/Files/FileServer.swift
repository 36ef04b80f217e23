@_spi(Engine) @_spi(CachedReads) import Chroma
import Glibc
import SystemPackage

/// One file route of a running server: its per-loop caches.
final class FileServer: @unchecked Sendable {
    // Safe to share: `caches[i]` is only touched on loop i's thread: a request is served on
    // its connection's color, which the connection's evhttp state pins to the loop that
    // accepted it (`Placement.pin`), so the pool's completions on that color come back to
    // the same loop (`cache(for:)` checks it); the rest is immutable.
    private let files: StaticFiles
    private let runtime: Runtime
    private let caches: [FileCache]
    /// Each loop's cache capacity: its share of `StaticFiles.cacheCapacity`.
    let cacheShare: Int
    private let revalidateNanoseconds: UInt64

    init(files: StaticFiles, runtime: Runtime) {
        self.files = files
        self.runtime = runtime
        let share = max(1, files.cacheCapacity / runtime.loopCount)
        cacheShare = share
        caches = (0..<runtime.loopCount).map { _ in FileCache(capacity: share) }
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
        if let entry = cache.lookUp(relative) {
            let now = coarseMonotonicNanoseconds()
            if now &- entry.checkedAt < revalidateNanoseconds || entry.revalidating {
                return send(entry, request, cache)
            }
            revalidate(entry, relative, request, cache)
            return
        }
        load(relative, request, cache)
    }

    /// The caches' counters, summed over the loops (relaxed reads, any thread).
    var cacheStats: HTTPServerStats.FileCache {
        var total = HTTPServerStats.FileCache()
        for cache in caches {
            total.hits += cache.counters.hits.load(ordering: .relaxed)
            total.misses += cache.counters.misses.load(ordering: .relaxed)
            total.evictions += cache.counters.evictions.load(ordering: .relaxed)
            total.entries += cache.counters.entries.load(ordering: .relaxed)
            total.bytes += cache.counters.bytes.load(ordering: .relaxed)
        }
        return total
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
        cache.counters.misses.add(1, ordering: .relaxed)
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
            cache.insert(entry, for: relative)
            FileAnswer.send(request.exchange, validators: entry.validators, headers: entry.headers, size: bytes.count, body: .memory(bytes))
        case .success(.open(let fd, let identity)):
            let validators = identity.validators
            FileAnswer.send(request.exchange, validators: validators,
                            headers: FileAnswer.headers(contentType: StaticPath.contentType(of: relative), validators: validators),
                            size: identity.size, body: .descriptor(fd))
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
            let status = FileLoad.status(for: error)
            if status == .notFound, files.directoryListing, request.path.hasSuffix("/"), relative.hasSuffix("index.html") {
                list(String(relative.dropLast("index.html".count)), request)
            } else {
                answer(request, status)
            }
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
                    send(entry, request, cache)
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

    /// Answers from the cache: a hit.
    private func send(_ entry: CachedFile, _ request: HTTPRequest, _ cache: FileCache) {
        cache.counters.hits.add(1, ordering: .relaxed)
        FileAnswer.send(request.exchange, validators: entry.validators, headers: entry.headers, size: entry.bytes.count,
                        body: .memory(entry.bytes))
    }

    /// A directory without `index.html` (`directory` below the root, "" or ending in "/"):
    /// its listing, read on the pool.
    private func list(_ directory: String, _ request: HTTPRequest) {
        let path = directory.isEmpty ? files.root : fullPath(String(directory.dropLast()))
        do {
            try runtime.blocking(on: request.color, lane: .short) {
                try DirectoryListing.read(path)
            } completion: { [self] result in
                switch result {
                case .success(let entries):
                    request.exchange.respond(status: 200, headers: [("Content-Type", "text/html; charset=utf-8")],
                                             body: DirectoryListing.html(path: request.path, entries: entries))
                case .failure(let error):
                    answer(request, FileLoad.status(for: error))
                }
            }
        } catch {
            answer(request, .serviceUnavailable)
        }
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

