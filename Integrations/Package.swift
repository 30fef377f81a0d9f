// swift-tools-version:6.1
// Integrations of BufferedAIO with SwiftNIO and Hummingbird, in a package of their own so the core library
// (the root package) never pulls NIO: only users of these products build it.
import PackageDescription

let package = Package(
    name: "swift-buffered-aio-integrations",
    products: [
        // Reads into NIO ByteBuffers, whole ranges and chunked, over BufferedFile.
        .library(name: "BufferedAIONIO", targets: ["BufferedAIONIO"]),
        // A Hummingbird 2 FileProvider for FileMiddleware(fileProvider:), in place of LocalFileSystem.
        .library(name: "BufferedAIOHummingbird", targets: ["BufferedAIOHummingbird"]),
        // An example static-file server with either provider, used by Benchmarks/wrk-compare.
        .executable(name: "FileServer", targets: ["FileServer"]),
    ],
    dependencies: [
        .package(name: "swift-buffered-aio", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.14.0"),
    ],
    targets: [
        .target(
            name: "BufferedAIONIO",
            dependencies: [
                .product(name: "BufferedAIO", package: "swift-buffered-aio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "BufferedAIOHummingbird",
            dependencies: [
                "BufferedAIONIO",
                .product(name: "BufferedAIO", package: "swift-buffered-aio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "FileServer",
            dependencies: [
                "BufferedAIOHummingbird",
                .product(name: "BufferedAIO", package: "swift-buffered-aio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "BufferedAIOHummingbirdTests",
            dependencies: [
                "BufferedAIONIO",
                "BufferedAIOHummingbird",
                .product(name: "BufferedAIO", package: "swift-buffered-aio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
