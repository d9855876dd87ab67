// swift-tools-version: 6.1
import Foundation
import PackageDescription

/// A path dependency is known by its folder's name, which is whatever the clone was called.
let enginePackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

/// The engine's benchmarks, on ordo-one/package-benchmark. A package of its own so that the
/// main package's build and tests do not pay for the benchmark harness. Run: `make bench`.
/// One benchmark executable on package-benchmark's plugin, over the engine's products.
func benchmarkTarget(_ name: String, fixtures: Bool = false, agent: Bool = false) -> Target {
    .executableTarget(
        name: "\(name)Benchmarks",
        dependencies: [
            .product(name: "Benchmark", package: "package-benchmark"),
            .product(name: "VMForkEngine", package: enginePackage),
        ] + (fixtures ? [.product(name: "VMForkTestSupport", package: enginePackage)] : [])
          + (agent ? [.product(name: "VMForkAgent", package: enginePackage)] : []),
        path: "Benchmarks/\(name)",
        plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
    )
}

let package = Package(
    name: "VMForkBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        benchmarkTarget("Foundation"),
        benchmarkTarget("Placement"),
        benchmarkTarget("ProcessVM", fixtures: true),
        benchmarkTarget("Syscall", fixtures: true),
        benchmarkTarget("Fork", fixtures: true),
        benchmarkTarget("Disk", fixtures: true, agent: true),
        benchmarkTarget("Agent", fixtures: true, agent: true),
    ]
)
