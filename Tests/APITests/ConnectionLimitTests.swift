import API
import Foundation
import Engine
import TestSupport
import Testing

/// `vmfork serve --max-connections` (issue #12): a real daemon with a limit of 8 connections on
/// each listener, held open by event followers and idle kept-alive connections.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct ConnectionLimitTests {
    static let limit = 8

    static func hold(_ open: () throws -> Int32, _ request: (HeldConnection) throws -> Void) throws -> HeldConnection {
        try HeldConnection.admitted(open: open, request: request)
    }

    /// Checks the answer to a connection over the limit: 429, the API's error body naming the
    /// limit, and the connection closed after it.
    static func expectRefusal(_ connection: HeldConnection, _ what: String) throws {
        let head = try connection.readHead()
        #expect(head.status == 429, "\(what): \(head.status)")
        #expect(head.headers["content-type"] == "application/json", "\(what)")
        #expect(head.headers["connection"]?.lowercased() == "close", "\(what)")
        let body = try connection.readBody(head)
        let error = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any], "\(what): \(String(decoding: body, as: UTF8.self))")
        #expect(error["code"] as? String == "too_many_connections", "\(what)")
        let message = error["message"] as? String ?? ""
        #expect(message.contains("over \(limit) connections open at once") && message.contains("--max-connections \(limit)"), "\(what): \(message)")
        #expect(try connection.readToEnd().isEmpty, "\(what): the daemon closes the connection after the refusal")
    }

    @Test func connectionsOverTheLimitGet429NamingItChangeNothingAndTheLimitFreesAsTheyClose() throws {
        let daemon = try DaemonFixture(tcp: true)
        try daemon.start(extra: ["--max-connections", "\(Self.limit)"])
        defer { daemon.stop() }
        let port = try #require(daemon.tcpPort)
        let token = try #require(try TokenFile.load(path: daemon.state.appendingPathComponent(TokenFile.fileName).path).tokens.first).value
        let unix = AgentClient(socketPath: daemon.socketPath)
        let tcp = AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: token))
        // The state as the refused requests must leave it; each look on a connection of its own, closed after it.
        func snapshot() throws -> String {
            try ["/v1/images", "/v1/containers", "/v1/placement/pools", "/v1/events"].map { path in
                let connection = HeldConnection(fd: try unix.openConnection())
                try connection.sendRequest("GET", path, headers: ["Connection: close"])
                let head = try connection.readHead()
                return "\(head.status) \(String(decoding: try connection.readBody(head), as: UTF8.self))"
            }.joined(separator: "\n")
        }
        // (Outside #expect, which may keep the client and so its kept-alive connection.)
        do {
            let client = daemon.client
            try daemon.addBusybox(client)
            let pool = try client.send("POST", "/v1/placement/pools", body: Data(#"{"name":"before"}"#.utf8))
            #expect(pool.status == 201)
        }
        let before = try snapshot()

        // The Unix socket's 8: four followers of the event log, four idle kept-alive connections.
        var held: [HeldConnection] = []
        for index in 0..<Self.limit {
            held.append(try Self.hold({ try unix.openConnection() }) { connection in
                try connection.sendRequest("GET", index % 2 == 0 ? "/v1/events?follow=true" : "/v1/_ping")
            })
        }
        // The ninth and tenth: refused, a state change among them, which reaches no route.
        let ping = HeldConnection(fd: try unix.openConnection())
        try ping.sendRequest("GET", "/v1/_ping")
        try Self.expectRefusal(ping, "GET /v1/_ping over the limit")
        let create = HeldConnection(fd: try unix.openConnection())
        try create.sendRequest("POST", "/v1/placement/pools", body: #"{"name":"over"}"#)
        try Self.expectRefusal(create, "POST /v1/placement/pools over the limit")
        // The TCP listener counts its own connections: it still serves (on a connection closed after the answer).
        let version = HeldConnection(fd: try tcp.openConnection())
        try version.sendRequest("GET", "/v1/version", headers: ["Authorization: Bearer \(token)", "Connection: close"])
        #expect(try version.readHead().status == 200)
        #expect(!(try version.readToEnd().isEmpty))
        version.close()  // the server only half-closes after Connection: close; the connection counts until this

        // TCP's 8 (with the token): four followers of events that never come (so they never
        // write, and their clients' close is all the daemon hears), four idle. Then a ninth
        // without a token: the limit answers before the token is looked at, and records nothing.
        var heldTCP: [HeldConnection] = []
        for index in 0..<Self.limit {
            heldTCP.append(try Self.hold({ try tcp.openConnection() }) { connection in
                try connection.sendRequest("GET", index % 2 == 0 ? "/v1/events?follow=true&type=no.such" : "/v1/_ping",
                                           headers: ["Authorization: Bearer \(token)"])
            })
        }
        let anonymous = HeldConnection(fd: try tcp.openConnection())
        try anonymous.sendRequest("POST", "/v1/placement/pools", body: #"{"name":"over-tcp"}"#)
        try Self.expectRefusal(anonymous, "POST /v1/placement/pools over the TCP limit")
        // The Unix socket is still full: its followers are open.
        let stillFull = HeldConnection(fd: try unix.openConnection())
        try stillFull.sendRequest("GET", "/v1/version")
        try Self.expectRefusal(stillFull, "GET /v1/version with the followers still open")

        // They close (on TCP a FIN, all they were sent read): the listeners serve again.
        for connection in held + heldTCP { connection.close() }
        func servedAgain(_ client: AgentClient, _ path: String) -> Bool {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if (try? client.send("GET", path))?.status == 200 { return true }
                usleep(50_000)
            }
            return false
        }
        #expect(servedAgain(AgentClient(socketPath: daemon.socketPath), "/v1/version"), "the Unix socket serves again once its connections closed")
        #expect(servedAgain(AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: token)), "/v1/version"),
                "TCP serves again once its connections closed")
        #expect(try snapshot() == before, "the refused requests changed nothing, not even the event log")
        // All 8 can be held again on each (nothing stayed counted, the followers that never
        // wrote included), and a ninth is refused again.
        var again: [HeldConnection] = []
        for _ in 0..<Self.limit {
            again.append(try Self.hold({ try unix.openConnection() }) { try $0.sendRequest("GET", "/v1/_ping") })
            again.append(try Self.hold({ try tcp.openConnection() }) { try $0.sendRequest("GET", "/v1/_ping", headers: ["Authorization: Bearer \(token)"]) })
        }
        let ninth = HeldConnection(fd: try unix.openConnection())
        try ninth.sendRequest("GET", "/v1/_ping")
        try Self.expectRefusal(ninth, "GET /v1/_ping over the limit the second time")
        let ninthTCP = HeldConnection(fd: try tcp.openConnection())
        try ninthTCP.sendRequest("GET", "/v1/_ping", headers: ["Authorization: Bearer \(token)"])
        try Self.expectRefusal(ninthTCP, "GET /v1/_ping over the TCP limit the second time")
    }
}

