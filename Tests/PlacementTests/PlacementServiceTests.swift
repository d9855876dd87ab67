import Foundation
import Store
import Synchronization
import TestSupport
import Testing
import WorkloadProfiles
@testable import Placement

/// The service over a real SQLite store: concurrency, restarts, crashes between reserve and
/// commit, and refused input that must not reach the database.
@Suite struct PlacementServiceTests {
    /// A clock the test moves by hand.
    final class TestClock: Sendable {
        let seconds = Mutex(1_000_000.0)
        func now() -> Double { seconds.withLock { $0 } }
        func advance(_ by: Double) { seconds.withLock { $0 += by } }
    }

    static let smallProfile = HostFacts.packageRoot.appendingPathComponent("Profiles/small.yaml").path

    func open(_ folder: URL, clock: TestClock) throws -> PlacementService {
        try PlacementService(store: try StateStore(folder: folder), leaseSeconds: 30, clock: { clock.now() })
    }

    /// A tight fleet so that many tasks run it out of room: 6 hosts of 2 GiB on 2 nodes.
    func tightPlan() -> FleetPlan {
        FleetPlan(profile: try! WorkloadProfile.parse("""
            version: 1
            name: tight
            fleet: {simulated: true, hostGroups: [{namePrefix: h-, count: 6, cpuCores: 4, memoryMiB: 2048, numaNodes: 2, warmImages: [web, db]}]}
            pools:
              - {name: prod, cpuReservationMHz: 8000, memoryReservationMiB: 4096, shares: 4000, expandableReservation: false}
              - {name: dev, cpuReservationMHz: 0, memoryReservationMiB: 1024, memoryLimitMiB: 3072, shares: 1000, expandableReservation: true}
              - {name: team, parent: dev, cpuReservationMHz: 0, memoryReservationMiB: 0, shares: 1000, expandableReservation: true, placement: pack}
            images:
              - {name: web, parentMemoryMiB: 64, growthPerChildKiB: 65536, cpuMHzPerChild: 250}
              - {name: db, parentMemoryMiB: 128, growthPerChildKiB: 131072, cpuMHzPerChild: 500, parentPool: prod}
            launchMix: {launchesPerSecond: 10, entries: [{image: web, pool: prod, weight: 1, command: [x]}]}
            """))
    }

    @Test func concurrentPlacementsNeverOversubscribe() async throws {
        let folder = try HostFacts.makeTemporaryFolder("placement")
        defer { try? FileManager.default.removeItem(at: folder) }
        let clock = TestClock()
        let service = try open(folder, clock: clock)
        try service.load(tightPlan())
        let initial = service.read { Fixture.fingerprint($0) }

        let granted = await withTaskGroup(of: [Placement].self) { group in
            for task in 0..<24 {
                group.addTask {
                    var generator = SplitMix64(seed: UInt64(task))
                    var mine: [Placement] = []
                    for _ in 0..<40 {
                        let pool = ["prod", "dev", "team"][Int(generator.next() % 3)]
                        let image = generator.next() % 2 == 0 ? "web" : "db"
                        if let placement = try? service.reserve(pool: pool, image: image) {
                            mine.append(generator.next() % 2 == 0 ? try! service.commit(placement.id) : placement)
                        }
                        if !mine.isEmpty, generator.next() % 4 == 0 {
                            try! service.release(mine.removeLast().id)
                        }
                    }
                    return mine
                }
            }
            var all: [Placement] = []
            for await placements in group { all += placements }
            return all
        }
        #expect(granted.count > 20, "the fleet should take a fair number of forks")
        service.read { core in
            #expect(core.audit().isEmpty, "\(core.audit())")
            #expect(Set(core.placements.map(\.id)) == Set(granted.map(\.id)))
            // Independently of the running totals: no node holds more than it has.
            for host in core.allHosts {
                for (n, node) in host.nodes.enumerated() {
                    let parents = core.warmParents.filter { $0.host == host.name && $0.node == n }.reduce(0) { $0 + $1.memoryKiB }
                    let forks = granted.filter { $0.host == host.name && $0.node == n }.reduce(0) { $0 + $1.charge.memoryKiB }
                    #expect(parents + forks <= node.memoryKiB, "\(host.name) node \(n) oversubscribed")
                }
                let cpu = granted.filter { $0.host == host.name }.reduce(0) { $0 + $1.charge.cpuMHz }
                #expect(cpu <= host.capacity.cpuMHz)
            }
            // prod is not expandable: never more than its reservation, and dev never above its limit.
            let prod = core.pools.held[core.pools.indexByName["prod"]!]
            #expect(prod.memoryKiB <= 4096 * 1024 && prod.cpuMHz <= 8000)
            #expect(core.pools.held[core.pools.indexByName["dev"]!].memoryKiB <= 3072 * 1024)
        }
        // The store holds the same placements, and releasing them all, concurrently, gives
        // back exactly what was charged.
        #expect(Set(try service.store.snapshot().placements.map(\.id)) == Set(granted.map(\.id)))
        await withTaskGroup(of: Void.self) { group in
            for placement in granted { group.addTask { try! service.release(placement.id) } }
        }
        #expect(service.read { Fixture.fingerprint($0) } == initial)
        #expect(try service.store.snapshot().placements.isEmpty)
    }

