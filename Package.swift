// swift-tools-version: 6.2
import Foundation
import PackageDescription

/// VMFork: an instant-clone engine that runs each container as its own KVM process VM,
/// forked copy-on-write from a warm parent. One module per concept; data flows from the
/// command-line tool down to the kernel interfaces (see README.md, "Layout").
/// CI builds treat warnings as errors; local builds only show them.
let strictSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)]
    + (ProcessInfo.processInfo.environment["CI"] != nil ? [.treatAllWarnings(as: .error)] : [])

let package = Package(
    name: "VMFork",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "vmfork", targets: ["vmfork"]),
        .library(name: "VMForkEngine", targets: ["Fork", "ProcessVM", "Disk", "IOEngine", "Placement", "Store", "WorkloadProfiles", "Capabilities", "HostSystem", "KVM"]),
        // The host agent: the engine and its HTTP API (server and client).
        .library(name: "VMForkAgent", targets: ["Engine", "API"]),
        // The Virtual Container Host: the Docker Engine API in front of the host agent's API.
        .library(name: "VMForkVCH", targets: ["VCH"]),
        // Fixtures shared by the tests and the benchmarks (busybox rootfs, tiny programs).
        .library(name: "VMForkTestSupport", targets: ["TestSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.0"),
        // The host agent: its HTTP server, logging and metrics.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
        // Already in Hummingbird's graph: named for the socket options and the shutdown sequence.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
        // Already in Hummingbird's graph: the HTTP parts of its channel pipeline (the connection limit's handler).
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.34.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        // Load runs: latency histograms (#18).
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        // The management web UI's templates (#19).
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
    ],
    targets: [
        // The one C target: kernel and library interfaces Swift cannot import directly.
        .target(
            name: "CShims",
            linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("numa"), .linkedLibrary("z")]
        ),
        .target(name: "HostSystem", dependencies: ["CShims"], swiftSettings: strictSettings),
        .target(name: "KVM", dependencies: ["CShims", "HostSystem"], swiftSettings: strictSettings),
        .target(name: "IOEngine", dependencies: ["CShims", "HostSystem"], swiftSettings: strictSettings),
        .target(name: "Capabilities", dependencies: ["CShims", "HostSystem", "KVM", "IOEngine"], swiftSettings: strictSettings),
        .target(name: "ProcessVM", dependencies: ["CShims", "HostSystem", "KVM", "Disk"], swiftSettings: strictSettings),
        .target(name: "Fork", dependencies: ["ProcessVM", "KVM", "HostSystem"], swiftSettings: strictSettings),
        .target(name: "Disk", dependencies: ["CShims", "IOEngine", "HostSystem"], swiftSettings: strictSettings),
        .target(name: "WorkloadProfiles", dependencies: [.product(name: "Yams", package: "Yams")], swiftSettings: strictSettings),
        .target(name: "Store", dependencies: [.product(name: "GRDB", package: "GRDB.swift")], swiftSettings: strictSettings),
        .target(name: "Placement", dependencies: ["Store", "WorkloadProfiles"], swiftSettings: strictSettings),
        // Images from registries: the HTTP API v2 client, the blob store, the tar unpacker.
        .target(name: "Images", dependencies: ["CShims", "Disk", .product(name: "Logging", package: "swift-log")], swiftSettings: strictSettings),
        // The one object between the parts and the executables: images, warm parents,
        // containers, events, placement.
        .target(
            name: "Engine",
            dependencies: [
                "Fork", "ProcessVM", "KVM", "HostSystem", "Placement", "Store", "Images", "CShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // The host agent's HTTP API (OpenAPI document, server, client over the Unix socket).
        .target(
            name: "API",
            dependencies: [
                "Engine", "Images", "KVM", "Placement", "Store", "WorkloadProfiles",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("openapi.json")],
            swiftSettings: strictSettings
        ),
        // Load runs: a workload profile's launch mix against a running host agent, and its reports (#18).
        .target(
            name: "Load",
            dependencies: [
                "API", "Engine", "HostSystem", "Placement", "WorkloadProfiles",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // The Virtual Container Host: the Docker Engine API (NIO HTTP/1.1 with the attach
        // upgrade), backed by the host agent's API through its client, one resource pool each.
        .target(
            name: "VCH",
            dependencies: [
                "API", "Engine", "Placement",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // The management web UI (#19): server-rendered pages over the agent's own API, served by `vmfork serve`.
        .target(
            name: "UI",
            dependencies: [
                "API", "Engine", "Placement",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "vmfork",
            dependencies: [
                "Capabilities", "ProcessVM", "Fork", "Disk", "Placement", "Store", "WorkloadProfiles", "HostSystem",
                "Engine", "API", "Load", "VCH", "UI", .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),

        // Facts about the test machine (KVM present, root) shared by the test targets.
        .target(name: "TestSupport", dependencies: ["ProcessVM", "CShims"], swiftSettings: strictSettings),
        .testTarget(name: "HostSystemTests", dependencies: ["HostSystem", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "HostSystem", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "IOEngineTests", dependencies: ["IOEngine", "HostSystem", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "DiskTests", dependencies: ["Disk", "IOEngine", "TestSupport", "vmfork"], swiftSettings: strictSettings),
        .testTarget(name: "CapabilitiesTests", dependencies: ["Capabilities", "KVM", "IOEngine", "TestSupport", "vmfork"], swiftSettings: strictSettings),
        .testTarget(name: "ProcessVMTests", dependencies: ["ProcessVM", "Fork", "HostSystem", "KVM", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "ForkTests", dependencies: ["Fork", "ProcessVM", "HostSystem", "KVM", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "WorkloadProfilesTests", dependencies: ["WorkloadProfiles", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "PlacementTests", dependencies: ["Placement", "Store", "WorkloadProfiles", "TestSupport", "vmfork"], swiftSettings: strictSettings),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Fork", "Store", "TestSupport", .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Metrics", package: "swift-metrics")], swiftSettings: strictSettings),
        .testTarget(name: "APITests", dependencies: ["API", "Engine", "HostSystem", "ProcessVM", "Placement", "Load", "WorkloadProfiles", "TestSupport", "vmfork"], swiftSettings: strictSettings),
        .testTarget(name: "LoadTests", dependencies: ["Load", "API", "WorkloadProfiles", "CShims", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "VCHTests", dependencies: ["VCH", "API", "Engine", "TestSupport", "vmfork"], swiftSettings: strictSettings),
        .testTarget(name: "StoreTests", dependencies: ["Store", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "ImagesTests", dependencies: ["Images", "Engine", "API", "TestSupport", "CShims", .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics")], swiftSettings: strictSettings),
    ]
)
