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
        // Fixtures shared by the tests and the benchmarks (busybox rootfs, tiny programs).
        .library(name: "VMForkTestSupport", targets: ["TestSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.0"),
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
        .target(name: "ProcessVM", dependencies: ["CShims", "HostSystem", "KVM"], swiftSettings: strictSettings),
        .target(name: "Fork", dependencies: ["ProcessVM", "KVM", "HostSystem"], swiftSettings: strictSettings),
        .target(name: "Disk", dependencies: ["CShims", "IOEngine", "HostSystem"], swiftSettings: strictSettings),
        .target(name: "WorkloadProfiles", dependencies: [.product(name: "Yams", package: "Yams")], swiftSettings: strictSettings),
        .target(name: "Store", dependencies: [.product(name: "GRDB", package: "GRDB.swift")], swiftSettings: strictSettings),
        .target(name: "Placement", dependencies: ["Store", "WorkloadProfiles"], swiftSettings: strictSettings),
        .executableTarget(
            name: "vmfork",
            dependencies: [
                "Capabilities", "ProcessVM", "Fork", "Disk", "Placement", "Store", "WorkloadProfiles", "HostSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),

        // Facts about the test machine (KVM present, root) shared by the test targets.
        .target(name: "TestSupport", dependencies: ["ProcessVM"], swiftSettings: strictSettings),
        .testTarget(name: "HostSystemTests", dependencies: ["HostSystem", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "HostSystem", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "IOEngineTests", dependencies: ["IOEngine", "HostSystem", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "DiskTests", dependencies: ["Disk", "IOEngine", "TestSupport", "vmfork"], swiftSettings: strictSettings),
        .testTarget(name: "CapabilitiesTests", dependencies: ["Capabilities", "KVM", "IOEngine", "TestSupport", "vmfork"], swiftSettings: strictSettings),
        .testTarget(name: "ProcessVMTests", dependencies: ["ProcessVM", "HostSystem", "KVM", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "ForkTests", dependencies: ["Fork", "ProcessVM", "HostSystem", "KVM", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "WorkloadProfilesTests", dependencies: ["WorkloadProfiles", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "PlacementTests", dependencies: ["Placement", "Store", "WorkloadProfiles", "TestSupport", "vmfork"], swiftSettings: strictSettings),
        .testTarget(name: "StoreTests", dependencies: ["Store", "TestSupport"], swiftSettings: strictSettings),
    ]
)
