// hb-http --port P --threads N [--root DIR]: the Hummingbird 2 peer for `chroma-bench http`,
// built by `make peers`.
//
// A Hummingbird `Application` on 127.0.0.1:P whose NIO event loop group has N threads. GET /hello
// answers 200 "Hello, World!" from a Router route; with --root, Hummingbird's FileMiddleware
// serves the files under DIR (the bench's /file4k.bin) for whatever the router has no route for;
// anything else is a 404. Everything is as a Hummingbird user would write it, defaults included:
// handlers run as Swift tasks on the global concurrency executor (its own pool, one thread per
// core, not N), file reads go to NIO's singleton thread pool, and every response carries a Date
// header. One setting is not a default: a listen backlog of 1024, as nio-http has, so that the
// heavy-load run's connection burst is not refused by a 256-entry queue. Prints one line once
// listening; SIGINT or SIGTERM shuts the application down gracefully (Hummingbird's
// `runService`), then the group, and exits 0.
import Hummingbird
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes `text` to standard error (fd 2; Swift 6 rejects a reference to the C global `stderr`).
func printError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

func usage() -> Never {
    printError("usage: hb-http --port P --threads N [--root DIR]\n")
    exit(2)
}

/// The command line as (port, threads, root), or usage() for anything else. A function, so the
/// values become top-level constants that the (nonisolated) running callback may read.
func parseArguments() -> (port: Int, threads: Int, root: String?) {
    var port: Int?
    var threads = System.coreCount
    var root: String?
    var arguments = CommandLine.arguments.dropFirst()
    while let flag = arguments.popFirst() {
        guard let value = arguments.popFirst() else { usage() }
        switch flag {
        case "--port": port = Int(value)
        case "--threads": threads = Int(value) ?? 0
        case "--root": root = value
        default: usage()
        }
    }
    guard let port, (1...65535).contains(port), threads > 0 else { usage() }
    return (port, threads, root)
}

let (port, threads, root) = parseArguments()

let router = Router()
router.get("hello") { _, _ in "Hello, World!" }
if let root {
    // A router middleware wraps the routes added after it and the router's not-found responder;
    // added last, FileMiddleware sees only what no route matched, so /hello never reaches it.
    router.add(middleware: FileMiddleware(root))
}

// The group is the application's, not NIO's singleton, so that --threads means what it means for
// the other peers; the application does not own it, hence the shutdown below.
let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let app = Application(
    router: router,
    configuration: .init(address: .hostname("127.0.0.1", port: port), backlog: 1024),
    onServerRunning: { _ in
        print("hb-http listening on port \(port) (\(threads) threads)")
        fflush(nil)  // all streams; Swift 6 rejects a reference to the C global `stdout`
    },
    eventLoopGroupProvider: .shared(group)
)

var status: Int32 = 0
do {
    try await app.runService()
} catch {
    printError("hb-http: \(error)\n")
    status = 1
}
try? await group.shutdownGracefully()
exit(status)
