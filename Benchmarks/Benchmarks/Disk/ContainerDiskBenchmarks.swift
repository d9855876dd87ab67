import Benchmark
import Disk
import Foundation
import IOEngine

/// A container's writable disk at fork: making a child VMDK of an 8 GiB layer disk (the work
/// the engine's ContainerDiskPool does ahead, off the fork path), and taking a made one at
/// fork (the rename into the container's name that the fork path pays).
func containerDiskBenchmarks() {
    Benchmark("Container disk: make a child VMDK of an 8 GiB layer", configuration: .init(metrics: [.wallClock], maxDuration: .seconds(10), maxIterations: 2000)) { benchmark async throws in
        let folder = try ContainerDiskFolder()
        defer { folder.remove() }
        let parent = try await folder.parent()
        // Only the child's making is measured (each iteration sets up its own parent).
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            try await VMDKImage.createChild(at: folder.path("child-\(index).vmdk"), parent: parent, engine: folder.engine)
        }
        benchmark.stopMeasurement()
    }
    Benchmark("Container disk: take a ready child at fork (rename into place)", configuration: .init(metrics: [.wallClock], maxDuration: .seconds(10), maxIterations: 2000)) { benchmark async throws in
        let folder = try ContainerDiskFolder()
        defer { folder.remove() }
        let parent = try await folder.parent()
        try FileManager.default.createDirectory(atPath: folder.path("ready"), withIntermediateDirectories: true)
        let count = benchmark.scaledIterations.count
        for index in 0..<count { try await VMDKImage.createChild(at: folder.path("ready/\(index).vmdk"), parent: parent, engine: folder.engine) }
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            guard rename(folder.path("ready/\(index - benchmark.scaledIterations.lowerBound).vmdk"), folder.path("container-\(index).vmdk")) == 0 else {
                throw CocoaError(.fileWriteUnknown)
            }
        }
        benchmark.stopMeasurement()
    }
}

/// A folder on a real file system with an empty 8 GiB layer disk in it.
struct ContainerDiskFolder {
    let url: URL
    let engine: IOEngine

    init() throws {
        url = URL(fileURLWithPath: "/var/tmp").appendingPathComponent("vmfork-bench-cdisk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        engine = try IOEngine()
    }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    func parent() async throws -> String {
        let parent = path("layer.vmdk")
        try await VMDKImage.create(at: parent, capacityBytes: 8 << 30, engine: engine)
        return parent
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}
