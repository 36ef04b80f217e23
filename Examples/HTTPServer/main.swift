// chroma-httpd: a static web server (Flash, nginx, the libasync-smp web server) on every
// core. `GET /hello` answers `Hello, World!`; everything else is a file under ROOT, small
// ones from each loop's memory cache, big ones with sendfile. Each connection has its own
// color, so its requests are answered in order while other connections run in parallel.
//
//   chroma-httpd --port P --root DIR [--loops N]
//
// SIGTERM drains (requests in progress finish, at most 3 s), SIGINT stops at once.
import Chroma
import ChromaHTTP
import Glibc

var port: UInt16?
var root: String?
var loops = Runtime.onlineCPUCount
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    switch flag {
    case "--port": port = arguments.popFirst().flatMap { UInt16($0) }
    case "--root": root = arguments.popFirst()
    case "--loops": loops = arguments.popFirst().flatMap { Int($0) } ?? -1
    default: port = nil; arguments.removeAll()
    }
}
guard let port, let root, loops >= 1 else {
    print("usage: chroma-httpd --port P --root DIR [--loops N]")
    exit(2)
}
var info = stat()
guard stat(root, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
    print("chroma-httpd: \(root) is not a directory")
    exit(2)
}

// Built once: answering it copies 13 bytes into the socket's buffer and allocates nothing.
let hello = HTTPResponse(text: "Hello, World!")
var routes = HTTPRoutes()
routes.get("/hello") { request in request.respond(hello) }
routes.files(at: "/", StaticFiles(root: root))

let runtime = try Runtime(loops: loops)
try runtime.start()
let server = try runtime.serveHTTP(port: port, routes: routes)
// SIGTERM (a deploy, a restart): finish the requests in progress, at most 3 s, then exit.
// SIGINT: stop at once.
try runtime.onSignal(SIGTERM) { server.drain(timeout: .seconds(3)) { _ in runtime.stop() } }
try runtime.onSignal(SIGINT) { runtime.stop() }
print("chroma-httpd listening on port \(server.port) with \(loops) loop(s), serving \(root)")
fflush(nil)  // the listening line must reach a pipe before any client connects
try runtime.run()
