// nio-http --port P --threads N: the SwiftNIO peer for `chroma-bench http`, built by `make peers`.
//
// A NIOHTTP1 server on 127.0.0.1:P served by an N-thread MultiThreadedEventLoopGroup (one
// listening channel; NIO spreads accepted connections over the group's loops). GET /hello
// answers 200 "Hello, World!" (text/plain, Content-Length); any other request gets 404.
// Keep-alive follows the request, as in NIO's own examples. Prints one line once listening;
// SIGINT or SIGTERM closes the listener, shuts the group down and exits 0.
import Dispatch
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One per connection; every method runs on that connection's event loop.
final class HelloHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    // Built once per connection, not shared between loops: a shared static buffer or header
    // list would make every loop bump the same atomic reference count on every response.
    private let helloBody: ByteBuffer
    private let helloHeaders: HTTPHeaders
    private let notFoundHeaders: HTTPHeaders

    // The request being answered: decided at its head, answered at its end.
    private var isHello = false
    private var keepAlive = true
    private var version = HTTPVersion.http1_1

    init(allocator: ByteBufferAllocator) {
        let body = "Hello, World!"
        self.helloBody = allocator.buffer(string: body)
        self.helloHeaders = HTTPHeaders([("Content-Type", "text/plain"), ("Content-Length", String(body.utf8.count))])
        self.notFoundHeaders = HTTPHeaders([("Content-Length", "0")])
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let request):
            isHello = request.method == .GET && request.uri == "/hello"
            keepAlive = request.isKeepAlive
            version = request.version
        case .body:
            break
        case .end:
            respond(context: context)
        }
    }

    // Writes are flushed once per read burst, so pipelined requests share one syscall.
    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    private func respond(context: ChannelHandlerContext) {
        var headers = isHello ? helloHeaders : notFoundHeaders
        // Mirror the request's connection choice where the version's default differs from it
        // (RFC 9112 §9.3): HTTP/1.0 keep-alive must be echoed, HTTP/1.1 close announced.
        if keepAlive && version.major == 1 && version.minor == 0 {
            headers.add(name: "Connection", value: "keep-alive")
        } else if !keepAlive && (version.major > 1 || version.minor >= 1) {
            headers.add(name: "Connection", value: "close")
        }
        let head = HTTPResponseHead(version: version, status: isHello ? .ok : .notFound, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        if isHello {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(helloBody))), promise: nil)
        }
        if keepAlive {
            context.write(Self.wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let loopBoundContext = context.loopBound
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenComplete { _ in loopBoundContext.value.close(promise: nil) }
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: written)
        }
    }
}

/// Writes `text` to standard error (fd 2; Swift 6 rejects a reference to the C global `stderr`).
func printError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

func usage() -> Never {
    printError("usage: nio-http --port P --threads N\n")
    exit(2)
}

var port: Int?
var threads = System.coreCount
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    guard let value = arguments.popFirst() else { usage() }
    switch flag {
    case "--port": port = Int(value)
    case "--threads": threads = Int(value) ?? 0
    default: usage()
    }
}
guard let port, (1...65535).contains(port), threads > 0 else { usage() }

let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.maxMessagesPerRead, value: 16)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(HelloHandler(allocator: channel.allocator))
        }
    }

let server: any Channel
do {
    server = try bootstrap.bind(host: "127.0.0.1", port: port).wait()
} catch {
    printError("nio-http: bind 127.0.0.1:\(port) failed: \(error)\n")
    try? group.syncShutdownGracefully()
    exit(1)
}

/// Closes `server` on SIGINT or SIGTERM, from a Dispatch queue. Not written inline at top level:
/// a closure there is main-actor isolated, and Swift 6 traps when Dispatch runs it off the main thread.
func closeOnSignals(_ server: any Channel) -> [any DispatchSourceSignal] {
    let queue = DispatchQueue(label: "nio-http.signals")
    return [SIGINT, SIGTERM].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
        source.setEventHandler { @Sendable in server.close(promise: nil) }
        source.resume()
        return source
    }
}

// Closing the listener unblocks the wait below.
let signalSources = closeOnSignals(server)

print("nio-http listening on port \(port) (\(threads) threads)")
fflush(nil)  // all streams; Swift 6 rejects a reference to the C global `stdout`

try? server.closeFuture.wait()
try? group.syncShutdownGracefully()
withExtendedLifetime(signalSources) {}
exit(0)
