// swift-tools-version: 6.1
import Foundation
import PackageDescription

/// A path dependency is known by its folder's name, which is whatever the clone was called.
let enginePackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

/// The engine's benchmarks, on ordo-one/package-benchmark. A package of its own so that the
/// main package's build and tests do not pay for the benchmark harness. Run: `make bench`.
let package = Package(
    name: "VMForkBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "FoundationBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "VMForkEngine", package: enginePackage),
            ],
            path: "Benchmarks/Foundation",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "PlacementBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "VMForkEngine", package: enginePackage),
            ],
            path: "Benchmarks/Placement",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "ProcessVMBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "VMForkEngine", package: enginePackage),
                .product(name: "VMForkTestSupport", package: enginePackage),
            ],
            path: "Benchmarks/ProcessVM",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "ForkBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "VMForkEngine", package: enginePackage),
                .product(name: "VMForkTestSupport", package: enginePackage),
            ],
            path: "Benchmarks/Fork",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "DiskBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "VMForkEngine", package: enginePackage),
            ],
            path: "Benchmarks/Disk",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
