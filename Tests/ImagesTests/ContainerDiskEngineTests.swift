import Disk
import Engine
import Foundation
import Metrics
import TestSupport
import Testing

/// The engine gives each container of a disk-served image a child disk of its own, made
/// ahead and renamed into place at fork: the container's writes land there (e2fsck and
/// debugfs read them after it ends), other containers of the image do not see them, and the
/// disk goes with the container. Programs started by execve inside it run from the chain.
@Suite(.enabled(if: RegistryFixture.isAvailable && BusyboxRootfs.isAvailable && HostFacts.hasKVM && FileManager.default.isExecutableFile(atPath: "/usr/sbin/e2fsck"),
                "needs /dev/kvm, docker-registry, skopeo, umoci, busybox-static and e2fsprogs (scripts/setup.sh)"))
struct ContainerDiskEngineTests {
    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let result = try HostFacts.run(tool, arguments)
        #expect(result.status == 0, "\(tool) \(arguments.joined(separator: " ")): \(result.stdout) \(result.stderr)")
        return result.stdout
    }

    @Test func eachContainerWritesIntoItsOwnChildDisk() async throws {
        let registry = try RegistryFixture()
        let state = try HostFacts.makeTemporaryFolder("container-disks")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance, rootfsFromLayerDisks: true)
        var upper = TarWriter()
        upper.add("etc/motd", content: Array("from the image\n".utf8))
        try registry.pushLayered(upper: upper.finished(), tag: "writes")
        _ = try await engine.pullImage(reference: registry.reference("writes"), name: "writes", by: "test")
        let layers = engine.imageDatastore.appendingPathComponent("layers").path
        let layersBefore = try FileManager.default.contentsOfDirectory(atPath: layers).sorted()

        // A pipeline: the shell forks and execs cat from the disk chain.
        let piped = try await engine.runContainer(ContainerSpec(image: "writes", arguments: ["sh", "-c", "echo a | cat"]), by: "test")
        #expect(piped.stdout == "a\n" && piped.exitCode == 0, "\(piped.stderr)")

        let script = "echo written > /etc/note && busybox mkdir -p /work/deep && echo x > /work/deep/y && busybox rm /etc/motd && busybox mv /work/deep/y /work/z && cat /etc/note /work/z"
        let writer = try await engine.runContainer(ContainerSpec(image: "writes", arguments: ["sh", "-c", script]), remove: false, by: "test")
        #expect(writer.stdout == "written\nx\n" && writer.exitCode == 0, "\(writer.stderr)")
        let disk = engine.imageDatastore.appendingPathComponent("containers/\(writer.id).vmdk").path
        try Self.run("/usr/bin/qemu-img", ["check", disk])
        let raw = state.appendingPathComponent("container.raw").path
        try Self.run("/usr/bin/qemu-img", ["convert", "-O", "raw", disk, raw])
        try Self.run("/usr/sbin/e2fsck", ["-fn", raw])
        #expect(try Self.run("/usr/sbin/debugfs", ["-R", "cat /etc/note", raw]) == "written\n")
        #expect(try Self.run("/usr/sbin/debugfs", ["-R", "cat /work/z", raw]) == "x\n")
        #expect(try !Self.run("/usr/sbin/debugfs", ["-R", "ls /etc", raw]).contains("motd"))

        // Another container of the image sees the image, not the first one's changes.
        let other = try await engine.runContainer(ContainerSpec(image: "writes", arguments: ["sh", "-c", "cat /etc/motd; cat /etc/note"]), by: "test")
        #expect(other.stdout == "from the image\n" && other.exitCode == 1, "\(other.stdout) \(other.stderr)")
        // The image's layer disks are as the pull left them.
        #expect(try FileManager.default.contentsOfDirectory(atPath: layers).sorted() == layersBefore)

        try await engine.removeContainer(writer.id, by: "test")
        #expect(!FileManager.default.fileExists(atPath: disk))
        let left = try FileManager.default.contentsOfDirectory(atPath: engine.imageDatastore.appendingPathComponent("containers").path)
        #expect(left == ["ready"], "\(left)")
        await engine.shutdown(grace: .milliseconds(100))
    }
}
