import API
import Engine
import Foundation
import TestSupport
import Testing

/// `vmfork serve --connection-threads` (issue #12): a Unix-socket connection served on a thread
/// of its own runs its `POST /v1/containers/run` there, fork to exit, with no hand-off to a
/// container thread and back; a run that takes long holds up no other connection; connections
/// beyond the threads share the event loops and their runs go to container threads.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct ConnectionThreadsTests {
    static func runBody(_ arguments: [String]) -> String {
        let quoted = arguments.map { "\"\($0)\"" }.joined(separator: ",")
        return #"{"image":"busybox","arguments":[\#(quoted)]}"#
    }

    /// `vmfork_runs_on_callers_thread_total` now.
    static func runsOnCallersThread(_ client: AgentClient) throws -> Double { try client.metric("vmfork_runs_on_callers_thread_total") }

    /// A run of `arguments` on `connection` (kept), read to its answer.
    static func run(on connection: HeldConnection, _ arguments: [String]) throws -> RunResult {
        try connection.sendRequest("POST", "/v1/containers/run", body: runBody(arguments))
        let head = try connection.readHead()
        let body = try connection.readBody(head)
        guard head.status == 200 else { throw HeldConnection.Failure(description: "run: \(head.status) \(String(decoding: body, as: UTF8.self))") }
        return try JSONDecoder().decode(RunResult.self, from: body)
    }

    /// A run of `arguments` on a connection of its own, closed after.
    static func run(_ daemon: DaemonFixture, _ arguments: [String]) throws -> RunResult {
        let connection = HeldConnection(fd: try daemon.client.openConnection())
        defer { connection.close() }
        return try run(on: connection, arguments)
    }

    /// Whether `fd` has bytes to read now (or has ended).
    static func readable(_ fd: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0
    }

    @Test func aRunOnItsConnectionsThreadHoldsUpNoOtherConnection() throws {
        let daemon = try DaemonFixture()
        // Threads for the listing client's kept connection, the sleeper and the echo (the
        // default is as many as the cores).
        try daemon.start(extra: ["--connection-threads", "8"])
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        #expect(try Self.runsOnCallersThread(client) == 0)

        // A: a run that sleeps, on its connection's own thread.
        let sleeper = HeldConnection(fd: try client.openConnection(), timeout: 30)
        defer { sleeper.close() }
        try sleeper.sendRequest("POST", "/v1/containers/run", body: Self.runBody(["sleep", "3"]))
        // Other connections are served meanwhile: the list shows it running...
        var running = false
        for _ in 0..<500 where !running {
            let listed = try client.send("GET", "/v1/containers").decode([ContainerInfo].self)
            running = listed.contains { $0.state == .running && $0.arguments == ["sleep", "3"] }
            if !running { usleep(10_000) }
        }
        #expect(running, "the sleeping run is listed as running while its connection's thread runs it")
        // ...and a whole run on another connection begins and ends while A's goes on.
        let echo = try Self.run(daemon, ["echo", "beside"])
        #expect(echo.stdout == "beside\n" && echo.exitCode == 0)
        #expect(!Self.readable(sleeper.fd), "the sleeping run has not been answered yet")

        let head = try sleeper.readHead()
        let result = try JSONDecoder().decode(RunResult.self, from: try sleeper.readBody(head))
        #expect(head.status == 200 && result.exitCode == 0, "\(result)")
        // Both runs went fork to exit on their connections' threads.
        #expect(try Self.runsOnCallersThread(client) == 2)
        #expect(try client.send("GET", "/v1/containers").decode([ContainerInfo].self).isEmpty, "both runs removed their containers")
    }

    @Test func connectionsBeyondTheThreadsShareTheLoopsAndAClosedConnectionsThreadServesTheNext() throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--connection-threads", "1"])
        defer { daemon.stop() }
        try daemon.addBusybox(AgentClient(socketPath: daemon.socketPath))
        // Each look at the metrics on a connection of its own, closed after.
        func counted() throws -> Double { try Self.runsOnCallersThread(AgentClient(socketPath: daemon.socketPath)) }
        // A kept connection that holds the one thread: its run counts as on its own thread.
        // (A connection closed just before may still hold it for a moment: try again.)
        var holder: HeldConnection?
        for _ in 0..<100 where holder == nil {
            let connection = HeldConnection(fd: try daemon.client.openConnection())
            let before = try counted()
            #expect(try Self.run(on: connection, ["echo", "holder"]).stdout == "holder\n")
            if try counted() == before + 1 { holder = connection } else { connection.close(); usleep(20_000) }
        }
        let held = try #require(holder, "a connection got the one thread")
        let before = try counted()

        // Beyond the one thread: runs on the shared loops go to container threads.
        for index in 0..<3 {
            let result = try Self.run(daemon, ["echo", "shared \(index)"])
            #expect(result.stdout == "shared \(index)\n")
        }
        #expect(try counted() == before, "runs on shared loops are handed to container threads")
        // The holder's next run is on its thread again.
        #expect(try Self.run(on: held, ["echo", "again"]).stdout == "again\n")
        #expect(try counted() == before + 1)

        // A connection that closes gives its thread back: a new connection's run goes on it.
        held.close()
        var onOwnThread = false
        for _ in 0..<100 where !onOwnThread {
            let before = try counted()
            _ = try Self.run(daemon, ["echo", "next"])
            onOwnThread = try counted() == before + 1
            if !onOwnThread { usleep(20_000) }
        }
        #expect(onOwnThread, "a run on a connection that found the thread free ran on it")
    }

    /// A load runner opens its connections before its first launch (`AgentClient.openAhead`):
    /// they are kept, no request opens another, and the first opened (the one the daemon gave
    /// a thread of its own) is the first taken.
    @Test func connectionsOpenedAheadAreKeptAndTakenFirstOpenedFirst() throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--connection-threads", "1"])
        defer { daemon.stop() }
        try daemon.addBusybox(AgentClient(socketPath: daemon.socketPath))
        func counted() throws -> Double { try Self.runsOnCallersThread(AgentClient(socketPath: daemon.socketPath)) }
        let body = Data(Self.runBody(["echo", "ahead"]).utf8)
        // (A connection closed just before may still hold the one thread for a moment: try again.)
        var onOwnThread = false
        for _ in 0..<100 where !onOwnThread {
            let ahead = AgentClient(socketPath: daemon.socketPath)
            try ahead.openAhead(4)
            #expect(ahead.idleConnections == 4)
            try ahead.openAhead(2)
            #expect(ahead.idleConnections == 4, "as many as asked are kept already")
            let before = try counted()
            for _ in 0..<3 {
                let response = try ahead.send("POST", "/v1/containers/run", body: body)
                #expect(response.status == 200 && (try? response.decode(RunResult.self))?.stdout == "ahead\n")
            }
            #expect(ahead.idleConnections == 4, "the requests took kept connections and opened none")
            onOwnThread = try counted() == before + 3
            if !onOwnThread { usleep(20_000) }
        }
        #expect(onOwnThread, "the runs went on the first opened connection, the one with a thread of its own")
    }

    @Test func zeroThreadsSharesEveryConnection() throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--connection-threads", "0"])
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        for _ in 0..<3 { #expect(try Self.run(daemon, ["echo", "hi"]).stdout == "hi\n") }
        #expect(try Self.runsOnCallersThread(client) == 0)
        let refused = try HostFacts.run(DaemonFixture.binary, ["serve", "--state", daemon.state.path + "-other", "--connection-threads=-1"])
        #expect(refused.status != 0 && refused.stderr.contains("--connection-threads -1"), "\(refused.stderr)")
    }
}
