// swift-tools-version:6.0
// SwiftNIO and Hummingbird peers for chroma-bench, built by `make peers`. Their own package, so
// neither SwiftNIO nor Hummingbird ever becomes a dependency of Chroma; one build serves all three:
//   nio-hop   the peer for `chroma-bench hop`: an actor pinned to a NIO event loop's executor.
//   nio-http  the peer for `chroma-bench http`: a NIOHTTP1 server answering GET /hello.
//   hb-http   the peer for `chroma-bench http`: a Hummingbird 2 application answering GET /hello
//             and serving the bench's files through Hummingbird's FileMiddleware.
import PackageDescription

let package = Package(
    name: "swiftnio-peers",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
    ],
    targets: [
        .executableTarget(
            name: "nio-hop",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "nio-http",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "hb-http",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)