    @Test func restartKeepsEverything() throws {
        let folder = try HostFacts.makeTemporaryFolder("placement")
        defer { try? FileManager.default.removeItem(at: folder) }
        let clock = TestClock()
        let before: String
        do {
            let service = try open(folder, clock: clock)
            try service.load(FleetPlan(profile: try WorkloadProfile.load(path: Self.smallProfile)))
            try service.addPool(PoolSpec(name: "ci", parent: "test", reservation: Resources(memoryKiB: 1 << 20, cpuMHz: 1000), policy: .pack))
            try service.setGrowth(image: "busybox", growthPerChildKiB: 192)
            try service.setHealth(host: "host-3", healthy: false)
            for n in 0..<50 {
                let placement = try service.reserve(pool: ["prod", "dev", "ci"][n % 3], image: "busybox")
                if n % 5 != 0 { _ = try service.commit(placement.id) }
            }
            try service.release(7)
            try service.updatePool(PoolSpec(name: "dev", reservation: Resources(memoryKiB: 1 << 20, cpuMHz: 0), memoryLimitKiB: 1 << 28, shares: 500))
            before = service.read { Fixture.fingerprint($0) }
        }
        let reopened = try open(folder, clock: clock)
        #expect(reopened.read { Fixture.fingerprint($0) } == before)
        #expect(reopened.read { $0.audit() }.isEmpty)
        // Decisions after the restart continue where they left off.
        #expect(try reopened.reserve(pool: "prod", image: "busybox").id == 51)
    }

    @Test func crashBetweenReserveAndCommitLeaksNoCapacity() throws {
        let folder = try HostFacts.makeTemporaryFolder("placement")
        defer { try? FileManager.default.removeItem(at: folder) }
        let clock = TestClock()
        let empty: String
        let committedID: Int
        do {
            let service = try open(folder, clock: clock)
            try service.load(tightPlan())
            empty = service.read { Fixture.fingerprint($0) }
            committedID = try service.commit(try service.reserve(pool: "prod", image: "web").id).id
            for _ in 0..<5 { _ = try service.reserve(pool: "dev", image: "db") }
            // The process dies here: five reservations were never committed or released.
        }
        // Restarted within the lease: the reservations still hold their capacity...
        do {
            clock.advance(10)
            let early = try open(folder, clock: clock)
            #expect(early.read { $0.placements.count } == 6)
            #expect(try early.reclaimExpired() == 0)
            // ...until the lease runs out, when exactly what they were charged comes back.
            clock.advance(25)
            #expect(try early.reclaimExpired() == 5)
            #expect(early.read { $0.placements.map(\.id) } == [committedID])
            try early.release(committedID)
            #expect(early.read { Fixture.fingerprint($0) } == empty)
            _ = try early.reserve(pool: "dev", image: "db")
        }
        // Restarted after the lease ran out: nothing of the dead reservation is charged.
        clock.advance(31)
        let late = try open(folder, clock: clock)
        #expect(late.read { Fixture.fingerprint($0) } == empty)
        #expect(try late.store.snapshot().placements.isEmpty)
        // The dead reservations' ids are never handed out again.
        #expect(try late.reserve(pool: "dev", image: "db").id == 8)
    }

