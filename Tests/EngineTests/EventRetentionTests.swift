@testable import Engine
import Foundation
import GRDB
import Logging
import Metrics
@testable import Store
import TestSupport
import Testing

/// The event log's retention: the oldest events leave the database only in recorded purges,
/// written to the archive first when there is one; any other delete is refused.
@Suite struct EventRetentionTests {
    static func events(_ count: Int, from start: Int = 0, time: (Int) -> Double = { 1_000 + Double($0) }) -> [EventRow] {
        (start..<start + count).map { EventRow(time: time($0), actor: "test", type: "container.create", subject: "c\($0)", result: "ok", detail: "{\"n\":\($0)}") }
    }

    static func append(_ events: [EventRow], to store: StateStore) throws {
        var writes = EngineWrites()
        writes.events = events
        try store.apply(writes)
    }

    @Test func eventsBeyondTheCapLeaveInRecordedPurgesArchivedFirst() throws {
        let state = try HostFacts.makeTemporaryFolder("event-retention")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        let written = Self.events(1_000)
        try Self.append(written, to: store)
        let archive = state.appendingPathComponent("archive", isDirectory: true)
        let retention = EventRetention(keptEvents: 300, maxAge: nil, archiveFolder: archive)

        let first = try #require(try store.purgeEvents(retention, now: 5_000, atMost: 400))
        #expect(first.firstID == 1 && first.throughID == 400 && first.count == 400 && first.reason == "count")
        let second = try #require(try store.purgeEvents(retention, now: 5_000, atMost: 400))
        #expect(second.firstID == 401 && second.throughID == 700 && second.count == 300)
        #expect(try store.purgeEvents(retention, now: 5_000, atMost: 400) == nil)

        #expect(try store.events(limit: 2_000).map(\.id) == (701...1_000).map { Int64($0) })
        #expect(try store.eventPurges() == [first, second])
        // The archives hold exactly the purged events, in order, as they were written.
        var archived: [EventRow] = []
        for purge in [first, second] {
            #expect(purge.archive == archive.appendingPathComponent("events-\(purge.firstID).jsonl").path)
            let lines = try String(contentsOfFile: purge.archive, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == purge.count)
            archived += try lines.map { try JSONDecoder().decode(EventRow.self, from: Data($0.utf8)) }
        }
        #expect(archived.map(\.id) == (1...700).map { Int64($0) })
        #expect(archived.map(\.subject) == written.prefix(700).map(\.subject))
        #expect(archived.map(\.detail) == written.prefix(700).map(\.detail))
        #expect(try FileManager.default.contentsOfDirectory(atPath: archive.path).sorted() == ["events-1.jsonl", "events-401.jsonl"])
    }

    /// A purge that died after writing its archive (or in the middle of writing it) left
    /// events in the database and a file behind: the next purge writes the same file again,
    /// whole, and every event ends up archived exactly once.
    @Test func aPurgeCutShortByACrashIsRedoneWhole() throws {
        let state = try HostFacts.makeTemporaryFolder("event-retention-crash")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        try Self.append(Self.events(200), to: store)
        let archive = state.appendingPathComponent("archive", isDirectory: true)
        // The crash: ids 1-50 archived, no purge recorded; and a half-written file of a later attempt.
        let early = try store.events(limit: 50)
        _ = try StateStore.archive(early, in: archive, firstID: 1)
        try Data("{\"half\":".utf8).write(to: archive.appendingPathComponent("events-1.jsonl.partial"))
        #expect(try store.eventPurges().isEmpty && store.events(limit: 500).count == 200)

        let purge = try #require(try store.purgeEvents(EventRetention(keptEvents: 80, maxAge: nil, archiveFolder: archive), now: 5_000))
        #expect(purge.firstID == 1 && purge.throughID == 120 && purge.count == 120)
        let lines = try String(contentsOfFile: purge.archive, encoding: .utf8).split(separator: "\n")
        let archived = try lines.map { try JSONDecoder().decode(EventRow.self, from: Data($0.utf8)) }
        #expect(archived.map(\.id) == (1...120).map { Int64($0) })
        #expect(try FileManager.default.contentsOfDirectory(atPath: archive.path) == ["events-1.jsonl"])
        #expect(try store.events(limit: 500).map(\.id) == (121...200).map { Int64($0) })
    }

