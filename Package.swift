// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Chroma",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Chroma", targets: ["Chroma"]),
        .library(name: "ChromaHTTP", targets: ["ChromaHTTP"]),
        .library(name: "ChromaMetrics", targets: ["ChromaMetrics"]),
        .library(name: "ChromaServiceLifecycle", targets: ["ChromaServiceLifecycle"]),
        .executable(name: "chroma-bench", targets: ["ChromaBench"]),
        .executable(name: "chroma-ticker", targets: ["Ticker"]),
        .executable(name: "chroma-copy", targets: ["Copy"]),
        .executable(name: "chroma-copy-async", targets: ["CopyAsync"]),
        .executable(name: "chroma-echo", targets: ["Echo"]),
        .executable(name: "chroma-httpd", targets: ["HTTPServer"]),
        .executable(name: "chroma-kv", targets: ["KV"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        // Stall reports and warnings go to a swift-log `Logger` (a small package, no
        // dependencies of its own: the core target stays light).
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        // Only the ChromaMetrics and ChromaServiceLifecycle products depend on these, so a
        // user of Chroma alone never builds them.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        // Latency percentiles in chroma-bench only.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // libevent 2.1 with pthreads support; `make setup` installs libevent-dev when missing.
        .systemLibrary(
            name: "CLibevent",
            pkgConfig: "libevent_pthreads",
            providers: [.apt(["libevent-dev"])]
        ),
        // libevent's OpenSSL bufferevents and OpenSSL itself, for HTTPS; `make setup` installs
        // libssl-dev when missing.
        .systemLibrary(
            name: "CLibeventOpenSSL",
            pkgConfig: "libevent_openssl",
            providers: [.apt(["libevent-dev", "libssl-dev"])]
        ),
        // What Swift cannot express: real `_Thread_local`s (the current loop, color, pool
        // worker and callback passes), and calls that need `_GNU_SOURCE` or awkward C macros
        // (CPU pinning, thread names, a CPU pause, TCP_NODELAY, an epoll probe, preadv2 with
        // RWF_NOWAIT, openat2 with RESOLVE_CACHED).
        .target(name: "CChroma"),
        .target(
            name: "Chroma",
            dependencies: [
                "CLibevent", "CChroma",
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // HTTP/1.1 (and HTTPS, TLS/) on the runtime: routes, limits and static files over its
        // own evhttp engine (Engine/), which reaches the loops through Chroma's `@_spi(Engine)`.
        .target(
            name: "ChromaHTTP",
            dependencies: ["Chroma", "CLibevent", "CLibeventOpenSSL", "CChroma", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // The runtime's and HTTP servers' counters published to swift-metrics.
        .target(
            name: "ChromaMetrics",
            dependencies: ["Chroma", "ChromaHTTP", .product(name: "Metrics", package: "swift-metrics")]
        ),
        // A runtime and an HTTP server's drain as swift-service-lifecycle `Service`s.
        .target(
            name: "ChromaServiceLifecycle",
            dependencies: ["Chroma", "ChromaHTTP", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        // Counts malloc calls per thread: chroma-bench reports allocations per callback, and
        // ChromaTests' allocation tests hold the hot paths to a budget.
        .target(name: "CAllocCounter", path: "Benchmarks/CAllocCounter"),
        .executableTarget(
            name: "ChromaBench",
            dependencies: [
                "Chroma", "CAllocCounter",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Benchmarks/ChromaBench"
        ),
        .executableTarget(
            name: "Ticker",
            dependencies: ["Chroma", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/Ticker"
        ),
        .executableTarget(
            name: "Echo",
            dependencies: ["Chroma", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/Echo"
        ),
        .executableTarget(
            name: "HTTPServer",
            dependencies: ["Chroma", "ChromaHTTP", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/HTTPServer"
        ),
        // chroma-kv's parts (Examples/KV): protocol, shard stores, durability, the server.
        .target(
            name: "ChromaKV",
            dependencies: ["Chroma", .product(name: "DequeModule", package: "swift-collections")],
            path: "Examples/KV/Library"
        ),
        .executableTarget(
            name: "KV",
            dependencies: ["Chroma", "ChromaKV", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/KV/Server"
        ),
        .executableTarget(
            name: "Copy",
            dependencies: [
                "Chroma",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Examples/Copy"
        ),
        .executableTarget(
            name: "CopyAsync",
            dependencies: [
                "Chroma",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Examples/CopyAsync"
        ),
        .testTarget(
            name: "ChromaTests",
            dependencies: ["Chroma", "ChromaHTTP", "CLibevent", "TestSupport", "CAllocCounter",
                           .product(name: "SystemPackage", package: "swift-system")]
        ),
        // What every test target shares: a loopback client socket, a locked value, child processes.
        .target(name: "TestSupport", dependencies: ["CTestSupport"], path: "Tests/TestSupport"),
        // The two GNU calls TestSupport's child processes need.
        .target(name: "CTestSupport", path: "Tests/CTestSupport"),
        // KV: the crash and restart tests run the chroma-kv binary as a child.
        .testTarget(name: "ChromaKVTests", dependencies: ["ChromaKV", "Chroma", "TestSupport", "KV"]),
        // The swift-metrics and swift-service-lifecycle products, against those packages'
        // own test tools.
        .testTarget(
            name: "ChromaEcosystemTests",
            dependencies: [
                "Chroma", "ChromaHTTP", "ChromaMetrics", "ChromaServiceLifecycle", "TestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)

// Fuzz targets (Fuzz/), declared only when `make fuzz` sets CHROMA_FUZZ=1 and builds them
// with `--sanitize=fuzzer --sanitize=address`: libFuzzer supplies their `main`, so a plain
// build could not link them. They use `@testable import`, which debug builds allow.
if Context.environment["CHROMA_FUZZ"] == "1" {
    let fuzzer: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]
    package.targets += [
        .target(name: "FuzzSupport", path: "Fuzz/Support"),
        .executableTarget(name: "FuzzHTTPHead", dependencies: ["ChromaHTTP", "FuzzSupport"],
                          path: "Fuzz/HTTPHead", swiftSettings: fuzzer),
        .executableTarget(name: "FuzzStaticPath", dependencies: ["ChromaHTTP", "FuzzSupport"],
                          path: "Fuzz/StaticPath", swiftSettings: fuzzer),
        .executableTarget(name: "FuzzLineFraming", dependencies: ["Chroma", "FuzzSupport"],
                          path: "Fuzz/LineFraming", swiftSettings: fuzzer),
        .executableTarget(name: "FuzzRESP", dependencies: ["ChromaKV", "FuzzSupport"],
                          path: "Fuzz/RESP", swiftSettings: fuzzer),
    ]
    package.products += [
        .executable(name: "fuzz-http-head", targets: ["FuzzHTTPHead"]),
        .executable(name: "fuzz-static-path", targets: ["FuzzStaticPath"]),
        .executable(name: "fuzz-line-framing", targets: ["FuzzLineFraming"]),
        .executable(name: "fuzz-resp", targets: ["FuzzRESP"]),
    ]
}