    @Test func placeAndCommitChargesAsReserveThenCommitInOneWrite() throws {
        let folder = try HostFacts.makeTemporaryFolder("placement")
        defer { try? FileManager.default.removeItem(at: folder) }
        let clock = TestClock()
        // The same fork placed both ways on two identical fleets charges the same.
        let twoStep = try open(try HostFacts.makeTemporaryFolder("placement-two-step"), clock: clock)
        defer { try? FileManager.default.removeItem(at: URL(fileURLWithPath: twoStep.store.path).deletingLastPathComponent()) }
        try twoStep.load(tightPlan())
        let before: String
        let placed: Placement
        do {
            let service = try open(folder, clock: clock)
            try service.load(tightPlan())
            before = service.read { Fixture.fingerprint($0) }
            placed = try service.placeAndCommit(pool: "dev", image: "db", memoryKiB: 200_000)
            let stepwise = try twoStep.commit(try twoStep.reserve(pool: "dev", image: "db", memoryKiB: 200_000).id)
            #expect(placed.row == stepwise.row)
            #expect(service.read { Fixture.fingerprint($0) } == twoStep.read { Fixture.fingerprint($0) })
            // A refusal leaves nothing behind, in memory or in the database.
            let after = service.read { Fixture.fingerprint($0) }
            #expect(throws: PlacementError.self) { try service.placeAndCommit(pool: "dev", image: "redis") }
            #expect(service.read { Fixture.fingerprint($0) } == after)
        }
        // Committed, it outlives its lease and a restart, and releases to where it started.
        clock.advance(3600)
        let reopened = try open(folder, clock: clock)
        #expect(try reopened.reclaimExpired() == 0)
        #expect(try reopened.store.snapshot().placements.map(\.id) == [placed.id])
        try reopened.release(placed.id)
        #expect(reopened.read { Fixture.fingerprint($0) } == before)
    }

    @Test func expiredReservationsMakeRoomForARefusedRequest() throws {
        let folder = try HostFacts.makeTemporaryFolder("placement")
        defer { try? FileManager.default.removeItem(at: folder) }
        let clock = TestClock()
        let service = try open(folder, clock: clock)
        try service.load(tightPlan())
        var count = 0
        while (try? service.reserve(pool: "prod", image: "db")) != nil { count += 1 }
        #expect(count > 0)
        #expect(throws: (any Error).self) { try service.reserve(pool: "prod", image: "db") }
        clock.advance(31)
        #expect(try service.reserve(pool: "prod", image: "db").start == .warm)
        #expect(service.read { $0.placements.count } == 1)
    }

    @Test func refusedChangesReachNeitherStateNorDatabase() throws {
        let folder = try HostFacts.makeTemporaryFolder("placement")
        defer { try? FileManager.default.removeItem(at: folder) }
        let service = try open(folder, clock: TestClock())
        try service.load(tightPlan())
        let state = service.read { Fixture.fingerprint($0) }
        let rows = try service.store.snapshot()
        let attempts: [(String, () throws -> Void)] = [
            ("pool qa", { _ = try service.reserve(pool: "qa", image: "web") }),
            ("image redis", { _ = try service.reserve(pool: "prod", image: "redis") }),
            ("is negative", { try service.addPool(PoolSpec(name: "x", reservation: Resources(memoryKiB: 0, cpuMHz: -1))) }),
            ("is above its limit", { try service.addPool(PoolSpec(name: "x", reservation: Resources(memoryKiB: 10, cpuMHz: 0), memoryLimitKiB: 5)) }),
            ("pool cycle: dev -> team -> dev", { try service.updatePool(PoolSpec(name: "dev", parent: "team")) }),
            // The second warm parent is refused after the host was added: the host must go too.
            ("already exists", {
                try service.addHost(Fixture.host("h-new", gib: 1), warmParents: [
                    WarmParentSite(host: "h-new", image: "web", node: 0, memoryKiB: 1024),
                    WarmParentSite(host: "h-new", image: "web", node: 0, memoryKiB: 1024),
                ])
            }),
            ("pool dev already exists", { try service.load(FleetPlan(profile: try WorkloadProfile.load(path: Self.smallProfile))) }),
        ]
        for (message, attempt) in attempts {
            do {
                try attempt()
                Issue.record("expected \(message) to be refused")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
            #expect(service.read { Fixture.fingerprint($0) } == state, "\(message) changed the state")
            #expect(try service.store.snapshot() == rows, "\(message) changed the database")
        }
    }
}
