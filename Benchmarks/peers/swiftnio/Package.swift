// swift-tools-version:6.0
// SwiftNIO peer for `chroma-bench hop`: an actor pinned to a NIO event loop's executor,
// called by many tasks. Its own package, so SwiftNIO never becomes a dependency of Chroma.
import PackageDescription

let package = Package(
    name: "nio-hop",
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
    ]
)
