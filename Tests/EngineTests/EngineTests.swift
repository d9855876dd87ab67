import Engine
import Foundation
import GRDB
import Metrics
import Store
import TestSupport
import Testing

/// The engine in process, without the HTTP layer.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct EngineTests {
    /// Calls `body` with an engine on a temporary state folder that has the busybox image;
    /// both are removed afterwards (the body shuts the engine down).
    static func withBusyboxEngine(_ name: String, _ body: (Engine) async throws -> Void) async throws {
        let state = try HostFacts.makeTemporaryFolder(name)
        let root = try BusyboxRootfs.make()
        defer {
            try? FileManager.default.removeItem(at: state)
            try? FileManager.default.removeItem(at: root)
        }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance)
        _ = try await engine.addImage(ImageRecord(name: "busybox", rootfs: root.path, executable: "/bin/busybox"), by: "test")
        try await body(engine)
    }

    @Test func runsAContainerRecordsItsEventsAndShutsDownInOrder() async throws {
        try await Self.withBusyboxEngine("engine-state") { engine in
            let result = try await engine.runContainer(ContainerSpec(image: "busybox", arguments: ["echo", "in process"]), by: "test")
            #expect(result.stdout == "in process\n" && result.exitCode == 0)
            let sleeper = try await engine.createContainer(ContainerSpec(image: "busybox", arguments: ["sh", "-c", "while true; do :; done"]), by: "test")
            _ = try await engine.startContainer(sleeper.id, by: "test")
            await engine.shutdown(grace: .milliseconds(200))
            #expect(try engine.inspectContainer(sleeper.id).state == .exited)
            let types = try await engine.events().map(\.type)
            #expect(types.first == "daemon.start" && types.last == "daemon.stop")
            #expect(types.filter { $0 == "container.exit" }.count == 2)
            do {
                _ = try await engine.createContainer(ContainerSpec(image: "busybox"), by: "test")
                Issue.record("a shut-down engine forked")
            } catch let error as EngineError {
                #expect(error.kind == .unavailable)
            }
        }
    }

    @Test func theEventLogIsAppendOnly() throws {
        let state = try HostFacts.makeTemporaryFolder("engine-events")
        defer { try? FileManager.default.removeItem(at: state) }
        let store = try StateStore(folder: state)
        let event = try store.append(event: EventRow(time: 1, actor: "test", type: "x", subject: "", result: "ok"))
        #expect(event.id == 1)
        let database = try DatabaseQueue(path: store.path)
        #expect(throws: (any Error).self) { try database.write { db in try db.execute(sql: "UPDATE event SET result = 'forged'") } }
        #expect(throws: (any Error).self) { try database.write { db in try db.execute(sql: "DELETE FROM event") } }
        #expect(try store.events().map(\.result) == ["ok"])
    }

    /// A burst of runs far beyond what the host runs at once is queued (`Engine.makeSlots`):
    /// the runs take the VMs their predecessors give back instead of each building one.
    /// Before, every run of the burst took a VM at once, and all but the pool's few were built
    /// (a pool miss each, milliseconds of CPU).
    @Test func aBurstOfRunsReusesReturnedVMsInsteadOfBuildingThem() async throws {
        try await Self.withBusyboxEngine("engine-burst") { engine in
            let policy = try await engine.createParents(ParentPolicy(image: "busybox", readyVMs: 4), by: "test")
            for _ in 0..<200 where try await engine.parent(policy.id, withSharing: false).readyVMsNow < 4 {
                try await Task.sleep(for: .milliseconds(20))
            }
            let runs = 64
            let outputs = try await withThrowingTaskGroup(of: String.self) { group in
                for index in 0..<runs {
                    group.addTask {
                        try await engine.runContainer(ContainerSpec(image: "busybox", arguments: ["echo", "run \(index)"]), by: "test").stdout
                    }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(Set(outputs) == Set((0..<runs).map { "run \($0)\n" }))
            let misses = try await engine.parent(policy.id, withSharing: false).poolMisses
            #expect(misses < runs / 2, "\(misses) of \(runs) runs built their VM")
            await engine.shutdown(grace: .milliseconds(200))
        }
    }
}
