import API
import Engine
import Foundation
import TestSupport
import Testing

/// A caller's connection handed to its worker (issue #16, `CallerConnections`): after a run
/// the worker answered on a connection, the daemon hands the connection over and the worker
/// reads its next requests itself, serving the runs it can and giving the rest back. Real
/// daemon, real workers, real KVM.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"), .serialized)
struct HandedOverConnectionTests {
    static let served = "vmfork_runs_on_handed_over_connections_total"
    static let handedOver = "vmfork_connections_handed_to_workers_total"

    static func counter(_ client: AgentClient, _ name: String) throws -> Int { Int(try client.metric(name)) }

    /// A daemon with one worker; a test that throws has the daemon's warnings with its failure.
    static func withWorker(_ body: (DaemonFixture, AgentClient) async throws -> Void) async throws {
        try await WorkerTests.withWorkers(1) { daemon, client in
            do { try await body(daemon, client) } catch {
                let workerLog = (try? String(contentsOf: daemon.state.appendingPathComponent("workers/0.log"), encoding: .utf8)) ?? ""
                let warnings = (daemon.daemonLog + workerLog).split(separator: "\n").filter { !$0.contains(" info ") && !$0.contains(" debug ") }
                Issue.record("the daemon's and worker's warnings: \(warnings.suffix(30).joined(separator: "\n"))")
                throw error
            }
        }
    }

    /// Runs `echo` on `connection` until the daemon has handed it to the worker (the first run
    /// of a new daemon's worker may outlast the worker's wait, and is then the daemon's to answer).
    static func handOver(_ connection: HeldConnection, _ client: AgentClient) throws {
        let before = try counter(client, handedOver)
        for index in 0..<20 {
            try connection.sendRequest("POST", "/v1/containers/run", body: AnswerHandOffTests.runBody(["echo", "warm \(index)"]))
            #expect(try AnswerHandOffTests.read(connection).1.stdout == "warm \(index)\n")
            if try Self.handedOver(client, atLeast: before + 1, within: 1) > before { return }
        }
        Issue.record("the connection was not handed over in 20 runs")
    }

