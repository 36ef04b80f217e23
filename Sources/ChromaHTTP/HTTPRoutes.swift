import Chroma

/// Which handler answers which request: exact paths per method, and path prefixes served
/// as static files. Build it, then hand it to `Runtime.serveHTTP`.
///
/// ```swift
/// var routes = HTTPRoutes()
/// routes.get("/hello") { request in request.respond(.ok, text: "Hello, World!") }
/// routes.get("/slow") { request async throws -> HTTPResponse in
///     let bytes = try await runtime.files.read("/etc/hostname")
///     return HTTPResponse(body: bytes)
/// }
/// routes.files(at: "/", StaticFiles(root: "/var/www"))
/// ```
///
/// Colors: a handler runs on the request's connection color unless the route names
/// another; on its own color it runs inline, right where libevent parsed the request,
/// with no hop. Different connections run in parallel on their loops.
///
/// Matching: an exact path first (a `get` route answers HEAD too; a path known for other
/// methods only gets 405 with `Allow`), then the longest file prefix, else 404.
public struct HTTPRoutes: Sendable {
    /// A callback handler: answer with `request.respond`, now or later.
    public typealias Handler = @Sendable (HTTPRequest) -> Void
    /// An async handler: runs as a task on the handler's color; what it returns is the
    /// answer, and what it throws answers 500.
    public typealias AsyncHandler = @Sendable (HTTPRequest) async throws -> HTTPResponse

    /// An async handler that answers by itself: with `request.respond`, or by writing a
    /// stream (`request.startStream`). It runs as a task on the connection's color, where
    /// streams are used; if it throws before answering, the answer is 500, and a stream it
    /// had started is cut short (the connection closes, so the client sees it incomplete).
    public typealias StreamHandler = @Sendable (HTTPRequest) async throws -> Void

    enum Action: Sendable {
        case callback(Handler)
        case task(AsyncHandler)
        case stream(StreamHandler)
    }

    struct Route: Sendable {
        let method: String
        let color: Color?
        let action: Action
    }

    var exact: [String: [Route]] = [:]
    var fileRoutes: [(prefix: String, files: StaticFiles)] = []

    /// No routes: every request gets 404 until some are added.
    public init() {}

    /// Routes `method` requests for `path` (exact, percent-encoded as sent) to `handler`,
    /// run on `color` (default: the connection's).
    public mutating func add(_ method: String, _ path: String, on color: Color? = nil, _ handler: @escaping Handler) {
        exact[path, default: []].append(Route(method: method.uppercased(), color: color, action: .callback(handler)))
    }

    /// Routes `method` requests for `path` to an async handler, run as a task on `color`
    /// (default: the connection's).
    public mutating func add(_ method: String, _ path: String, on color: Color? = nil, _ handler: @escaping AsyncHandler) {
        exact[path, default: []].append(Route(method: method.uppercased(), color: color, action: .task(handler)))
    }

    /// GET (and HEAD) requests for `path`.
    public mutating func get(_ path: String, on color: Color? = nil, _ handler: @escaping Handler) {
        add("GET", path, on: color, handler)
    }

    /// GET (and HEAD) requests for `path`, answered by an async handler.
    public mutating func get(_ path: String, on color: Color? = nil, _ handler: @escaping AsyncHandler) {
        add("GET", path, on: color, handler)
    }

    /// POST requests for `path`.
    public mutating func post(_ path: String, on color: Color? = nil, _ handler: @escaping Handler) {
        add("POST", path, on: color, handler)
    }

    /// POST requests for `path`, answered by an async handler.
    public mutating func post(_ path: String, on color: Color? = nil, _ handler: @escaping AsyncHandler) {
        add("POST", path, on: color, handler)
    }

    /// `method` requests (GET answers HEAD too) for `path`, answered by `handler` itself,
    /// typically with a stream:
    ///
    /// ```swift
    /// routes.stream("/events") { request in
    ///     guard let events = request.startEventStream() else { return }
    ///     for tick in 1... {
    ///         guard events.send(data: "tick \(tick)") else { return }  // the client left
    ///         try await Task.sleep(for: .seconds(1))
    ///     }
    /// }
    /// ```
    public mutating func stream(_ path: String, method: String = "GET", _ handler: @escaping StreamHandler) {
        exact[path, default: []].append(Route(method: method.uppercased(), color: nil, action: .stream(handler)))
    }

    /// Serves the files under `files.root` at `prefix` (GET and HEAD): `/prefix/a/b` is
    /// `root/a/b`, a path ending in `/` serves `index.html`.
    public mutating func files(at prefix: String, _ files: StaticFiles) {
        let normalized = prefix.hasSuffix("/") ? prefix : prefix + "/"
        fileRoutes.append((normalized, files))
        fileRoutes.sort { $0.prefix.utf8.count > $1.prefix.utf8.count }
    }
}

