import API
import Engine
import Foundation
import TestSupport
import Testing

/// A run's answer written by its worker (issue #16, `RunAnswerHandOff`): in workers mode the
/// daemon passes the caller's connection to the worker with the create, and the worker writes
/// the HTTP answer there as the program ends, so that the daemon is not woken between the
/// program's end and the caller's answer. Real daemon, real workers, real KVM.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"), .serialized)
struct AnswerHandOffTests {
    static func runBody(_ arguments: [String], name: String? = nil) -> String {
        let quoted = arguments.map { "\"\($0)\"" }.joined(separator: ",")
        let named = name.map { #","name":"\#($0)""# } ?? ""
        return #"{"image":"busybox","memoryMiB":32,"arguments":[\#(quoted)]\#(named)}"#
    }

    /// A counter of the daemon's metrics now.
    static func counter(_ client: AgentClient, _ name: String) throws -> Int { Int(try client.metric(name)) }

    static func read(_ connection: HeldConnection) throws -> (HeldConnection.Head, RunResult) {
        let head = try connection.readHead()
        let body = try connection.readBody(head)
        guard head.status == 200 else { throw HeldConnection.Failure(description: "run: \(head.status) \(String(decoding: body, as: UTF8.self))") }
        return (head, try JSONDecoder().decode(RunResult.self, from: body))
    }

    /// Runs on one kept connection are answered by the worker, each whole and right, and the
    /// connection goes on with the daemon's own answers between them; a run whose connection
    /// closes after it, or that keeps its container, is answered by the daemon as before.
    @Test func aRunsAnswerIsWrittenByItsWorkerAndTheConnectionGoesOn() async throws {
        try await WorkerTests.withWorkers(1) { daemon, client in
            let answeredBefore = try Self.counter(client, "vmfork_runs_answered_by_workers_total")
            let connection = HeldConnection(fd: try client.openConnection())
            defer { connection.close() }
            var ids: Set<String> = []
            for index in 0..<10 {
                try connection.sendRequest("POST", "/v1/containers/run", body: Self.runBody(["echo", "handed \(index)"]))
                let (head, result) = try Self.read(connection)
                #expect(result.exitCode == 0 && result.stdout == "handed \(index)\n" && result.stderr.isEmpty, "\(result)")
                #expect(result.finishedAt != nil && result.startedAt != nil && result.forkMicroseconds != nil)
                #expect(head.headers["content-type"] == "application/json" && head.headers["date"] != nil && head.headers["connection"] == nil)
                ids.insert(result.id)
                // The daemon's own answer on the same connection, between two of the worker's.
                try connection.sendRequest("GET", "/v1/containers/\(result.id)")
                let gone = try connection.readHead()
                _ = try connection.readBody(gone)
                #expect(gone.status == 404)
            }
            #expect(ids.count == 10)
            // Each by the worker, but a run that outlived the worker's wait (10 ms; a loaded
            // test run, or the first child of a new parent) is the daemon's to answer.
            let answered = try Self.counter(client, "vmfork_runs_answered_by_workers_total") - answeredBefore
            #expect((1...10).contains(answered), "answered by the worker: \(answered)")

            // Kept (remove=false): the daemon answers; the container is there after.
            try connection.sendRequest("POST", "/v1/containers/run?remove=false", body: Self.runBody(["echo", "kept"]))
            let (_, kept) = try Self.read(connection)
            #expect(kept.stdout == "kept\n")
            #expect(try client.send("GET", "/v1/containers/\(kept.id)").status == 200)
            // Connection: close: the daemon answers, saying so, and closes.
            try connection.sendRequest("POST", "/v1/containers/run", headers: ["Connection: close"], body: Self.runBody(["echo", "last"]))
            let (lastHead, last) = try Self.read(connection)
            #expect(last.stdout == "last\n" && lastHead.headers["connection"] == "close")
            #expect(try connection.readToEnd().isEmpty)
            #expect(try Self.counter(client, "vmfork_runs_answered_by_workers_total") - answeredBefore == answered)
        }
    }

    /// Pipelined runs whose answers outgrow the socket's buffer while the client reads nothing:
    /// the worker writes what the connection takes, the daemon the rest, and every answer comes
    /// whole and in order once the client reads.
    @Test func pipelinedRunsWhoseAnswersOutgrowTheSocketComeWholeAndInOrder() async throws {
        try await WorkerTests.withWorkers(1) { daemon, client in
            let connection = HeldConnection(fd: try client.openConnection(), timeout: 60)
            defer { connection.close() }
            // The policy's parent made and its first child run, so that the runs below end
            // within the worker's wait and it answers them.
            try connection.sendRequest("POST", "/v1/containers/run", body: Self.runBody(["echo", "warm"]))
            _ = try Self.read(connection)
            let finishedBefore = try Self.counter(client, "vmfork_runs_answered_by_workers_finished_by_daemon_total")
            let answeredBefore = try Self.counter(client, "vmfork_runs_answered_by_workers_total")
            let servedBefore = try Self.counter(client, HandedOverConnectionTests.served)
            // 60,000 bytes in one write each (the shell's printf): 8 answers are more than a
            // Unix socket's buffer holds (212,992 bytes by default).
            let count = 8
            var requests = ""
            for index in 0..<count {
                let body = Self.runBody(["sh", "-c", "printf '%60000s' \(index)"])
                requests += "POST /v1/containers/run HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            }
            try connection.send(requests)
            // Until the runs stop going on (an answer waits for the client to read) or all are done.
            var (answered, finished, steadySince) = (0, 0, Date())
            let deadline = Date().addingTimeInterval(30)
            while answered < count && Date().timeIntervalSince(steadySince) < 0.5 && Date() < deadline {
                try await Task.sleep(for: .milliseconds(50))
                // Answered by the worker: with the daemon's hand-off, or on the connection the
                // worker holds after the first (`CallerConnections`).
                let now = try Self.counter(client, "vmfork_runs_answered_by_workers_total") - answeredBefore
                    + Self.counter(client, HandedOverConnectionTests.served) - servedBefore
                if now != answered { (answered, steadySince) = (now, Date()) }
            }
            for index in 0..<count {
                let (_, result) = try Self.read(connection)
                let expected = String(repeating: " ", count: 60_000 - String(index).count) + String(index)
                #expect(result.exitCode == 0 && result.stdout == expected, "\(index): \(result.stdout.count) bytes, exit \(result.exitCode)")
            }
            let handedOff = try Self.counter(client, "vmfork_runs_answered_by_workers_total") - answeredBefore
            let served = try Self.counter(client, HandedOverConnectionTests.served) - servedBefore
            finished = try Self.counter(client, "vmfork_runs_answered_by_workers_finished_by_daemon_total") - finishedBefore
            // The warm-up's worker holds the connection: it reads the runs and writes their
            // answers itself, waiting for room as the client reads. (A run it gives back, on a
            // loaded machine, is the daemon's: answered with a hand-off or by the daemon. When
            // all eight were answered with a hand-off, written without waiting for room, the one
            // that met the full buffer was finished by the daemon.)
            #expect(served + handedOff >= 1, "served on the held connection: \(served), handed off: \(handedOff)")
            #expect(handedOff < count || finished >= 1,
                    "served on the held connection: \(served), handed off: \(handedOff), finished by the daemon: \(finished)")
            // The connection goes on.
            try connection.sendRequest("GET", "/v1/_ping")
            #expect(try connection.readHead().status == 200)
        }
    }

    /// A run the worker cannot answer at its end (it runs past the worker's wait: `read -t` on
    /// an open standard input that never gets data) is answered by the daemon; a list on
    /// another connection meanwhile is not held up until its end: it shows the run running.
    @Test func aLongRunIsAnsweredByTheDaemonAndHoldsUpNoOtherRequest() async throws {
        try await WorkerTests.withWorkers(1) { daemon, client in
            let answeredBefore = try Self.counter(client, "vmfork_runs_answered_by_workers_total")
            let connection = HeldConnection(fd: try client.openConnection(), timeout: 30)
            defer { connection.close() }
            try connection.sendRequest("POST", "/v1/containers/run",
                                       body: #"{"image":"busybox","name":"held-long","memoryMiB":32,"openStdin":true,"arguments":["sh","-c","read -t 3 x; echo slow"]}"#)
            // Listed as running (it may take a moment to be created).
            var running = false
            let deadline = Date().addingTimeInterval(2.5)
            // From this thread (a task that waits may get a thread back only after the run's
            // end on a loaded test run).
            while !running && Date() < deadline {
                let listed = try HandedOverConnectionTests.call(client, "GET", "/v1/containers")
                #expect(listed.status == 200)
                running = try listed.decode([ContainerInfo].self).contains { $0.name == "held-long" && $0.state == .running }
                if !running { usleep(20_000) }
            }
            #expect(running, "no list showed the run while it ran")
            let (_, slow) = try Self.read(connection)
            #expect(slow.stdout == "slow\n" && slow.exitCode == 0, "\(slow)")
            #expect(try Self.counter(client, "vmfork_runs_answered_by_workers_total") == answeredBefore)
        }
    }
}