    /// The number of connections handed to workers, once it is at least `count` (a connection
    /// goes after its answer, with a call to the worker; within 10 s).
    static func handedOver(_ client: AgentClient, atLeast count: Int, within seconds: Double = 10) throws -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        var now = try counter(client, handedOver)
        while now < count && Date() < deadline {
            usleep(10_000)
            now = try counter(client, handedOver)
        }
        return now
    }

    /// A request on a connection of the client's own, from this thread. These tests keep their
    /// thread from one request on a held connection to the next, never waiting as a task: under
    /// a loaded test run a task that waited got its thread back after more than the
    /// connection's 30 s idle timeout, and found it closed.
    static func call(_ client: AgentClient, _ method: String, _ path: String, body: Data? = nil) throws -> AgentClient.Response {
        try client.send(method, path, body: body)
    }

    /// Runs after the first on a kept connection are served by the worker: each answer whole
    /// and right, and by the time the caller has it, the daemon has the run recorded and
    /// removed (another connection finds it gone, its events there with the caller as actor).
    @Test func runsOnAHandedOverConnectionAreServedByTheWorkerAndRecordedByTheDaemon() async throws {
        try await Self.withWorker { daemon, client in
            let connection = HeldConnection(fd: try client.openConnection())
            defer { connection.close() }
            try Self.handOver(connection, client)
            let servedBefore = try Self.counter(client, Self.served)
            #expect(try Self.counter(client, Self.handedOver) == 1)
            var ids: [String] = []
            for index in 0..<10 {
                try connection.sendRequest("POST", "/v1/containers/run", body: AnswerHandOffTests.runBody(["sh", "-c", "echo out \(index); echo err >&2; exit \(index)"]))
                let (head, result) = try AnswerHandOffTests.read(connection)
                #expect(result.exitCode == index && result.stdout == "out \(index)\n" && result.stderr == "err\n", "\(result)")
                #expect(result.forkMicroseconds != nil && result.startedAt != nil && result.finishedAt != nil)
                #expect(head.headers["content-type"] == "application/json" && head.headers["date"] != nil && head.headers["server"] == "vmfork")
                // Another connection, at once: the run is recorded as gone.
                #expect(try Self.call(client, "GET", "/v1/containers/\(result.id)").status == 404)
                ids.append(result.id)
            }
            #expect(Set(ids).count == 10)
            #expect(try Self.counter(client, Self.served) - servedBefore == 10)
            // Every run's events, as for a run the daemon forked: made, started, ended, removed, by the caller.
            let events = try Self.call(client, "GET", "/v1/events?type=container.create,container.start,container.exit,container.remove&limit=10000")
            #expect(events.status == 200)
            let rows = try JSONSerialization.jsonObject(with: events.body) as? [[String: Any]] ?? []
            for (index, id) in ids.enumerated() {
                let mine = rows.filter { $0["subject"] as? String == id }
                let types = Set(mine.compactMap { $0["type"] as? String })
                #expect(types == ["container.create", "container.start", "container.exit", "container.remove"], "\(id): \(types)")
                let actors = Set(mine.filter { $0["type"] as? String != "container.exit" }.compactMap { $0["actor"] as? String })
                #expect(actors.count == 1 && actors.first?.hasPrefix("uid:") == true, "\(actors)")
                let exit = mine.first { $0["type"] as? String == "container.exit" }
                #expect((exit?["detail"] as? String)?.contains("\"exitCode\":\(index)") == true, "\(String(describing: exit))")
            }
            // The metrics count the runs' exits and forks as for the daemon's own.
            #expect(try Self.counter(client, "vmfork_forks_total") >= 11)
        }
    }

    /// What the worker does not serve goes back to the daemon with the bytes it read, and the
    /// daemon answers it as it would have: a body with a field given twice, a named run, a kept
    /// one, a malformed one (its error naming the field), a ping, pipelined ones, in order. The connection goes to the worker
    /// again after runs in a row.
    @Test func requestsTheWorkerDoesNotServeGoBackToTheDaemon() async throws {
        try await Self.withWorker { daemon, client in
            let connection = HeldConnection(fd: try client.openConnection())
            defer { connection.close() }
            try Self.handOver(connection, client)
            let servedBefore = try Self.counter(client, Self.served)

            // A field given twice: answered as the daemon answers it on a connection of its own.
            let twice = #"{"image":"busybox","image":"busybox","memoryMiB":32,"arguments":["echo","twice"]}"#
            try connection.sendRequest("POST", "/v1/containers/run", body: twice)
            let twiceHead = try connection.readHead()
            let twiceBody = try connection.readBody(twiceHead)
            // (Closed after its answer: not handed over itself.)
            let direct = HeldConnection(fd: try client.openConnection())
            defer { direct.close() }
            try direct.sendRequest("POST", "/v1/containers/run", headers: ["Connection: close"], body: twice)
            let directHead = try direct.readHead()
            let directBody = try direct.readBody(directHead)
            #expect(twiceHead.status == directHead.status,
                    "\(String(decoding: twiceBody, as: UTF8.self)) against \(String(decoding: directBody, as: UTF8.self))")
            #expect(try Self.counter(client, Self.served) == servedBefore)
            try connection.sendRequest("POST", "/v1/containers/run", body: AnswerHandOffTests.runBody(["echo", "named"], name: "given-back"))
            let (_, named) = try AnswerHandOffTests.read(connection)
            #expect(named.stdout == "named\n")
            try connection.sendRequest("POST", "/v1/containers/run", body: #"{"image":"busybox","memoryMiB":32,"arguments":["echo"],"colour":"red"}"#)
            let refused = try connection.readHead()
            let refusal = String(decoding: try connection.readBody(refused), as: UTF8.self)
            #expect(refused.status == 400 && refusal.contains("\"field\":\"colour\""), "\(refused.status) \(refusal)")
            try connection.sendRequest("POST", "/v1/containers/run?remove=false", body: AnswerHandOffTests.runBody(["echo", "kept"]))
            let (_, kept) = try AnswerHandOffTests.read(connection)
            #expect(kept.stdout == "kept\n")
            #expect(try Self.call(client, "GET", "/v1/containers/\(kept.id)").status == 200)
            // Pipelined: a run the worker serves, a ping it gives back, a run again.
            func raw(_ method: String, _ path: String, _ body: String = "") -> String {
                "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            }
            try connection.send(raw("POST", "/v1/containers/run", AnswerHandOffTests.runBody(["echo", "one"])) + raw("GET", "/v1/_ping")
                                + raw("POST", "/v1/containers/run", AnswerHandOffTests.runBody(["echo", "two"])))
            #expect(try AnswerHandOffTests.read(connection).1.stdout == "one\n")
            let ping = try connection.readHead()
            _ = try connection.readBody(ping)
            #expect(ping.status == 200)
            #expect(try AnswerHandOffTests.read(connection).1.stdout == "two\n")
            // Given back at the named run, the connection stayed the daemon's: it goes again only
            // after runs in a row answered by their worker.
            #expect(try Self.counter(client, Self.handedOver) == 1)
            #expect(try Self.counter(client, Self.served) == servedBefore)
            let inARow = 4  // AgentConnectionHandler.runsInARowToGoAgain
            var runs = 0
            while try Self.counter(client, Self.handedOver) < 2 && runs < 40 {
                try connection.sendRequest("POST", "/v1/containers/run", body: AnswerHandOffTests.runBody(["echo", "row \(runs)"]))
                #expect(try AnswerHandOffTests.read(connection).1.stdout == "row \(runs)\n")
                runs += 1
                // "two" above began the row.
                if runs < inARow - 1 { #expect(try Self.counter(client, Self.handedOver) == 1, "handed over after \(runs + 1) runs in a row") }
            }
            #expect(try Self.handedOver(client, atLeast: 2) == 2)
            try connection.sendRequest("POST", "/v1/containers/run", body: AnswerHandOffTests.runBody(["echo", "held"]))
            #expect(try AnswerHandOffTests.read(connection).1.stdout == "held\n")
            #expect(try Self.counter(client, Self.served) - servedBefore >= 1)
        }
    }

    /// A run on a handed-over connection that waits for its standard input is listed as running
    /// meanwhile, takes its input through the daemon (which reaches it in its worker), and then
    /// answers on its connection.
    @Test func aLongRunOnAHandedOverConnectionIsListedAndReachedThroughTheDaemon() async throws {
        try await Self.withWorker { daemon, client in
            let connection = HeldConnection(fd: try client.openConnection(), timeout: 30)
            defer { connection.close() }
            try Self.handOver(connection, client)
            let servedBefore = try Self.counter(client, Self.served)
            try connection.sendRequest("POST", "/v1/containers/run",
                                       body: #"{"image":"busybox","memoryMiB":32,"openStdin":true,"labels":{"run":"held-long"},"arguments":["sh","-c","read x; echo got $x"]}"#)
            var found: ContainerInfo?
            let deadline = Date().addingTimeInterval(10)
            while found == nil && Date() < deadline {
                let listed = try Self.call(client, "GET", "/v1/containers?label=run=held-long")
                #expect(listed.status == 200)
                found = try listed.decode([ContainerInfo].self).first { $0.state == .running }
                if found == nil { usleep(20_000) }
            }
            let running = try #require(found, "no list showed the run while it ran")
            #expect(try Self.counter(client, Self.served) - servedBefore == 1)
            #expect(try Self.call(client, "POST", "/v1/containers/\(running.id)/stdin?close=true", body: Data("through\n".utf8)).status == 204)
            let (_, result) = try AnswerHandOffTests.read(connection)
            #expect(result.id == running.id && result.stdout == "got through\n" && result.exitCode == 0, "\(result)")
            #expect(try Self.call(client, "GET", "/v1/containers/\(running.id)").status == 404)
        }
    }

    /// A worker killed while it holds a connection takes only that connection along (its
    /// caller reads the end); the daemon counts it out and serves new ones, through the
    /// restarted worker.
    @Test func aWorkerKilledWhileHoldingAConnectionEndsOnlyThatConnection() async throws {
        try await Self.withWorker { daemon, client in
            let connection = HeldConnection(fd: try client.openConnection(), timeout: 30)
            defer { connection.close() }
            try Self.handOver(connection, client)
            let pid = try #require(WorkerTests.workerPID(daemon, shard: 0))
            kill(pid, SIGKILL)
            #expect(try connection.readToEnd().isEmpty)
            // Served again once the worker is back (the daemon restarts it).
            var answered = false
            let deadline = Date().addingTimeInterval(30)
            while !answered && Date() < deadline {
                let again = HeldConnection(fd: try client.openConnection(), timeout: 30)
                defer { again.close() }
                try again.sendRequest("POST", "/v1/containers/run", body: AnswerHandOffTests.runBody(["echo", "again"]))
                let head = try again.readHead()
                let body = try again.readBody(head)
                answered = head.status == 200 && String(decoding: body, as: UTF8.self).contains("again")
                if !answered { usleep(100_000) }
            }
            #expect(answered)
        }
    }

    /// A connection a worker holds still counts against `--max-connections`, and stops counting
    /// once its caller closes it (the worker sees the end and tells the daemon).
    @Test func aHeldConnectionCountsAgainstTheLimitUntilItCloses() async throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--workers", "1", "--max-connections", "3"])
        defer {
            daemon.stop()
            WorkerTests.killWorkers(daemon, count: 1)
        }
        let client = daemon.client
        try daemon.addBusybox(client)
        func ping(_ connection: HeldConnection) throws -> Int {
            try connection.sendRequest("GET", "/v1/_ping")
            let head = try connection.readHead()
            _ = try connection.readBody(head)
            return head.status
        }
        // The client's own connection, the held one, and one more: the limit.
        let held = HeldConnection(fd: try client.openConnection())
        try Self.handOver(held, client)
        let third = HeldConnection(fd: try client.openConnection())
        defer { third.close() }
        #expect(try ping(third) == 200)
        let fourth = HeldConnection(fd: try client.openConnection())
        #expect(try ping(fourth) == 429)
        fourth.close()
        held.close()
        var admitted = false
        let deadline = Date().addingTimeInterval(10)
        while !admitted && Date() < deadline {
            let again = HeldConnection(fd: try client.openConnection())
            admitted = try ping(again) == 200
            again.close()
            if !admitted { usleep(20_000) }
        }
        #expect(admitted, "the held connection's place was not given back after it closed")
    }
}