extension ConnectionLimitTests {
    /// A wait whose client leaves gives its connection back at once, not when the container
    /// ends (here it never would): with a limit of 2, one idle connection and one wait fill the
    /// listener; the wait's client goes; a new connection is served again. On TCP (Hummingbird's
    /// server) and on the Unix socket (the agent's own).
    @Test(arguments: [false, true])
    func aWaitWhoseClientLeftGivesItsConnectionBack(overUnixSocket: Bool) throws {
        let daemon = try DaemonFixture(tcp: true)
        try daemon.start(extra: ["--max-connections", "2"])
        defer { daemon.stop() }
        let port = try #require(daemon.tcpPort)
        let token = try #require(try TokenFile.load(path: daemon.state.appendingPathComponent(TokenFile.fileName).path).tokens.first).value
        let listener = overUnixSocket ? AgentClient(socketPath: daemon.socketPath) : AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: token))
        let bearer = overUnixSocket ? [] : ["Authorization: Bearer \(token)"]
        do {
            let client = daemon.client
            try daemon.addBusybox(client)
            let spec = ContainerSpec(image: "busybox", name: "spin", arguments: ["sh", "-c", "while true; do :; done"])
            #expect(try client.send("POST", "/v1/containers", json: spec).status == 201)
            #expect(try client.send("POST", "/v1/containers/spin/start").status == 200)
        }
        let idle = try Self.hold({ try listener.openConnection() }) { try $0.sendRequest("GET", "/v1/_ping", headers: bearer) }
        // Admitted first (a ping answered on it): the set-up's connection, closed just before,
        // may still count for a moment on a loaded host, and a wait's request refused with 429
        // would leave one connection counted, not two.
        let wait = try Self.hold({ try listener.openConnection() }) { try $0.sendRequest("GET", "/v1/_ping", headers: bearer) }
        try wait.sendRequest("POST", "/v1/containers/spin/wait", headers: bearer)
        // A ping on a new connection, until it is answered with `status` or the deadline passes.
        let deadline = Date().addingTimeInterval(10)
        func pingUntil(_ status: Int, pause: useconds_t) throws -> Bool {
            while Date() < deadline {
                let probe = HeldConnection(fd: try listener.openConnection())
                try probe.sendRequest("GET", "/v1/_ping", headers: bearer + ["Connection: close"])
                let answered = try probe.readHead().status
                probe.close()
                if answered == status { return true }
                usleep(pause)
            }
            return false
        }
        // Both count: a third is refused (once the wait's request is in).
        #expect(try pingUntil(429, pause: 20_000), "the wait's connection did not count")
        // On TCP a close is a FIN, which the server's half-closure support would keep open. On a
        // Unix socket a close is seen as a hang-up, which NIO closes on by itself: a client that
        // shuts its sending side down is the case the server must notice.
        if overUnixSocket { shutdown(wait.fd, Int32(SHUT_WR)) } else { wait.close() }
        #expect(try pingUntil(200, pause: 50_000), "the wait whose client left still holds its connection")
        wait.close()
        idle.close()
        // The two connections just closed are given back as the daemon's event loops see the
        // closes: until then a new one may still be over the limit (429), so the kill is retried.
        let unix = AgentClient(socketPath: daemon.socketPath)
        var killed = try unix.send("POST", "/v1/containers/spin/kill?signal=9").status
        let killDeadline = Date().addingTimeInterval(10)
        while killed == 429, Date() < killDeadline {
            usleep(20_000)
            killed = try unix.send("POST", "/v1/containers/spin/kill?signal=9").status
        }
        #expect(killed == 200)
        guard killed == 200 else { return }
        #expect(try unix.send("POST", "/v1/containers/spin/wait").decode(ExitInfo.self).exitCode == 137)
    }
}

/// The option itself: shown in --help, out-of-range values refused before anything starts.
@Suite struct ConnectionLimitOptionTests {
    @Test func maxConnectionsIsDocumentedAndValidated() throws {
        let help = try HostFacts.run(DaemonFixture.binary, ["serve", "--help"])
        #expect(help.stdout.contains("--max-connections") && help.stdout.contains("429"), "\(help.stdout)")
        let state = try HostFacts.makeTemporaryFolder("max-connections")
        defer { try? FileManager.default.removeItem(at: state) }
        for value in ["0", "-1", "many"] {
            let refused = try HostFacts.run(DaemonFixture.binary, ["serve", "--state", state.path, "--max-connections", value])
            #expect(refused.status != 0, "--max-connections \(value)")
            #expect(refused.stderr.contains("--max-connections") || refused.stderr.contains("max-connections"), "\(value): \(refused.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: state.appendingPathComponent(AgentDaemon.socketName).path), "no daemon started")
    }
}
