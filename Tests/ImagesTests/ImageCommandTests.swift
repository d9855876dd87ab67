import API
import Engine
import Foundation
import Images
import TestSupport
import Testing

/// A pulled image whose config names a busybox applet (`CMD ["ls", "/"]`, no entrypoint)
/// runs that applet with argv[0] "ls", through the agent's API; and a commit of a container
/// that ran a command of its own carries that command, environment and labels into the new
/// image, as Docker's commit does.
@Suite(.enabled(if: RegistryFixture.isAvailable && BusyboxRootfs.isAvailable && HostFacts.hasKVM, "needs /dev/kvm, docker-registry, skopeo, umoci and busybox-static (scripts/setup.sh)"))
struct ImageCommandTests {
    /// Pushes the seeded busybox layer plus /srv/note under `tag`, its config `config`.
    static func pushApplets(_ registry: RegistryFixture, tag: String, config: [String: Any]) throws {
        var upper = TarWriter()
        upper.add("srv/", .directory, mode: 0o755)
        upper.add("srv/note", content: Array("a note\n".utf8))
        let layer = upper.finished()
        let document: [String: Any] = ["architecture": "amd64", "os": "linux", "config": config,
                                       "rootfs": ["type": "layers", "diff_ids": [try registry.seededImage().diffID, Digest.of(layer).description]]]
        let json = String(decoding: try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys]), as: UTF8.self)
        try registry.pushLayered(upper: layer, tag: tag, configOverride: json)
    }

    @Test func anAppletCommandRunsTheAppletAndACommitCarriesTheContainersConfig() async throws {
        let registry = try RegistryFixture()
        try Self.pushApplets(registry, tag: "applets", config: ["Cmd": ["ls", "/"], "Env": ["PATH=/bin"], "Labels": ["from": "image"]])
        let daemon = try await DaemonProcess("image-command")
        defer { daemon.stop() }
        let client = daemon.client
        let image = try await client.pullImage(reference: registry.reference("applets"), name: "applets")
        #expect(image.executable == "/bin/busybox" && image.argv0 == "ls" && image.arguments == ["/"], "\(image)")

        struct Run: Encodable, Sendable {
            var image = "applets"
            var cmd: [String]? = nil
            var entrypoint: [String]? = nil
            var arguments: [String]? = nil
        }
        func run(_ body: Run) async throws -> RunResult {
            let response = try await client.send("POST", "/v1/containers/run", json: body)
            #expect(response.status == 200, "\(response.text)")
            return try response.decode(RunResult.self)
        }
        // The image's own command: ls, not busybox's usage text.
        let root = try FileManager.default.contentsOfDirectory(atPath: image.rootfs).sorted()
        let listed = try await run(Run())
        #expect(listed.exitCode == 0 && listed.stdout == root.map { $0 + "\n" }.joined() && root.contains("srv"), "\(listed) \(root)")
        // Arguments of the agent's own follow the image's argv[0].
        let srv = try await run(Run(arguments: ["/srv"]))
        #expect(srv.stdout == "note\n", "\(srv)")
        // A command of its own: $0 is its first word as written (what docker run prints).
        let shell = try await run(Run(cmd: ["sh", "-c", "echo $0"]))
        #expect(shell.stdout == "sh\n", "\(shell)")
        let path = try await run(Run(cmd: ["/bin/sh", "-c", "echo $0"]))
        #expect(path.stdout == "/bin/sh\n", "\(path)")
        let entry = try await run(Run(cmd: ["/srv/note"], entrypoint: ["cat"]))
        #expect(entry.stdout == "a note\n", "\(entry)")
        let refused = try await client.send("POST", "/v1/containers/run", json: Run(cmd: ["nosuch"]))
        #expect(refused.status == 400 && refused.errorMessage.contains("program \"nosuch\" is not an executable file in image applets"), "\(refused.text)")

        // Commit: the container's command, environment and labels (not the tools' own) become
        // the new image's config, the changes on top.
        let spec = ContainerSpec(image: "applets", name: "maker", cmd: ["sh", "-c", "echo made > /made; echo $0 $EXTRA"],
                                 environment: ["PATH=/bin", "EXTRA=one"], labels: ["team": "a", "vmfork.vch": "dev"])
        #expect(try await client.send("POST", "/v1/containers", json: spec).status == 201)
        #expect(try await client.send("POST", "/v1/containers/maker/start").status == 200)
        #expect(try await client.send("POST", "/v1/containers/maker/wait").decode(ExitInfo.self).exitCode == 0)
        struct Commit: Encodable, Sendable { var name: String; var changes: [String]? = nil }
        #expect(try await client.send("POST", "/v1/containers/maker/commit", json: Commit(name: "made", changes: ["ENV LATER=two"])).status == 201)
        let made = try await client.send("GET", "/v1/images/made").decode(ImageRecord.self)
        let pulled = try #require(made.pulled)
        #expect(pulled.cmd == ["sh", "-c", "echo made > /made; echo $0 $EXTRA"] && pulled.entrypoint.isEmpty, "\(pulled)")
        #expect(pulled.env == ["PATH=/bin", "EXTRA=one", "LATER=two"] && pulled.labels == ["from": "image", "team": "a"], "\(pulled)")
        let again = try await client.send("POST", "/v1/containers/run", json: Run(image: "made"))
        #expect(try again.decode(RunResult.self).stdout == "sh one\n", "\(again.text)")
        // An entrypoint of its own is carried, with the cmd it ran (none here: the image's dropped).
        let entryMaker = ContainerSpec(image: "applets", name: "entry-maker", entrypoint: ["echo", "from", "entrypoint"])
        #expect(try await client.send("POST", "/v1/containers", json: entryMaker).status == 201)
        #expect(try await client.send("POST", "/v1/containers/entry-maker/start").status == 200)
        #expect(try await client.send("POST", "/v1/containers/entry-maker/wait").decode(ExitInfo.self).exitCode == 0)
        #expect(try await client.send("POST", "/v1/containers/entry-maker/commit", json: Commit(name: "entry-made")).status == 201)
        let entryMade = try #require(try await client.send("GET", "/v1/images/entry-made").decode(ImageRecord.self).pulled)
        #expect(entryMade.entrypoint == ["echo", "from", "entrypoint"] && entryMade.cmd.isEmpty && entryMade.env == ["PATH=/bin"], "\(entryMade)")
        // A container that named nothing: the image's config as it was.
        let plain = try await client.send("POST", "/v1/containers", json: ContainerSpec(image: "applets", name: "plain"))
        #expect(plain.status == 201)
        #expect(try await client.send("POST", "/v1/containers/plain/start").status == 200)
        #expect(try await client.send("POST", "/v1/containers/plain/wait").decode(ExitInfo.self).exitCode == 0)
        #expect(try await client.send("POST", "/v1/containers/plain/commit", json: Commit(name: "plain-made")).status == 201)
        let plainMade = try #require(try await client.send("GET", "/v1/images/plain-made").decode(ImageRecord.self).pulled)
        #expect(plainMade.cmd == ["ls", "/"] && plainMade.entrypoint.isEmpty && plainMade.env == ["PATH=/bin"] && plainMade.labels == ["from": "image"],
                "\(plainMade)")
    }
}
