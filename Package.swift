// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "kubebridge",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kubebridge", targets: ["kubebridge"]),
        .library(name: "KubeModel", targets: ["KubeModel"]),
        .library(name: "KubeAPI", targets: ["KubeAPI"]),
        .library(name: "KubeTestServer", targets: ["KubeTestServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // Already built for AsyncHTTPClient; the test API server speaks HTTP/2 as kube-apiserver does.
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // The benchmarks' latency percentiles.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .target(
            name: "KubeModel",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ]
        ),
        .target(
            name: "KubeAPI",
            dependencies: [
                "KubeModel",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(
            name: "BridgeCore",
            dependencies: [
                "KubeModel",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .systemLibrary(
            name: "CSQLite",
            path: "Sources/CSQLite",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(
            name: "BridgeCheckpoint",
            dependencies: [
                "BridgeCore",
                "CSQLite",
                "KubeAPI",
                "KubeModel",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ]
        ),
        .target(
            name: "ConfigReading",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "FileSink",
            dependencies: [
                "BridgeCore", "ConfigReading", "KubeModel", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "sinks/file"
        ),
        .systemLibrary(
            name: "CRdKafka",
            path: "sinks/kafka/CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        .target(
            name: "KafkaSink",
            dependencies: [
                "BridgeCore", "ConfigReading", "CRdKafka", .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "sinks/kafka/KafkaSink"
        ),
        .systemLibrary(
            name: "CNats",
            path: "sinks/nats/CNats",
            pkgConfig: "libnats",
            providers: [.apt(["libnats-dev"])]
        ),
        .target(
            name: "NATSSink",
            dependencies: [
                "KubeModel",
                "BridgeCore", "CNats", "ConfigReading", .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "Yams", package: "Yams"),
            ],
            path: "sinks/nats/NATSSink"
        ),
        .target(
            name: "WebhookSink",
            dependencies: [
                "BridgeCore",
                "ConfigReading",
                "KubeModel",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "sinks/webhook"
        ),
        .target(
            name: "KubeInformer",
            dependencies: [
                "KubeAPI",
                "KubeModel",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "BridgeApp",
            dependencies: [
                "KubeModel",
                "BridgeCore",
                "BridgeCheckpoint",
                "ConfigReading",
                "FileSink",
                "KafkaSink",
                "NATSSink",
                "WebhookSink",
                "KubeAPI",
                "KubeInformer",
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "KubeTestServer",
            dependencies: [
                // For SplitMix64 only: the server keeps its own JSON, objects and rules.
                "KubeModel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "kubebridge",
            dependencies: [
                "KubeModel",
                "BridgeApp",
                "FileSink",
                "KubeAPI",
                "KubeInformer",
                "BridgeCore",
                "KubeTestServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "TestSupport",
            dependencies: [
                "KubeModel",
                "BridgeCore",
                "KubeTestServer",
                "KubeAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestSupport",
            resources: [.copy("Fixtures")]
        ),
        .executableTarget(
            name: "kubebridge-bench",
            dependencies: [
                "BridgeApp",
                "FileSink",
                "KafkaSink",
                "NATSSink",
                "WebhookSink",
                "KubeModel",
                "KubeAPI",
                "KubeInformer",
                "BridgeCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Benchmarks/KubeBridgeBench"
        ),
        .testTarget(
            name: "KubeAPITests",
            dependencies: [
                "KubeModel",
                "KubeAPI", "KubeTestServer", "TestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ]
        ),
        .testTarget(
            name: "BridgeCoreTests",
            dependencies: ["BridgeCore", "BridgeCheckpoint", "CSQLite", "FileSink", "KubeModel", "TestSupport", .product(name: "NIOFoundationCompat", package: "swift-nio")]
        ),
        .testTarget(name: "BridgeAppTests", dependencies: ["BridgeApp", "BridgeCore", "BridgeCheckpoint", "KubeAPI", "KubeModel", "WebhookSink", "KubeTestServer", "TestSupport"]),
        .testTarget(name: "KafkaSinkTests", dependencies: ["KafkaSink", "BridgeCore", "FileSink", "KubeAPI", "TestSupport"]),
        .testTarget(name: "NATSSinkTests", dependencies: ["NATSSink", "BridgeCore", "KubeAPI", "KubeTestServer", "TestSupport"]),
        .testTarget(
            name: "WebhookSinkTests",
            dependencies: [
                "WebhookSink", "BridgeCore", "KubeAPI", "KubeTestServer", "TestSupport",
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "KubeInformerTests", dependencies: ["KubeAPI", "KubeModel", "KubeInformer", "BridgeCore", "KubeTestServer", "TestSupport"]),
        .testTarget(name: "KubeTestServerTests", dependencies: ["KubeTestServer", "KubeAPI", "TestSupport"]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "KubeAPI", "KubeModel", "KubeTestServer", "TestSupport", "BridgeCore", "BridgeCheckpoint", "KafkaSink",
                .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