    @Test func anyOtherDeleteOrChangeIsRefused() throws {
        let state = try HostFacts.makeTemporaryFolder("event-retention-refusals")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        try Self.append(Self.events(100), to: store)
        let database = try DatabaseQueue(path: store.path)
        func refused(_ sql: String) -> String? {
            do {
                try database.write { db in try db.execute(sql: sql) }
                return nil
            } catch let error as DatabaseError {
                return error.message
            } catch {
                return "\(error)"
            }
        }
        // Before any purge, no event may go.
        #expect(refused("DELETE FROM event WHERE id = 1")?.contains("only in a recorded purge") == true)
        let purge = try #require(try store.purgeEvents(EventRetention(keptEvents: 60, maxAge: nil), now: 5_000))
        #expect(purge.throughID == 40 && purge.archive == "")
        // After it, none above the purge either; nor changes, nor a purge moved back or undone.
        #expect(refused("DELETE FROM event WHERE id = 41")?.contains("only in a recorded purge") == true)
        #expect(refused("DELETE FROM event")?.contains("only in a recorded purge") == true)
        #expect(refused("UPDATE event SET result = 'forged' WHERE id = 90") != nil)
        #expect(refused("INSERT INTO eventPurge (throughID, firstID, count, firstTime, lastTime, archive, purgedAt, reason) VALUES (30, 1, 30, 0, 0, '', 0, 'count')")?
            .contains("only move forward") == true)
        #expect(refused("DELETE FROM eventPurge") != nil)
        #expect(refused("UPDATE eventPurge SET throughID = 99") != nil)
        #expect(try store.events(limit: 200).count == 60)
        #expect(try store.eventPurges() == [purge])
    }

    @Test func eventsOlderThanTheAgeLimitLeave() throws {
        let state = try HostFacts.makeTemporaryFolder("event-retention-age")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        // 100 events, one a second, the last at t = 10,099.
        try Self.append(Self.events(100, time: { 10_000 + Double($0) }), to: store)
        let purge = try #require(try store.purgeEvents(EventRetention(keptEvents: 1_000, maxAge: 30), now: 10_100))
        // Older than 30 s at 10,100: times below 10,070, ids 1-70.
        #expect(purge.throughID == 70 && purge.reason == "age" && purge.firstTime == 10_000 && purge.lastTime == 10_069)
        #expect(try store.events(limit: 200).map(\.time).min() == 10_070)
        #expect(try store.purgeEvents(EventRetention(keptEvents: 1_000, maxAge: 30), now: 10_100) == nil)
        #expect(try store.purgeEvents(.keepAll, now: 1e12) == nil)
    }

    /// A database made before retention (the v2 schema, its trigger refusing every delete)
    /// is upgraded when opened, its events kept, and purged like any other.
    @Test func aLogFromBeforeRetentionIsUpgradedAndPurged() throws {
        let state = try HostFacts.makeTemporaryFolder("event-retention-upgrade")
        defer { try? FileManager.default.removeItem(at: state) }
        do {
            let old = try DatabaseQueue(path: state.appendingPathComponent(StateStore.fileName).path)
            try StateStore.migrator.migrate(old, upTo: "v2: engine images, parent policies, containers, events")
            try old.write { db in try StateStore.append(Self.events(50), in: db) }
            #expect(throws: (any Error).self) { try old.write { db in try db.execute(sql: "DELETE FROM event WHERE id = 1") } }
        }
        let store = try StateStore(folder: state)
        #expect(try store.events(limit: 100).count == 50)
        let purge = try #require(try store.purgeEvents(EventRetention(keptEvents: 20, maxAge: nil), now: 5_000))
        #expect(purge.firstID == 1 && purge.throughID == 30)
        #expect(try store.events(limit: 100).map(\.id) == (31...50).map { Int64($0) })
    }

    /// The state writer's purge: the newest `keptEvents` stay, the rest are purged, and the
    /// purge is itself an event of the log (checks every `retentionCheckEvery` events are off:
    /// this test calls it).
    @Test func theWriterPurgesAndRecordsThePurgeAsAnEvent() throws {
        let state = try HostFacts.makeTemporaryFolder("event-retention-writer")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        let writer = StateWriter(store: store, logger: Logger(label: "test"), retention: EventRetention(keptEvents: 500, maxAge: nil),
                                 retentionCheckEvery: .max)
        for event in Self.events(1_100) { writer.event(event) }
        writer.flush()
        writer.applyRetentionNow()
        writer.flush()
        let left = try store.events(limit: 2_000)
        #expect(left.count == 501)
        #expect(left.dropLast().map(\.subject) == (600..<1_100).map { "c\($0)" })
        let recorded = try #require(left.last)
        #expect(recorded.type == "events.purge" && recorded.actor == "engine" && recorded.subject == "1-600")
        let detail = try JSONSerialization.jsonObject(with: Data(recorded.detail.utf8)) as? [String: Any]
        #expect(detail?["count"] as? Int == 600 && detail?["reason"] as? String == "count")
        #expect(try store.eventPurges().map(\.throughID) == [600])
    }

    /// Through the engine, on its own: once `StateWriter.retentionCheckEvery` events are
    /// written, the writer's thread purges what is beyond the cap.
    @Test func theEnginePurgesOnItsOwnAsItWrites() async throws {
        let state = try HostFacts.makeTemporaryFolder("event-retention-engine")
        defer { try? FileManager.default.removeItem(at: state) }
        var options = EngineOptions()
        options.eventRetention = EventRetention(keptEvents: 500, maxAge: nil)
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance, options: options)
        let count = StateWriter.retentionCheckEvery + 100
        for index in 0..<count { engine.record("test.event", subject: "e\(index)", actor: "test") }
        engine.writer.flush()
        // The writer's thread is SCHED_IDLE: waited for, however long a busy machine keeps it.
        let deadline = ContinuousClock.now + .seconds(120)
        while try engine.store.eventPurges().isEmpty && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let purges = try engine.store.eventPurges()
        #expect(!purges.isEmpty)
        let left = try await engine.events(limit: 20_000)
        let through = try #require(purges.last?.throughID)
        #expect(left.allSatisfy { ($0.id ?? 0) > through })
        // What stayed of the test's events is the newest ones, in order, at most the cap.
        let kept = left.filter { $0.type == "test.event" }.map(\.subject)
        #expect(kept.count <= 500 && kept.count >= 400)
        #expect(kept == (count - kept.count..<count).map { "e\($0)" })
        #expect(left.contains { $0.type == "events.purge" })
        await engine.shutdown(grace: .milliseconds(100))
    }
}
