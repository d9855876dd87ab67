import API
import Engine
import Foundation
import Images
import TestSupport
import Testing

/// The daemon's image API as its clients use it: `AgentClient.pullImage` (POST /v1/images/pull,
/// the route the Docker-API front end calls), `vmfork image pull|ls|inspect|gc` on the command
/// line, and a container forked from what was pulled.
@Suite(.enabled(if: RegistryFixture.isAvailable && HostFacts.hasKVM, "needs docker-registry, skopeo, umoci and /dev/kvm"))
struct PullThroughDaemonTests {
    @Test func pullsThroughTheAgentClientAndTheCommandLineThenRuns() async throws {
        let registry = try RegistryFixture()
        let daemon = try await DaemonProcess("pull-daemon")
        defer { daemon.stop() }
        let client = daemon.client

        let image = try await client.pullImage(reference: registry.reference("latest"), name: "bb")
        #expect(image.name == "bb" && image.executable == "/bin/busybox" && image.pulled?.reference == registry.reference("latest"))
        let fetched = try await client.send("GET", "/v1/images/bb").decode(ImageRecord.self)
        #expect(fetched == image)
        let run = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "bb", arguments: ["echo", "hi"]))
        #expect(try run.decode(RunResult.self).stdout == "hi\n")
        // Refusals carry the daemon's message and status.
        await #expect(throws: AgentClient.ClientError.self) { _ = try await client.pullImage(reference: registry.reference("latest"), name: "bb") }
        let absent = try await client.send("POST", "/v1/images/pull", json: ["reference": registry.reference("absent")])
        #expect(absent.status == 404 && absent.errorMessage.contains("has no manifest"))
        let bad = try await client.send("POST", "/v1/images/pull", json: ["reference": "UPPER/x", "extra": "field"])
        #expect(bad.status == 400)

        // The command line: pull under another name, list, inspect, remove, collect.
        let cli = daemon.cli
        let pulled = try cli(["image", "pull", registry.reference("latest"), "--name", "bb-cli"])
        #expect(pulled.status == 0 && pulled.stdout.contains("as image bb-cli"), "\(pulled)")
        let list = try cli(["image", "ls"])
        #expect(list.stdout.contains("bb-cli") && list.stdout.contains(registry.reference("latest")))
        let inspect = try cli(["image", "inspect", "bb-cli"])
        #expect(inspect.stdout.contains("\"entrypoint\"") && inspect.stdout.contains("\"/bin/busybox\""))
        #expect(try cli(["image", "rm", "bb-cli"]).status == 0)
        #expect(try cli(["image", "rm", "bb"]).status == 0)
        let collected = try cli(["image", "gc"])
        #expect(collected.stdout.contains("removed 1 root folder(s) and 3 blob(s)"), "\(collected)")
    }
}
