// swift-tools-version:6.1
// BufferedAIO: asynchronous buffered (page-cache) file reads for Linux, in userspace, over libaio.
import PackageDescription

let package = Package(
    name: "swift-buffered-aio",
    products: [
        .library(name: "BufferedAIO", targets: ["BufferedAIO"]),
        .executable(name: "baio", targets: ["baio"]),
        // libbaio: libaio's ABI over the engine, for LD_PRELOAD or linking instead of -laio.
        .library(name: "BAIOCompat", type: .dynamic, targets: ["BAIOCompat"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // Property-based tests (Tests/BufferedAIOTests/PropertyTests.swift): generators with shrinking.
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        // Errno, FileDescriptor and FilePath in the public API: the same types NIO and other Linux
        // libraries use, so a program that imports both never meets two `Errno`s.
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // What Swift cannot see of libaio, preadv2, cachestat and statx.
        .target(
            name: "CBufferedAIO",
            linkerSettings: [.linkedLibrary("aio")]
        ),
        // The engine (Engine/, Direct/, Syscalls/) and the async API (Async/).
        .target(
            name: "BufferedAIO",
            dependencies: ["CBufferedAIO", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // libbaio's own C: the mremap it interposes to follow a moved ring, and the fork handler for a Swift
        // runtime bug (fork_tid.c) that C programs which fork meet through libbaio. Only libbaio links it.
        .target(name: "CBAIOCompat"),
        .target(
            name: "BAIOCompat",
            dependencies: ["BufferedAIO", "CBufferedAIO", "CBAIOCompat"]
        ),
        .executableTarget(
            name: "baio",
            dependencies: [
                "BufferedAIO", "CBufferedAIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // Shared by both test targets: ext4 scratch files (the temp dir, or a loop-mounted image as root),
        // the pread oracle, page-cache control checked with mincore, and leak counters.
        .target(
            name: "TestSupport",
            dependencies: ["BufferedAIO", "CBufferedAIO"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "BufferedAIOTests",
            dependencies: [
                "BufferedAIO", "CBufferedAIO", "TestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        // End-to-end tests of the built `baio` binary against coreutils.
        .testTarget(
            name: "BAIOCommandTests",
            dependencies: [
                "BufferedAIO", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
