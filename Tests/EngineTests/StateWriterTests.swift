@testable import Engine
import Foundation
import Store
import Testing
import TestSupport

/// The engine's background writer of container rows and events (`StateWriter`).
@Suite struct StateWriterTests {
    static func info(_ id: String, _ state: ContainerState) -> ContainerInfo {
        ContainerInfo(id: id, name: id, image: "busybox", state: state, exitCode: nil, exitReason: nil, arguments: ["echo"], environment: [],
                      hostname: id, memoryMiB: 64, forkPoint: .main, labels: [:], parent: "p", pool: nil, placementID: nil,
                      createdAt: 1, startedAt: nil, finishedAt: nil, forkMicroseconds: nil, reusedVM: nil, argv0: nil, entrypoint: nil,
                      cmd: nil, tty: nil)
    }

    /// A daemon's writer keeps events and rows; a worker's keeps rows only (the event log is
    /// the daemon's). A container made and removed in one batch leaves nothing; one made in an
    /// earlier batch is deleted.
    @Test(arguments: [true, false]) func rowsCoalesceAndEventsStayWithTheDaemon(keepsEvents: Bool) throws {
        let state = try HostFacts.makeTemporaryFolder("state-writer")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        let writer = StateWriter(store: store, logger: .init(label: "test"), keepsEvents: keepsEvents)
        writer.enqueue { writes in
            writes.containers.append(Self.info("kept", .created))
            writes.made.insert("kept")
            writes.containers.append(Self.info("removed-later", .created))
            writes.made.insert("removed-later")
        }
        writer.flush()
        writer.enqueue { writes in
            writes.containers.append(Self.info("brief", .created))
            writes.made.insert("brief")
            writes.containers.append(Self.info("brief", .exited))
            writes.events.append(EventRow(time: 2, actor: "engine", type: "container.exit", subject: "brief", result: "ok"))
            writes.deletedContainers += ["brief", "removed-later"]
        }
        writer.flush()
        #expect(try store.engineSnapshot().containers.map(\.id).sorted() == ["kept"])
        #expect(try store.events().map(\.type) == (keepsEvents ? ["container.exit"] : []))
    }
}

/// A run's container (made to be removed at its run's end) gets no row while it is young: a
/// batch that would cut its create from its removal holds it over.
@Suite struct StateWriterHoldTests {
    static func info(_ id: String, createdAt: TimeInterval) -> ContainerInfo {
        var info = StateWriterTests.info(id, .running)
        info.createdAt = createdAt
        return info
    }

    @Test func youngRunsAreHeldOldOnesAndRemovedOnesAreNot() {
        var writes = QueuedWrites()
        writes.containers = [Self.info("young", createdAt: 100), Self.info("old", createdAt: 99), Self.info("gone", createdAt: 100),
                             Self.info("kept", createdAt: 100)]
        writes.containers.append({ var later = Self.info("young", createdAt: 100); later.state = .exited; return later }())
        writes.made = ["young", "old", "gone", "kept"]
        writes.transient = ["young", "old", "gone"]
        writes.deletedContainers = ["gone"]
        let held = StateWriter.held(from: &writes, now: 100.05)
        #expect(held?.ids == ["young"])
        // Its latest state goes on.
        #expect(held?.containers.map(\.state) == [.exited])
        #expect(writes.containers.map(\.id).sorted() == ["gone", "kept", "old"])
        #expect(writes.made == ["old", "gone", "kept"])
        #expect(writes.transient == ["old", "gone"])
        var none = QueuedWrites()
        none.containers = [Self.info("plain", createdAt: 100)]
        none.made = ["plain"]
        #expect(StateWriter.held(from: &none, now: 100) == nil)
    }

    /// Through the writer: a run made in one batch and removed in a later one writes nothing;
    /// `flush` writes a young run at once (shutdown holds nothing back), and its removal
    /// afterwards deletes the row.
    @Test func aRunRemovedInALaterBatchLeavesNoRow() throws {
        let state = try HostFacts.makeTemporaryFolder("state-writer-hold")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        let writer = StateWriter(store: store, logger: .init(label: "test"))
        let now = Date().timeIntervalSince1970
        writer.enqueue { writes in
            writes.containers.append(Self.info("run", createdAt: now))
            writes.made.insert("run")
            writes.transient.insert("run")
        }
        // Past the gathering window: the batch drained (holding the run) before its removal.
        Thread.sleep(forTimeInterval: 0.02)
        #expect(try store.engineSnapshot().containers.isEmpty)
        writer.enqueue { $0.deletedContainers.append("run") }
        writer.flush()
        #expect(try store.engineSnapshot().containers.isEmpty)

        writer.enqueue { writes in
            writes.containers.append(Self.info("flushed", createdAt: now))
            writes.made.insert("flushed")
            writes.transient.insert("flushed")
        }
        writer.flush()
        #expect(try store.engineSnapshot().containers.map(\.id) == ["flushed"])
        writer.enqueue { $0.deletedContainers.append("flushed") }
        writer.flush()
        #expect(try store.engineSnapshot().containers.isEmpty)
    }
}

/// The writer's thread is SCHED_IDLE and may get no core for long on a saturated host: a
/// flush is written by its caller, and a backlog past `backlogLimit` by the thread queuing to it.
@Suite struct StateWriterStarvedTests {
    @Test func flushesAndBacklogsAreWrittenWhileTheWritersThreadIsHeld() async throws {
        let state = try HostFacts.makeTemporaryFolder("state-writer-starved")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        let writer = StateWriter(store: store, logger: .init(label: "test"))
        // The writer's own thread held (as by a host that gives it no core) until released.
        let held = DispatchSemaphore(value: 0), holding = DispatchSemaphore(value: 0)
        writer.onWritersThread { holding.signal(); held.wait() }
        holding.wait()
        defer { held.signal() }
        writer.event(EventRow(time: 1, actor: "test", type: "first", subject: "a", result: "ok"))
        await writer.flushAsync()
        #expect(try store.events().map(\.type) == ["first"])
        // A backlog beyond the limit is written by the thread that queues to it.
        for index in 0...StateWriter.backlogLimit {
            writer.event(EventRow(time: 2, actor: "test", type: "burst", subject: "\(index)", result: "ok"))
        }
        #expect(try store.events(limit: 100_000).count == StateWriter.backlogLimit + 2)
    }
}
