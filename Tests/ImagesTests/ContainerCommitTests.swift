import API
import Disk
import Engine
import Foundation
import Images
import Metrics
import TestSupport
import Testing

/// `commitContainer`: a container's changes on its own disk become one more layer of a new
/// image (a tarball with whiteouts, a layer disk that is a child of the image's top one),
/// and the new image's containers see them; the tarball holds only what changed.
@Suite(.enabled(if: RegistryFixture.isAvailable && BusyboxRootfs.isAvailable && HostFacts.hasKVM && FileManager.default.isExecutableFile(atPath: "/usr/sbin/e2fsck"),
                "needs /dev/kvm, docker-registry, skopeo, umoci, busybox-static and e2fsprogs (scripts/setup.sh)"))
struct ContainerCommitTests {
    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let result = try HostFacts.run(tool, arguments)
        #expect(result.status == 0, "\(tool) \(arguments.joined(separator: " ")): \(result.stdout) \(result.stderr)")
        return result.stdout
    }

    @Test func aCommittedContainerIsAnImageWithItsChangesAsOneMoreLayer() async throws {
        let registry = try RegistryFixture()
        let state = try HostFacts.makeTemporaryFolder("container-commit")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance, rootfsFromLayerDisks: true)
        var upper = TarWriter()
        upper.add("etc/motd", content: Array("from the image\n".utf8))
        upper.add("etc/gone", content: Array("removed by the container\n".utf8))
        upper.add("srv/", .directory, mode: 0o755)
        upper.add("srv/old/", .directory, mode: 0o755)
        upper.add("srv/old/file", content: Array("in a folder the container replaces\n".utf8))
        try registry.pushLayered(upper: upper.finished(), tag: "commit-base")
        let base = try await engine.pullImage(reference: registry.reference("commit-base"), name: "base", by: "test")

        // Not ended yet: refused, and nothing is made.
        let created = try await engine.createContainer(ContainerSpec(image: "base", arguments: ["true"]), by: "test")
        await #expect(throws: EngineError.self) { _ = try await engine.commitContainer(created.id, as: "early", by: "test") }
        #expect((try? engine.image("early")) == nil)
        try await engine.removeContainer(created.id, by: "test")

        let script = """
            echo committed > /etc/note && busybox chmod 600 /etc/note && busybox rm /etc/gone && echo changed > /etc/motd \
            && busybox mkdir -p /work/deep && echo y > /work/deep/y && busybox ln -s /etc/note /work/link && busybox ln /etc/note /work/hard \
            && busybox rm -r /srv/old && busybox mkdir /srv/old && echo new > /srv/old/other
            """
        let writer = try await engine.runContainer(ContainerSpec(image: "base", arguments: ["sh", "-c", script]), remove: false, by: "test")
        #expect(writer.exitCode == 0, "\(writer.stderr)")

        let committed = try await engine.commitContainer(writer.id, as: "committed", comment: "the container's changes", by: "test")
        #expect(committed.image.name == "committed")
        #expect(committed.image.pulled?.committedFrom == writer.id)
        let parentDisks = try #require(base.pulled?.layerDisks)
        let disks = try #require(committed.image.pulled?.layerDisks)
        #expect(disks.count == parentDisks.count + 1 && Array(disks.prefix(parentDisks.count)) == parentDisks, "\(disks)")
        #expect(committed.image.pulled?.diffIDs.last == committed.layer)
        // Whiteouts: /etc/gone and /srv/old/file (the folder was replaced, its file is gone).
        #expect(committed.removed == 2, "\(committed)")

        // The layer: what changed, and nothing else (busybox itself is not in it).
        let blob = engine.imageDatastore.appendingPathComponent("blobs/sha256/\(committed.layer.hex)").path
        let listing = try Self.run("/usr/bin/tar", ["-tvf", blob])
        let names = listing.split(separator: "\n").map { String($0.split(separator: " ", omittingEmptySubsequences: true)[5]) }
        for name in ["etc/note", "etc/.wh.gone", "etc/motd", "work/", "work/deep/y", "work/link", "work/hard", "srv/old/.wh.file", "srv/old/other"] {
            #expect(names.contains(name), "\(name) missing from the layer:\n\(listing)")
        }
        #expect(!names.contains { $0.hasPrefix("bin/") }, "unchanged files in the layer:\n\(listing)")
        #expect(listing.contains("work/hard link to etc/note") || listing.contains("etc/note link to work/hard"), "\(listing)")
        #expect(listing.contains("-rw------- 0/0") && listing.contains("work/link -> /etc/note"), "\(listing)")
        #expect(committed.layerBytes == Int64(try FileManager.default.attributesOfItem(atPath: blob)[.size] as! Int))

        // Its disk: a valid ext4 VMDK that holds the changes.
        let disk = engine.imageDatastore.appendingPathComponent("layers/\(disks.last!)").path
        try Self.run("/usr/bin/qemu-img", ["check", disk])
        let raw = state.appendingPathComponent("committed.raw").path
        try Self.run("/usr/bin/qemu-img", ["convert", "-O", "raw", disk, raw])
        try Self.run("/usr/sbin/e2fsck", ["-fn", raw])
        #expect(try Self.run("/usr/sbin/debugfs", ["-R", "cat /etc/note", raw]) == "committed\n")
        #expect(try !Self.run("/usr/sbin/debugfs", ["-R", "ls /etc", raw]).contains("gone"))
        // Its root folder too.
        #expect(try String(contentsOfFile: committed.image.rootfs + "/work/deep/y", encoding: .utf8) == "y\n")
        #expect(!FileManager.default.fileExists(atPath: committed.image.rootfs + "/etc/gone"))

        // Its containers see the changes, from the disks.
        let reader = try await engine.runContainer(ContainerSpec(image: "committed", arguments: ["sh", "-c", """
            cat /etc/note /etc/motd /work/deep/y /srv/old/other; busybox readlink /work/link; busybox stat -c '%a %h' /etc/note; \
            busybox ls /srv/old; test -e /etc/gone || echo gone
            """]), by: "test")
        #expect(reader.stdout == "committed\nchanged\ny\nnew\n/etc/note\n600 2\nother\ngone\n", "\(reader.stdout) \(reader.stderr)")
        #expect(reader.exitCode == 0)

        // The same changes give the same layer; the name must be free.
        let again = try await engine.commitContainer(writer.id, as: "committed2", by: "test")
        #expect(again.layer == committed.layer)
        await #expect(throws: EngineError.self) { _ = try await engine.commitContainer(writer.id, as: "committed", by: "test") }
        await #expect(throws: EngineError.self) { _ = try await engine.commitContainer("no-such-container", as: "other", by: "test") }

        // Once the container and the first image are gone and the datastore collected, the
        // committed image still runs (its record keeps its layers and disks).
        try await engine.removeContainer(writer.id, by: "test")
        try await engine.removeImage("committed2", by: "test")
        _ = try await engine.collectImageGarbage(by: "test")
        let later = try await engine.runContainer(ContainerSpec(image: "committed", arguments: ["cat", "/etc/note"]), by: "test")
        #expect(later.stdout == "committed\n" && later.exitCode == 0, "\(later.stderr)")
        await engine.shutdown(grace: .milliseconds(100))
    }

    /// A container of an image added from a folder runs read-only from it: nothing to commit.
    @Test func aContainerOfAFolderImageHasNothingToCommit() async throws {
        let state = try HostFacts.makeTemporaryFolder("container-commit-folder")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance, rootfsFromLayerDisks: true)
        let rootfs = try BusyboxRootfs.make()
        _ = try await engine.addImage(ImageRecord(name: "folder", rootfs: rootfs.path, executable: "/bin/busybox", environment: ["PATH=/bin"]), by: "test")
        let ran = try await engine.runContainer(ContainerSpec(image: "folder", arguments: ["true"]), remove: false, by: "test")
        do {
            _ = try await engine.commitContainer(ran.id, as: "never", by: "test")
            Issue.record("a folder image's container was committed")
        } catch let error as EngineError {
            #expect("\(error)".contains("runs from a folder"), "\(error)")
        }
        #expect((try? engine.image("never")) == nil)
        await engine.shutdown(grace: .milliseconds(100))
    }

    /// The daemon's route and the command line: `vmfork container commit ID NAME`.
    @Test func commitsThroughTheDaemonAndTheCommandLine() async throws {
        let registry = try RegistryFixture()
        let daemon = try await DaemonProcess("commit-daemon")
        defer { daemon.stop() }
        let client = daemon.client
        _ = try await client.pullImage(reference: registry.reference("latest"), name: "bb")
        let created = try await client.send("POST", "/v1/containers", json: ContainerSpec(image: "bb", name: "maker", arguments: ["sh", "-c", "echo made > /made"]))
        #expect(created.status == 201, "\(created.text)")
        #expect(try await client.send("POST", "/v1/containers/maker/start").status == 200)
        #expect(try await client.send("POST", "/v1/containers/maker/wait").decode(ExitInfo.self).exitCode == 0)

        let cli = daemon.cli
        let committed = try cli(["container", "commit", "maker", "made", "-m", "one file"])
        #expect(committed.status == 0 && committed.stdout.contains("as image made") && committed.stdout.contains("1 removed") == false, "\(committed)")
        let ran = try HostFacts.run(daemon.binary, ["container", "run", "made", "--state", daemon.state.path, "--", "cat", "/made"])
        #expect(ran.status == 0 && ran.stdout == "made\n", "\(ran)")
        let image = try await client.send("GET", "/v1/images/made").decode(ImageRecord.self)
        #expect(image.pulled?.committedFrom != nil && image.pulled?.layers.count == 2)

        // Refusals: a name in use (409), an unknown container (404), an unknown field (400).
        await #expect(throws: AgentClient.ClientError.self) { _ = try await client.commitContainer("maker", as: "made") }
        #expect(try await client.send("POST", "/v1/containers/nobody/commit", json: ["name": "x"]).status == 404)
        let bad = try await client.send("POST", "/v1/containers/maker/commit", json: ["name": "y", "author": "z"])
        #expect(bad.status == 400 && bad.errorMessage.contains("author"), "\(bad.text)")
        #expect(try await client.send("GET", "/v1/images/y").status == 404)
    }

    /// `--change`: the new image's config takes the Dockerfile instructions, and a container
    /// of it run without arguments runs the new CMD in the new working folder as the new user,
    /// with the new environment; what Docker refuses is refused by name and makes nothing.
    @Test func configChangesReachTheNewImageAndItsContainers() async throws {
        let registry = try RegistryFixture()
        let daemon = try await DaemonProcess("commit-change")
        defer { daemon.stop() }
        let client = daemon.client
        _ = try await client.pullImage(reference: registry.reference("latest"), name: "bb")
        let created = try await client.send("POST", "/v1/containers", json: ContainerSpec(image: "bb", name: "maker", arguments: ["sh", "-c", "busybox mkdir -p /srv/app"]))
        #expect(created.status == 201, "\(created.text)")
        #expect(try await client.send("POST", "/v1/containers/maker/start").status == 200)
        #expect(try await client.send("POST", "/v1/containers/maker/wait").decode(ExitInfo.self).exitCode == 0)

        let command = ["sh", "-c", "echo $MOTTO; pwd; busybox id -u"]
        let cli = daemon.cli
        let committed = try cli(["container", "commit", "maker", "configured", "--change", #"CMD ["sh","-c","echo $MOTTO; pwd; busybox id -u"]"#,
                                 "-c", #"ENV MOTTO="changed config" OTHER=$GREETING"#, "-c", "WORKDIR /srv", "--change", "WORKDIR app", "-c", "USER 1234",
                                 "-c", "LABEL stage=test", "-c", "EXPOSE 8080", "-c", "STOPSIGNAL SIGINT"])
        #expect(committed.status == 0 && committed.stdout.contains("as image configured"), "\(committed)")
        let ran = try cli(["container", "run", "configured"])
        #expect(ran.status == 0 && ran.stdout == "changed config\n/srv/app\n1234\n", "\(ran)")

        // `vmfork image inspect` shows the new config; the OCI config blob holds it.
        let inspected = try cli(["image", "inspect", "configured"])
        let image = try JSONDecoder().decode(ImageRecord.self, from: Data(inspected.stdout.utf8))
        let pulled = try #require(image.pulled, "\(inspected)")
        #expect(pulled.entrypoint == ["/bin/busybox"] && pulled.cmd == command, "\(pulled)")
        #expect(pulled.env == ["PATH=/bin", "GREETING=hello", "MOTTO=changed config", "OTHER=hello"], "\(pulled.env)")
        #expect(pulled.workingDir == "/srv/app" && pulled.user == "1234" && pulled.labels == ["stage": "test"], "\(pulled)")
        #expect(pulled.exposedPorts == ["8080/tcp"] && pulled.stopSignal == "SIGINT", "\(pulled)")
        let blob = try #require(FileManager.default.enumerator(atPath: daemon.state.path)?.compactMap { $0 as? String }
            .first { $0.hasSuffix("blobs/sha256/\(pulled.configDigest.hex)") })
        let document = try JSONSerialization.jsonObject(with: Data(contentsOf: daemon.state.appendingPathComponent(blob))) as? [String: Any]
        let config = try #require(document?["config"] as? [String: Any])
        #expect(config["Cmd"] as? [String] == command && config["WorkingDir"] as? String == "/srv/app" && config["User"] as? String == "1234", "\(config)")
        #expect(config["StopSignal"] as? String == "SIGINT" && (config["ExposedPorts"] as? [String: Any])?.keys.first == "8080/tcp", "\(config)")
        // ENTRYPOINT: the program the image runs, its CMD the arguments; alone, it drops the CMD.
        let echoer = try cli(["container", "commit", "maker", "echoer", "-c", #"ENTRYPOINT ["/bin/busybox","echo"]"#, "-c", "CMD entry point"])
        #expect(echoer.status == 0, "\(echoer)")
        let echoed = try cli(["container", "run", "echoer"])
        #expect(echoed.status == 0 && echoed.stdout == "/bin/sh -c entry point\n", "\(echoed)")
        let bare = try cli(["container", "commit", "maker", "bare", "-c", #"ENTRYPOINT ["/bin/busybox","echo","bare"]"#])
        #expect(bare.status == 0, "\(bare)")
        let bareRun = try cli(["container", "run", "bare"])
        #expect(bareRun.status == 0 && bareRun.stdout == "bare\n", "\(bareRun)")
        // The base image is untouched.
        let base = try await client.send("GET", "/v1/images/bb").decode(ImageRecord.self)
        #expect(base.pulled?.cmd == ["sh"] && base.pulled?.workingDir == "/" && base.pulled?.labels == nil, "\(String(describing: base.pulled))")

        // Refusals, each a 400 naming what was wrong, and no image made.
        struct Body: Encodable, Sendable { var name: String; var changes: [String] }
        let imagesBefore = try await client.send("GET", "/v1/images").decode([ImageRecord].self).count
        for (change, named) in [("RUN echo hi", "RUN is not a valid change instruction"), (#"CMD ["echo", hi]"#, #"CMD ["echo", hi] is not a JSON array of strings"#),
                                ("FROBNICATE now", "FROBNICATE is not a Dockerfile instruction")] {
            let refused = try await client.send("POST", "/v1/containers/maker/commit", json: Body(name: "refused", changes: [#"ENV A=1"#, change]))
            #expect(refused.status == 400 && refused.errorMessage.contains(named), "\(change): \(refused.status) \(refused.text)")
            #expect(try await client.send("GET", "/v1/images/refused").status == 404)
        }
        let fromCLI = try cli(["container", "commit", "maker", "refused", "-c", "COPY a /b"])
        #expect(fromCLI.status != 0 && fromCLI.stderr.contains("COPY is not a valid change instruction"), "\(fromCLI)")
        #expect(try await client.send("GET", "/v1/images").decode([ImageRecord].self).count == imagesBefore)
        // A change the API document bounds: at most 64 of at most 4096 characters.
        let long = try await client.send("POST", "/v1/containers/maker/commit", json: Body(name: "refused", changes: ["ENV A=" + String(repeating: "x", count: 4100)]))
        #expect(long.status == 400 && long.errorMessage.contains("over 4096"), "\(long.text)")
    }
}
