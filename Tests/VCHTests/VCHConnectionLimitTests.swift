import API
import Foundation
import TestSupport
import Testing

/// `vmfork vch serve --max-connections` (issue #12): the docker CLI's side of the limit.
@Suite(.serialized, .enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable && VCHFixture.dockerAvailable, "needs /dev/kvm, busybox-static and the docker CLI"))
struct VCHConnectionLimitTests {
    static let limit = 4

    /// A connection the VCH has admitted (`HeldConnection.admitted`), kept open.
    static func hold(_ socket: String, _ path: String) throws -> HeldConnection {
        try hold(AgentClient(socketPath: socket), path)
    }

    static func hold(_ endpoint: AgentClient, _ path: String, headers: [String] = []) throws -> HeldConnection {
        try HeldConnection.admitted(open: { try endpoint.openConnection() }) { try $0.sendRequest("GET", path, headers: headers) }
    }

    @Test func connectionsOverTheLimitGet429InDockersShapeChangeNothingAndTheLimitFreesAsTheyClose() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev", extra: ["--max-connections", "\(Self.limit)"])
        let message = "over \(Self.limit) connections open at once (vmfork vch serve --max-connections \(Self.limit)); close one and retry"
        // Two followers of the event stream and two idle kept-alive connections.
        var held = try (0..<Self.limit).map { try Self.hold(socket, $0 % 2 == 0 ? "/v1.43/events" : "/_ping") }

        // One more, raw: a container create, refused in Docker's error shape, then closed.
        let create = HeldConnection(fd: try AgentClient(socketPath: socket).openConnection())
        try create.sendRequest("POST", "/v1.43/containers/create?name=over", body: #"{"Image":"busybox","Cmd":["true"]}"#)
        let head = try create.readHead()
        #expect(head.status == 429)
        #expect(head.headers["content-type"] == "application/json")
        #expect(head.headers["connection"]?.lowercased() == "close")
        let body = try create.readBody(head)
        let error = try JSONSerialization.jsonObject(with: body) as? [String: String]
        #expect(error == ["message": message], "\(String(decoding: body, as: UTF8.self))")
        #expect(try create.readToEnd().isEmpty, "the VCH closes the connection after the refusal")
        // The docker CLI says why.
        let refused = try fixture.docker(socket, ["run", "--rm", "--name", "over-cli", "busybox", "true"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains(message), "\(refused.stderr)")

        // They close: served again, and neither refused create made a container.
        for connection in held { connection.close() }
        held.removeAll()
        var listed = try fixture.docker(socket, ["ps", "-a", "--format", "{{.Names}}"])
        let deadline = Date().addingTimeInterval(10)
        while listed.status != 0, Date() < deadline {
            usleep(50_000)
            listed = try fixture.docker(socket, ["ps", "-a", "--format", "{{.Names}}"])
        }
        #expect(listed.status == 0 && listed.stdout.isEmpty, "\(listed)")
        let containers = try fixture.agent.send("GET", "/v1/containers")
        let list = try JSONSerialization.jsonObject(with: containers.body) as? [Any]
        #expect(containers.status == 200 && list?.isEmpty == true, "the agent holds no container: \(containers.text)")
        let run = try fixture.docker(socket, ["run", "--rm", "busybox", "echo", "served"])
        #expect(run.status == 0 && run.stdout == "served\n", "\(run)")
    }

    /// On TCP a client that leaves an event stream sends a FIN (the VCH allows half-closure
    /// for attaches): the stream, which writes only when an event comes, is closed then, so
    /// its place under the limit is free again at once.
    @Test func eventFollowersThatLeaveOverTCPFreeTheirPlaces() throws {
        let fixture = try VCHFixture()
        let (port, token) = try fixture.startTCPVCH("dev", pool: "dev", extra: ["--max-connections", "\(Self.limit)"])
        let endpoint = AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: nil))
        let bearer = ["Authorization: Bearer \(token)"]
        for round in 0..<2 {
            // Events of a container that does not exist: the streams never write after their head.
            let held = try (0..<Self.limit).map { _ in try Self.hold(endpoint, #"/v1.43/events?filters={"container":["nosuch"]}"#, headers: bearer) }
            let over = HeldConnection(fd: try endpoint.openConnection())
            try over.sendRequest("GET", "/_ping", headers: bearer)
            #expect(try over.readHead().status == 429, "round \(round): a fifth connection is refused")
            for connection in held { connection.close() }
        }
    }

    /// Each `docker events` (and `logs -f`) through a VCH holds a follow on the agent too: when
    /// its client leaves, the VCH ends that follow at once, so that clients coming and going
    /// do not use up the agent's connections (here 10) while no event comes.
    @Test func followersThatLeaveAVCHFreeTheirAgentConnections() throws {
        let fixture = try VCHFixture(agentExtra: ["--max-connections", "10"])
        let socket = try fixture.startVCH("dev", pool: "dev")
        for round in 0..<4 {
            let held = try (0..<4).map { _ in try Self.hold(socket, #"/v1.43/events?filters={"container":["nosuch"]}"#) }
            for connection in held { connection.close() }
            // Their agent follows close soon after: the agent serves its socket again.
            try fixture.waitUntil("round \(round): the agent serves again", timeout: 5) {
                (try? AgentClient(socketPath: fixture.state.appendingPathComponent(AgentDaemon.socketName).path).send("GET", "/v1/version"))?.status == 200
            }
        }
        let listed = try fixture.docker(socket, ["ps", "-a"])
        #expect(listed.status == 0, "\(listed)")
    }
}
