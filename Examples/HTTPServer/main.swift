// chroma-httpd: a static web server (Flash, nginx, the libasync-smp web server) on every
// core. `GET /hello` answers `Hello, World!`; everything else is a file under ROOT, small
// ones from each loop's memory cache, big ones with sendfile. Each connection has its own
// color, so its requests are answered in order while other connections run in parallel.
//
//   chroma-httpd --port P --root DIR [--loops N] [--stealing on|off]
//
// SIGTERM drains (requests in progress finish, at most 3 s), SIGINT stops at once.
import ArgumentParser
import Chroma
import ChromaHTTP
import Glibc

/// The command line and the server it starts. `run()` runs on the main thread and returns
/// after SIGINT, or after SIGTERM's drain, stopped the runtime.
struct ChromaHTTPD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chroma-httpd",
        abstract: "A static web server on every core: GET /hello, and the files under --root.",
        discussion: """
            Prints one line once it is listening. SIGTERM finishes the requests in progress \
            (at most 3 s) and exits; SIGINT exits at once.
            """
    )

    @Option(parsing: .unconditional, help: "TCP port to listen on, 0...65535 (0: the kernel picks a free one, printed when listening).")
    var port: Int

    @Option(help: ArgumentHelp("Directory whose files are served.", valueName: "dir"))
    var root: String

    @Option(parsing: .unconditional, help: ArgumentHelp("Event loops to run, at least 1. (default: one per online CPU)", valueName: "n"))
    var loops: Int?

    @Option(help: ArgumentHelp("Work stealing between loops: on or off (colors stay where they start).", valueName: "on|off"))
    var stealing: String = "on"

    func validate() throws {
        guard stealing == "on" || stealing == "off" else {
            throw ValidationError("--stealing must be on or off, not \(stealing)")
        }
        guard (0...65535).contains(port) else {
            throw ValidationError("--port must be in 0...65535, not \(port)")
        }
        if let loops, loops < 1 {
            throw ValidationError("--loops must be at least 1, not \(loops)")
        }
        var info = stat()
        guard stat(root, &info) == 0 else {
            throw ValidationError("--root \(root): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw ValidationError("--root \(root) is not a directory")
        }
    }

    func run() throws {
        let loops = self.loops ?? Runtime.onlineCPUCount
        // Built once: answering it copies 13 bytes into the socket's buffer and allocates nothing.
        let hello = HTTPResponse(text: "Hello, World!")
        var routes = HTTPRoutes()
        routes.get("/hello") { request in request.respond(hello) }
        routes.files(at: "/", StaticFiles(root: root))

        let runtime = try Runtime(loops: loops, stealing: stealing == "on" ? .on : .off)
        try runtime.start()
        let server = try runtime.serveHTTP(port: UInt16(port), routes: routes)
        // SIGTERM (a deploy, a restart): finish the requests in progress, at most 3 s, then exit.
        // SIGINT: stop at once.
        try runtime.onSignal(SIGTERM) { server.drain(timeout: .seconds(3)) { _ in runtime.stop() } }
        try runtime.onSignal(SIGINT) { runtime.stop() }
        print("chroma-httpd listening on port \(server.port) with \(loops) loop(s), serving \(root)")
        fflush(nil)  // the listening line must reach a pipe before any client connects
        try runtime.run()
    }
}

ChromaHTTPD.main()
