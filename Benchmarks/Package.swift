// swift-tools-version:6.1
// The engine's own costs, measured with ordo-one's package-benchmark, and the Swift peers (SwiftNIO's file
// APIs) that Benchmarks/compare runs beside baio. A separate package, so `swift test` in the root never
// builds it. Run: cd Benchmarks && swift package benchmark
import PackageDescription

import struct Foundation.URL

// A path dependency's identity is its folder's name, which is whatever the clone is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "BufferedAIOBenchmarks",
    dependencies: [
        .package(path: "../"),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
    ],
    targets: [
        .executableTarget(
            name: "EngineCosts",
            dependencies: [
                .product(name: "BufferedAIO", package: root),
                .product(name: "Benchmark", package: "package-benchmark"),
            ],
            path: "Benchmarks/EngineCosts",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "swift-peers",
            dependencies: [
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "SwiftPeers"
        ),
    ]
)
