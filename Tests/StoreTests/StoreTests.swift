import Foundation
import Store
import Synchronization
import TestSupport
import Testing

/// The SQLite store on its own: WAL mode, round trips, all-or-nothing writes, lease expiry.
@Suite struct StoreTests {
    func sampleChanges() -> StateChanges {
        var changes = StateChanges()
        changes.hosts = [HostRow(name: "host-1", position: 0, cpuCores: 4, cpuMHzPerCore: 2000, simulated: false, healthy: true)]
        changes.nodes = [NUMANodeRow(host: "host-1", node: 0, memoryKiB: 1 << 20, cpus: "0,1,2,3")]
        changes.images = [ImageRow(name: "nginx", position: 0, parentMemoryKiB: 65536, growthPerChildKiB: 256, cpuMHzPerChild: 100)]
        changes.pools = [PoolRow(name: "prod", parent: "root", position: 1, memoryReservationKiB: 1024, cpuReservationMHz: 0,
                                 memoryLimitKiB: nil, cpuLimitMHz: 4000, shares: 1000, expandable: true, policy: "spread")]
        changes.warmParents = [WarmParentRow(host: "host-1", image: "nginx", node: 0, memoryKiB: 65536, pool: "prod", position: 0)]
        changes.placements = [
            PlacementRow(id: 1, pool: "prod", image: "nginx", host: "host-1", node: 0, memoryKiB: 256, cpuMHz: 100, start: "warm", committed: true, leaseExpiresAt: nil),
            PlacementRow(id: 2, pool: "prod", image: "nginx", host: "host-1", node: 0, memoryKiB: 256, cpuMHz: 100, start: "warm", committed: false, leaseExpiresAt: 100),
        ]
        return changes
    }

    @Test func databaseRunsInWALModeAndRoundTrips() throws {
        let folder = try HostFacts.makeTemporaryFolder("store")
        defer { try? FileManager.default.removeItem(at: folder) }
        let changes = sampleChanges()
        do {
            let store = try StateStore(folder: folder)
            #expect(try store.journalMode() == "wal")
            try store.write(changes)
        }
        let reopened = try StateStore(folder: folder).snapshot()
        #expect(reopened.hosts == changes.hosts)
        #expect(reopened.nodes == changes.nodes)
        #expect(reopened.pools == changes.pools)
        #expect(reopened.warmParents == changes.warmParents)
        #expect(reopened.placements == changes.placements)
    }

    @Test func aFailingWriteLeavesNothingBehind() throws {
        let folder = try HostFacts.makeTemporaryFolder("store")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try StateStore(folder: folder)
        var changes = sampleChanges()
        // The placement names a host that is not in the database: the foreign key fails.
        changes.placements[0].host = "host-404"
        #expect(throws: (any Error).self) { try store.write(changes) }
        #expect(try store.snapshot() == StateSnapshot())
        #expect(try store.snapshot().nextPlacementID == 1)
    }

    @Test func oneProcessAtATimeOwnsAStateFolder() throws {
        let folder = try HostFacts.makeTemporaryFolder("store")
        defer { try? FileManager.default.removeItem(at: folder) }
        do {
            let first = try StateStore(folder: folder)
            #expect { try StateStore(folder: folder, lockWaitSeconds: 0.1) } throws: { error in
                "\(error)".contains("state folder \(folder.path) is in use by another vmfork process")
            }
            try first.write(sampleChanges())
        }
        #expect(try StateStore(folder: folder, lockWaitSeconds: 0.1).snapshot().hosts.count == 1)
    }

    /// A refused lock closes its own descriptor once: closed twice, its number could by then
    /// be another thread's file, closed under it (a CI run saw an io_uring ring's descriptor
    /// taken so). Another thread opens and checks descriptors while locks are refused.
    @Test func aRefusedLockClosesOnlyItsOwnDescriptor() throws {
        let folder = try HostFacts.makeTemporaryFolder("store")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try StateStore(folder: folder)
        let done = Atomic<Bool>(false)
        let lost = Atomic<Int>(0)
        let checker = Thread {
            while !done.load(ordering: .relaxed) {
                let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { continue }
                for _ in 0..<20 where fcntl(fd, F_GETFD) < 0 { lost.add(1, ordering: .relaxed) }
                if close(fd) != 0 { lost.add(1, ordering: .relaxed) }
            }
        }
        checker.start()
        for _ in 0..<3_000 {
            #expect(throws: (any Error).self) { _ = try StateStore(folder: folder, lockWaitSeconds: 0) }
        }
        done.store(true, ordering: .relaxed)
        withExtendedLifetime(first) {}
        #expect(lost.load(ordering: .relaxed) == 0, "descriptors of another thread were closed under it")
    }

    @Test func expiredReservationsAreDeletedAndCommittedOnesKept() throws {
        let folder = try HostFacts.makeTemporaryFolder("store")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try StateStore(folder: folder)
        try store.write(sampleChanges())
        #expect(try store.deleteExpiredReservations(now: 99).isEmpty)
        #expect(try store.deleteExpiredReservations(now: 100).map(\.id) == [2])
        #expect(try store.snapshot().placements.map(\.id) == [1])
        // Deleted ids are not handed out again.
        #expect(try store.snapshot().nextPlacementID == 3)
    }
}
