import API
import Engine
import Foundation
import TestSupport
import Testing

/// The agent's own VCHs (`/v1/vchs`): a real daemon (`vmfork serve`, which runs its VCHs in
/// process) on a temporary state folder, the VCH's Docker endpoint asked over its socket.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct VCHRegistryTests {
    private func post(_ client: AgentClient, _ path: String, _ body: [String: Any]) throws -> AgentClient.Response {
        try client.send("POST", path, body: try JSONSerialization.data(withJSONObject: body))
    }

    private func field(_ response: AgentClient.Response) -> String? {
        (try? JSONSerialization.jsonObject(with: response.body) as? [String: Any])?["field"] as? String
    }

    @Test func createRefusesBadInputByFieldThenServesDockerAndComesBackAfterARestart() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        #expect(try post(client, "/v1/placement/pools", ["name": "dev"]).status == 201)

        // Each refusal names its field, and nothing is recorded.
        for (body, expected) in [(["name": "bad name", "pool": "dev"], "name"), (["name": "", "pool": "dev"], "name"),
                                 (["name": "ok", "pool": "nosuch"], "pool"), (["name": "ok", "pool": "dev", "listen": "tcp://0.0.0.0:80"], "listen"),
                                 (["name": "ok", "pool": "dev", "listen": "tcp://127.0.0.1:80"], "listen")] {
            let refused = try post(client, "/v1/vchs", body)
            #expect(refused.status == 400 && field(refused) == expected, "\(body): \(refused.status) \(refused.text)")
        }
        #expect(try client.send("GET", "/v1/vchs").decode([VCHInfo].self).isEmpty)

        let created = try post(client, "/v1/vchs", ["name": "ok", "pool": "dev"])
        #expect(created.status == 201, "\(created.text)")
        let info = try created.decode(VCHInfo.self)
        let socket = daemon.state.appendingPathComponent("vch/ok.sock").path
        #expect(info.dockerHost == "unix://" + socket && info.dockerCommand == "docker -H unix://\(socket) ps" && info.state == "running")
        var mode = stat()
        #expect(stat(socket, &mode) == 0 && mode.st_mode & 0o777 == 0o600)
        #expect(try AgentClient(socketPath: socket).send("GET", "/_ping").status == 200)
        let again = try post(client, "/v1/vchs", ["name": "ok", "pool": "dev"])
        #expect(again.status == 409 && field(again) == "name")
        #expect(FileManager.default.fileExists(atPath: daemon.state.appendingPathComponent(VCHRegistry.fileName).path))

        // A restart starts it again from the state folder.
        #expect(daemon.stop() == 0)
        try daemon.start()
        // The daemon starts its VCHs once its socket listens: "starting" until then.
        let deadline = Date().addingTimeInterval(20)
        var state = ""
        while Date() < deadline {
            state = try client.send("GET", "/v1/vchs/ok").decode(VCHInfo.self).state
            if state != "starting" { break }
            usleep(20_000)
        }
        #expect(state == "running")
        #expect(try AgentClient(socketPath: socket).send("GET", "/_ping").status == 200)
        let starts = try daemon.events(client, type: "vch.start")
        #expect(starts.count == 1 && (starts.first?["result"] as? String) == "ok")
    }

    @Test func aTCPVCHWantsItsToken() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        #expect(try post(client, "/v1/placement/pools", ["name": "dev"]).status == 201)
        let port = HostFacts.freeTCPPort()
        let created = try post(client, "/v1/vchs", ["name": "tcp", "pool": "dev", "listen": "tcp://127.0.0.1:\(port)"])
        #expect(created.status == 201, "\(created.text)")
        let info = try created.decode(VCHInfo.self)
        let tokenFile = try #require(info.tokenFile)
        #expect(info.dockerHost == "tcp://127.0.0.1:\(port)")
        var mode = stat()
        #expect(stat(tokenFile, &mode) == 0 && mode.st_mode & 0o777 == 0o600)
        let token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: nil)).send("GET", "/_ping").status == 401)
        #expect(try AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: token)).send("GET", "/_ping").status == 200)
        // The same address twice is refused by name.
        let twice = try post(client, "/v1/vchs", ["name": "tcp2", "pool": "dev", "listen": "tcp://127.0.0.1:\(port)"])
        #expect(twice.status == 409 && field(twice) == "listen")
    }

    @Test func deleteIsRefusedWhileTheVCHHasContainersUnlessForced() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        #expect(try post(client, "/v1/placement/pools", ["name": "dev"]).status == 201)
        #expect(try post(client, "/v1/vchs", ["name": "dev", "pool": "dev"]).status == 201)
        let container = try post(client, "/v1/containers", ["image": "busybox", "arguments": ["true"], "labels": ["vmfork.vch": "dev"]])
        #expect(container.status == 201, "\(container.text)")
        let id = try container.decode(ContainerInfo.self).id
        #expect(try client.send("GET", "/v1/vchs/dev").decode(VCHInfo.self).containers == 1)

        let refused = try client.send("DELETE", "/v1/vchs/dev")
        #expect(refused.status == 409 && refused.text.contains("1 container"), "\(refused.text)")
        #expect(try client.send("GET", "/v1/vchs/dev").status == 200)
        #expect(try client.send("DELETE", "/v1/vchs/dev?force=true").status == 204)
        #expect(try client.send("GET", "/v1/vchs/dev").status == 404)
        #expect(try client.send("GET", "/v1/containers/\(id)").status == 404)
        #expect(!FileManager.default.fileExists(atPath: daemon.state.appendingPathComponent("vch/dev.sock").path))
        let deletes = try daemon.events(client, type: "vch.delete")
        #expect(deletes.map { $0["result"] as? String } == ["VCH dev has 1 container(s); remove them first, or delete with force=true", "ok"])
    }

    @Test func theCommandLineCreatesListsAndDeletesTheAgentsVCHs() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        #expect(try post(daemon.client, "/v1/placement/pools", ["name": "dev"]).status == 201)
        func vmfork(_ arguments: String...) throws -> (status: Int32, stdout: String, stderr: String) {
            try HostFacts.run(DaemonFixture.binary, ["vch"] + arguments + ["--state", daemon.state.path])
        }
        let created = try vmfork("create", "cli", "--pool", "dev")
        let socket = daemon.state.appendingPathComponent("vch/cli.sock").path
        #expect(created.status == 0 && created.stdout == "docker -H unix://\(socket) ps\n", "\(created)")
        let refused = try vmfork("create", "cli", "--pool", "nosuch")
        #expect(refused.status != 0 && refused.stderr.contains("exists already"), "\(refused)")
        let listed = try vmfork("ls")
        #expect(listed.status == 0 && listed.stdout.contains("cli") && listed.stdout.contains("running"), "\(listed)")
        #expect(try vmfork("rm", "cli").status == 0)
        #expect(try daemon.client.send("GET", "/v1/vchs").decode([VCHInfo].self).isEmpty)
    }

    @Test func capacityWhatIfPlansAnotherLaunchRate() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        #expect(try post(client, "/v1/placement/hosts", ["name": "h1", "cpuCores": 2, "nodeMemoryKiB": [4_194_304]]).status == 201)
        #expect(try post(client, "/v1/placement/images", ["name": "tool", "parentMemoryKiB": 65536, "growthPerChildKiB": 1024, "cpuMHzPerChild": 10]).status == 201)
        #expect(try post(client, "/v1/placement/pools", ["name": "dev", "memoryReservationKiB": 102_400, "memoryLimitKiB": 102_400]).status == 201)

        let missing = try client.send("GET", "/v1/placement/capacity?whatIfRate=2")
        #expect(missing.status == 400 && field(missing) == "whatIfPool")
        #expect(try client.send("GET", "/v1/placement/capacity?whatIfPool=dev").status == 400)
        #expect(try client.send("GET", "/v1/placement/capacity?whatIfRate=2&whatIfPool=nosuch&whatIfImage=tool").status == 404)
        let planned = try client.send("GET", "/v1/placement/capacity?whatIfRate=2&whatIfPool=dev&whatIfImage=tool")
        #expect(planned.status == 200, "\(planned.text)")
        let pools = try #require((try JSONSerialization.jsonObject(with: planned.body) as? [String: Any])?["pools"] as? [[String: Any]])
        let runway = try #require(pools.first { $0["name"] as? String == "dev" }?["runway"] as? [String: Any])
        // 100 MiB free at 2 launches a second of 1 MiB each (no lifetime): full in about 50 s.
        let seconds = try #require(runway["secondsUntilFull"] as? Double)
        #expect((runway["launchesPerSecond"] as? Double) == 2 && seconds > 30 && seconds <= 50, "\(runway)")
    }
}
