import Benchmark
import Disk
import Engine
import Foundation
import Images
import IOEngine
import Logging
import Metrics
import TestSupport

/// What a container's writable disk adds to a fork, through the Engine in process: fork →
/// `busybox echo hi` finished, output returned, container removed, for the same busybox tree
/// served (1) from a layer disk (each container has a writable root on its own child disk,
/// which is made only at its first change: echo makes none) and (2) from its folder,
/// read-only — interleaved, one of each per iteration, each with its parent's pool of VMs
/// full. The difference is the disk's whole cost over a container's life, an upper bound on
/// what it adds to the fork itself (the target: 20 µs).
func diskForkBenchmarks() {
    let metricNames = ["1 disk-served µs", "2 folder-served µs", "3 disk minus folder µs"]
    let interleaved = Benchmark.Configuration(metrics: metricNames.map { .custom($0, polarity: .prefersSmaller) }, warmupIterations: 10,
                                              scalingFactor: .one, maxDuration: .seconds(20), maxIterations: 400)
    Benchmark("Engine → busybox echo hi: writable layer-disk child vs folder (interleaved, pools ready)", configuration: interleaved) { benchmark in
        let fixture = DiskForkFixture.shared
        func timed(_ image: String) -> Int {
            fixture.waitForPools()
            let start = ContinuousClock.now
            precondition(fixture.run(image) == "hi\n")
            let elapsed = ContinuousClock.now - start
            return Int(elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000)
        }
        let disk = timed("bb-disk")
        let folder = timed("bb-folder")
        for (name, value) in zip(metricNames, [disk, folder, max(0, disk - folder)]) {
            benchmark.measurement(.custom(name, polarity: .prefersSmaller), value)
        }
    }
}

/// An engine on a temporary state folder with the busybox tree as a layer disk in its
/// datastore (what a pull writes) and as a folder, each an image with a warm parent.
final class DiskForkFixture: @unchecked Sendable {
    // @unchecked: built once before the benchmark runs; Engine is Sendable and the rest is constant.
    static let shared = DiskForkFixture()
    let state: URL
    let engine: Engine

    init() {
        let rootfs = try! BusyboxRootfs.make()
        state = try! HostFacts.makeTemporaryFolder("bench-disk-fork")
        var logger = Logger(label: "bench") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .warning
        let engine = try! Engine(stateFolder: state.appendingPathComponent("engine"), logger: logger, metricsFactory: NOOPMetricsHandler.instance,
                                 rootfsFromLayerDisks: true)
        self.engine = engine
        let layers = engine.imageDatastore.appendingPathComponent("layers")
        let name = String(repeating: "ab", count: 32) + ".vmdk"
        let path = layers.appendingPathComponent(name).path
        Self.blocking {
            try FileManager.default.createDirectory(at: layers, withIntermediateDirectories: true)
            let io = try IOEngine()
            try await VMDKImage.create(at: path, capacityBytes: 8 << 30, engine: io)
            let builder = try Ext4Builder.create(on: try await VirtualDisk.open(path: path, writable: true, engine: io))
            try await builder.addTree(folder: rootfs.path)
            try await builder.finish()
            let digest = "sha256:" + String(repeating: "ab", count: 32)
            let record = """
                {"reference":"bench/busybox","manifestDigest":"\(digest)","configDigest":"\(digest)","layers":["\(digest)"],"diffIDs":["\(digest)"],\
                "layerBytes":0,"unpackedBytes":0,"entrypoint":["/bin/busybox"],"cmd":[],"env":[],"workingDir":"","user":"","pulledAt":0,\
                "layerDisks":["\(name)"]}
                """
            var disk = ImageRecord(name: "bb-disk", rootfs: rootfs.path, executable: "/bin/busybox")
            disk.pulled = try JSONDecoder().decode(PulledImage.self, from: Data(record.utf8))
            _ = try await engine.addImage(disk, by: "bench")
            _ = try await engine.addImage(ImageRecord(name: "bb-folder", rootfs: rootfs.path, executable: "/bin/busybox"), by: "bench")
            _ = try await engine.createParents(ParentPolicy(image: "bb-disk", readyVMs: 16), by: "bench")
            _ = try await engine.createParents(ParentPolicy(image: "bb-folder", readyVMs: 16), by: "bench")
        }
        // The first container of each image opens its disk and fills the disk pool.
        precondition(run("bb-disk") == "hi\n" && run("bb-folder") == "hi\n")
        waitForPools()
    }

    func run(_ image: String) -> String {
        let engine = self.engine
        return Self.blocking { try await engine.runContainer(ContainerSpec(image: image, arguments: ["echo", "hi"]), by: "bench").stdout }
    }

    /// Until every parent's pool of VMs is full. (A container that writes nothing takes no
    /// disk, so the image's pool of disks is not waited for: the containers here only read.)
    func waitForPools() {
        let engine = self.engine
        for _ in 0..<1000 {
            let parents = Self.blocking { try await engine.parents(withSharing: false) }
            if parents.allSatisfy({ $0.readyVMsNow >= $0.policy.readyVMs }) { return }
            usleep(1_000)
        }
    }

    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> T {
        let semaphore = DispatchSemaphore(value: 0)
        let box = Box<T>()
        Task.detached {
            do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
            semaphore.signal()
        }
        semaphore.wait()
        return try! box.result!.get()
    }

    final class Box<T>: @unchecked Sendable {
        // @unchecked: written once by the task before the semaphore is signalled, read after the wait.
        var result: Result<T, Error>?
    }
}
