import API
import Engine
import Foundation
import Synchronization
import Testing

/// `AgentClient.streamOnEventLoop`: a follow read by an event loop (a VCH's `docker logs -f`
/// and `docker events`), against the daemon: pieces as they come, a refusal's status and
/// body, and a cancel that ends a follow with nothing new at once.
@Suite(.serialized) struct StreamOnEventLoopTests {
    /// What one stream reported, in order.
    final class Heard: Sendable {
        private struct State {
            var status: Int?
            var pieces: [Data] = []
            var ended = false
            var error: String?
        }
        private let state = Mutex(State())
        func status(_ value: Int) { state.withLock { $0.status = value } }
        func piece(_ value: Data) { state.withLock { $0.pieces.append(value) } }
        func end(_ error: (any Error)?) { state.withLock { $0.ended = true; $0.error = error.map { "\($0)" } } }
        var status: Int? { state.withLock { $0.status } }
        var text: String { state.withLock { String(decoding: $0.pieces.reduce(Data(), +), as: UTF8.self) } }
        var pieceCount: Int { state.withLock { $0.pieces.count } }
        var ended: Bool { state.withLock { $0.ended } }
        var error: String? { state.withLock { $0.error } }

        func waitUntilEnded(seconds: Double) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while !ended, Date() < deadline { usleep(5_000) }
            return ended
        }
    }

    private func follow(_ client: AgentClient, _ path: String) -> (Heard, (@Sendable () -> Void)?) {
        let heard = Heard()
        let cancel = client.streamOnEventLoop("GET", path, onStatus: heard.status, onPiece: heard.piece, onEnd: heard.end)
        return (heard, cancel)
    }

    @Test func aFollowOfLogsGetsEachPieceAsItIsWrittenThenItsEnd() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        let script = "i=0; while [ $i -lt 6 ]; do echo line $i; j=0; while [ $j -lt 30000 ]; do j=$((j+1)); done; i=$((i+1)); done"
        #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "writer", arguments: ["sh", "-c", script])).status == 201)
        #expect(try client.send("POST", "/v1/containers/writer/start").status == 200)
        let (heard, cancel) = follow(client, "/v1/containers/writer/logs?follow=true")
        #expect(cancel != nil, "over the Unix socket the stream is read by an event loop")
        #expect(heard.waitUntilEnded(seconds: 30), "the follow ended with the container")
        #expect(heard.error == nil)
        #expect(heard.status == 200)
        #expect(heard.text == (0..<6).map { "line \($0)\n" }.joined())
        #expect(heard.pieceCount >= 2, "the lines came as they were written, not at the end")
    }

    /// An async request's `sent` comes once its request is on the daemon's socket, before the
    /// answer: a VCH answers `docker run -d --rm` only once its wait (and so the removal) is
    /// in the agent's hands.
    @Test func sentComesOnceTheRequestIsWrittenBeforeItsAnswer() async throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        #expect(try await client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "sleeper", arguments: ["sleep", "60"])).status == 201)
        #expect(try await client.send("POST", "/v1/containers/sleeper/start").status == 200)
        let sent = Atomic<Int>(0)
        let waiting = Task { try await client.send("POST", "/v1/containers/sleeper/wait?remove=true", sent: { sent.add(1, ordering: .relaxed) }) }
        var told = false
        for _ in 0..<500 where !told {
            told = sent.load(ordering: .relaxed) == 1
            if !told { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(told, "sent came while the wait went on")
        // The answer comes only once the container ends; the wait then removed it.
        #expect(try await client.send("POST", "/v1/containers/sleeper/kill?signal=9").status == 200)
        let answer = try await waiting.value
        #expect(answer.status == 200)
        #expect(sent.load(ordering: .relaxed) == 1, "once")
        #expect(try await client.send("GET", "/v1/containers/sleeper").status == 404)
    }

    @Test func aRefusalGivesItsStatusAndTheAgentsMessage() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let (heard, _) = follow(daemon.client, "/v1/containers/nobody/logs?follow=true")
        #expect(heard.waitUntilEnded(seconds: 10))
        #expect(heard.status == 404)
        #expect(heard.text.contains("unknown container nobody"), "body: \(heard.text)")
    }

    @Test func aCancelEndsAFollowThatHasNothingNew() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        // The log's events so far (the daemon's start) come at once, then nothing.
        let (heard, cancel) = follow(daemon.client, "/v1/events?follow=true")
        let deadline = Date().addingTimeInterval(10)
        while !heard.text.contains("daemon.start"), Date() < deadline { usleep(5_000) }
        #expect(heard.status == 200, "the follow is connected")
        #expect(heard.text.contains("daemon.start"), "the events so far: \(heard.text)")
        usleep(200_000)
        #expect(!heard.ended, "a follow with nothing new stays open")
        cancel?()
        #expect(heard.waitUntilEnded(seconds: 2), "cancelled, it ends at once")
        // The daemon still answers (the cancelled connection took nothing with it).
        #expect(try daemon.client.send("GET", "/v1/_ping").status == 200)
    }

    @Test func aDaemonThatIsNotThereEndsTheStreamWithAnError() throws {
        let client = AgentClient(socketPath: "/nonexistent/vmfork-\(UUID().uuidString).sock")
        let (heard, _) = follow(client, "/v1/events?follow=true")
        #expect(heard.waitUntilEnded(seconds: 5))
        #expect(heard.status == nil)
        #expect(heard.error?.contains("cannot reach the vmfork daemon") == true, "error: \(heard.error ?? "none")")
    }
}
