// swift-tools-version:6.0
// SwiftNIO peers for chroma-bench, built by `make peers`. Their own package, so SwiftNIO never
// becomes a dependency of Chroma; one build serves both:
//   nio-hop   the peer for `chroma-bench hop`: an actor pinned to a NIO event loop's executor.
//   nio-http  the peer for `chroma-bench http`: a NIOHTTP1 server answering GET /hello.
import PackageDescription

let package = Package(
    name: "swiftnio-peers",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
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
    ]
)
