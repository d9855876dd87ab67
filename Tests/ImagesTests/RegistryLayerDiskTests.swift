import Disk
import Engine
import Foundation
import IOEngine
@testable import Images
import KVM
import Metrics
import ProcessVM
import TestSupport
import Testing

/// A pull from a real registry writes the image's layers as a chain of ext4 disks that
/// e2fsck accepts, a container runs from a child of the top one, and a collection removes
/// them once no image uses them.
@Suite(.enabled(if: RegistryFixture.isAvailable && BusyboxRootfs.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/sbin/e2fsck"),
                "needs docker-registry, skopeo, umoci, busybox-static and e2fsprogs (scripts/setup.sh)"))
struct RegistryLayerDiskTests {
    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let result = try HostFacts.run(tool, arguments)
        #expect(result.status == 0, "\(tool) \(arguments.joined(separator: " ")): \(result.stdout) \(result.stderr)")
        return result.stdout
    }

    @Test func aPulledImageHasCheckedLayerDisksAContainerRunsFrom() async throws {
        let registry = try RegistryFixture()
        let state = try HostFacts.makeTemporaryFolder("pull-disks")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance)
        var upper = TarWriter()
        upper.add("bin/.wh.ls")
        upper.add("etc/motd", content: Array("pulled in layers\n".utf8))
        try registry.pushLayered(upper: upper.finished(), tag: "layered")
        let image = try await engine.pullImage(reference: registry.reference("layered"), name: "layered", by: "test")
        let disks = try #require(image.pulled?.layerDisks)
        #expect(disks.count == 2)
        let folder = engine.imageDatastore.appendingPathComponent("layers")
        let top = folder.appendingPathComponent(disks[1]).path
        try Self.run("/usr/bin/qemu-img", ["check", top])
        let raw = state.appendingPathComponent("top.raw").path
        try Self.run("/usr/bin/qemu-img", ["convert", "-O", "raw", top, raw])
        try Self.run("/usr/sbin/e2fsck", ["-fn", raw])
        #expect(try Self.run("/usr/sbin/debugfs", ["-R", "cat /etc/motd", raw]) == "pulled in layers\n")
        let bin = try Self.run("/usr/sbin/debugfs", ["-R", "ls -p /bin", raw])
        #expect(!bin.contains("/ls/") && bin.contains("/cat/") && bin.contains("/busybox/"), "\(bin)")

        if HostFacts.hasKVM, let system = try? KVMSystem() {
            // The container's writable disk: a child of the image's top layer.
            let ioEngine = try IOEngine()
            let container = state.appendingPathComponent("container.vmdk").path
            try await VMDKImage.createChild(at: container, parent: top, engine: ioEngine)
            let root = try await DiskRootFileSystem.open(path: container, engine: ioEngine)
            let streams = try CapturedStreams()
            var configuration = ProcessVMConfiguration(rootfs: image.rootfs, memoryBytes: 64 << 20)
            configuration.rootFileSystem = root
            let vm = try ProcessVM(system: system, configuration: configuration, executable: "/bin/busybox", arguments: ["cat", "/etc/motd", "/etc/hostname"],
                                   environment: [], streams: StandardStreams(input: streams.input, output: streams.output, error: streams.error))
            #expect(try vm.run().code == 0)
            #expect(streams.stdout == "pulled in layers\nvmfork-registry-image\n", "\(streams.stderr)")
        }

        try await engine.removeImage("layered", by: "test")
        let report = try await engine.collectImageGarbage(by: "test")
        #expect(report.layerDisksRemoved == 2, "\(report)")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).isEmpty)
        await engine.shutdown(grace: .milliseconds(100))
    }

    /// An engine that runs containers from layer disks: the image's unpacked folder can lose
    /// a file and its containers still read it, from the disk.
    @Test(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
    func theEngineRunsContainersFromTheLayerDisks() async throws {
        let registry = try RegistryFixture()
        let state = try HostFacts.makeTemporaryFolder("pull-disk-run")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance, rootfsFromLayerDisks: true)
        var upper = TarWriter()
        upper.add("etc/motd", content: Array("served from the disk chain\n".utf8))
        try registry.pushLayered(upper: upper.finished(), tag: "disk-run")
        let image = try await engine.pullImage(reference: registry.reference("disk-run"), name: "diskrun", by: "test")
        #expect(unlink(image.rootfs + "/etc/motd") == 0)
        let result = try await engine.runContainer(ContainerSpec(image: "diskrun", arguments: ["cat", "/etc/motd", "/etc/hostname"]), by: "test")
        #expect(result.stdout == "served from the disk chain\nvmfork-registry-image\n" && result.exitCode == 0, "\(result.stderr)")
        await engine.shutdown(grace: .milliseconds(100))
    }
}