/// The routes of one running server, with the state they need (file caches per loop).
final class Router: Sendable {
    private let runtime: Runtime
    /// Exact routes by path: a list while short (comparing small strings is a couple of
    /// word compares, cheaper than hashing), a dictionary when long.
    private let exactList: [(path: String, routes: [HTTPRoutes.Route])]
    private let exact: [String: [HTTPRoutes.Route]]
    private let fileRoutes: [(prefix: String, server: FileServer)]
    private static let notFound = HTTPResponse(status: .notFound, text: "Not Found\n")
    private static let failed = HTTPResponse(status: .internalServerError, text: "Internal Server Error\n")
    private static let unavailable = HTTPResponse(status: .serviceUnavailable, text: "Service Unavailable\n")

    init(routes: HTTPRoutes, runtime: Runtime) {
        self.runtime = runtime
        exact = routes.exact
        exactList = routes.exact.count <= 8 ? routes.exact.map { ($0.key, $0.value) } : []
        fileRoutes = routes.fileRoutes.map { ($0.prefix, FileServer(files: $0.files, runtime: runtime)) }
    }

    /// The file routes' cache counters, summed.
    var fileCacheStats: HTTPServerStats.FileCache {
        var total = HTTPServerStats.FileCache()
        for (_, server) in fileRoutes {
            let stats = server.cacheStats
            total.hits += stats.hits
            total.misses += stats.misses
            total.evictions += stats.evictions
            total.entries += stats.entries
            total.bytes += stats.bytes
        }
        return total
    }

    /// Loop thread, as the connection's color: picks the route and runs it.
    func dispatch(_ exchange: HTTPExchange) {
        let method = exchange.method
        let path = exchange.path
        if let routes = exactList.isEmpty ? exact[path] : exactList.first(where: { $0.path == path })?.routes {
            let lookup = method == "HEAD" ? "GET" : method
            guard let route = routes.first(where: { $0.method == method }) ?? routes.first(where: { $0.method == lookup }) else {
                let allowed = Set(routes.map(\.method) + (routes.contains { $0.method == "GET" } ? ["HEAD"] : [])).sorted()
                exchange.respond(status: 405, headers: [("Allow", allowed.joined(separator: ", ")), ("Content-Type", "text/plain; charset=utf-8")],
                                 body: Array("Method Not Allowed\n".utf8))
                return
            }
            run(route, exchange, method: method, path: path)
            return
        }
        // Byte-wise (utf8), not String comparison: Swift's String equality treats
        // canonically equivalent text as equal, and the slice below counts bytes.
        for (prefix, server) in fileRoutes {
            let prefixBytes = prefix.utf8
            let underPrefix = path.utf8.starts(with: prefixBytes)
            let prefixWithoutSlash = path.utf8.elementsEqual(prefixBytes.dropLast())
            guard underPrefix || prefixWithoutSlash else { continue }
            guard method == "GET" || method == "HEAD" else {
                exchange.respond(status: 405, headers: [("Allow", "GET, HEAD"), ("Content-Type", "text/plain; charset=utf-8")],
                                 body: Array("Method Not Allowed\n".utf8))
                return
            }
            let request = HTTPRequest(exchange: exchange, method: method, path: path, copied: false)
            if prefixWithoutSlash {
                // The route's directory itself: redirect, so relative links resolve under it.
                server.redirect(request, to: prefix)
                return
            }
            server.serve(request, relativePath: String(decoding: path.utf8.dropFirst(prefixBytes.count), as: UTF8.self))
            return
        }
        respond(exchange, Router.notFound)
    }

    private func respond(_ exchange: HTTPExchange, _ response: HTTPResponse) {
        exchange.respond(status: response.status.code, headers: response.headers, body: response.body)
    }

    private func run(_ route: HTTPRoutes.Route, _ exchange: HTTPExchange, method: String, path: String) {
        let color = route.color ?? exchange.color
        let here = color == exchange.color
        let request = HTTPRequest(exchange: exchange, method: method, path: path, copied: !here)
        switch route.action {
        case .callback(let handler):
            if here {
                handler(request)
            } else {
                do {
                    try runtime.execute(on: color) { handler(request) }
                } catch {
                    request.respond(Router.unavailable)
                }
            }
        case .task(let handler):
            runtime.spawn(on: color) {
                try await handler(request)
            } completion: { result in
                switch result {
                case .success(let response): request.respond(response)
                case .failure: request.respond(Router.failed)
                }
            }
        case .stream(let handler):
            runtime.spawn(on: exchange.color) {
                try await handler(request)
            } completion: { result in
                if case .failure = result { request.exchange.fail() }
            }
        }
    }
}
