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
