import Testing
@testable import Placement

/// vSphere's admission rules for the pool tree, through the fork charges that use them.
/// Forks of `big` cost 1 GiB, on a single 100 GiB host, so pool figures read in GiB.
@Suite struct AdmissionTests {
    let gib = Fixture.gib

    @Test func reservationIsTakenFromParentWhetherUsedOrNot() throws {
        var core = try Fixture.singleHost(gib: 100)
        try core.addPool(PoolSpec(name: "prod", reservation: Resources(memoryKiB: 60 * gib, cpuMHz: 0), expandable: false))
        // Nothing runs in prod, yet root already holds its 60 GiB (besides the warm parents).
        let parents = core.pools.held[0].memoryKiB - 60 * gib
        #expect(parents == 576 * 1024)
        try core.addPool(PoolSpec(name: "dev", reservation: Resources(memoryKiB: 10 * gib, cpuMHz: 0), expandable: true))
        #expect(core.pools.held[0].memoryKiB == 70 * gib + parents)
        // dev has its 10 GiB plus the root's 30 unreserved GiB, never prod's idle 60.
        let dev = Fixture.fill(&core, pool: "dev", upTo: 100)
        #expect(dev.admitted == 40)
        guard case .poolRefused(let refusal) = dev.refusal else { Issue.record("expected a pool refusal, got \(String(describing: dev.refusal))"); return }
        #expect(refusal.requestPool == "dev")
        #expect(refusal.refusingPool == "root")
        #expect(refusal.reason == .fleetFull)
        // prod still gets every GiB it reserved.
        #expect(Fixture.fill(&core, pool: "prod", upTo: 100).admitted == 60)
        #expect(core.audit().isEmpty, "\(core.audit())")
    }

    @Test func limitCapsEvenWhenCapacityIsFree() throws {
        var core = try Fixture.singleHost(gib: 100)
        try core.addPool(PoolSpec(name: "test", reservation: Resources(memoryKiB: 2 * gib, cpuMHz: 0), memoryLimitKiB: 5 * gib, expandable: true))
        let result = Fixture.fill(&core, pool: "test", upTo: 50)
        #expect(result.admitted == 5)
        #expect(result.refusal?.description == "pool test at its memory limit (needs 1 GiB, 0 KiB available)")
    }

    @Test func expandableBorrowsOnlyWhileAncestorsHaveUnreservedCapacity() throws {
        var core = try Fixture.singleHost(gib: 100)
        try core.addPool(PoolSpec(name: "vch", reservation: Resources(memoryKiB: 10 * gib, cpuMHz: 0), expandable: false))
        try core.addPool(PoolSpec(name: "a", parent: "vch", reservation: Resources(memoryKiB: 2 * gib, cpuMHz: 0), expandable: true))
        try core.addPool(PoolSpec(name: "b", parent: "vch", reservation: Resources(memoryKiB: 4 * gib, cpuMHz: 0), expandable: false))
        // a: its own 2 GiB, then vch's unreserved 10 - 2 - 4 = 4 GiB; vch may not borrow from root.
        let a = Fixture.fill(&core, pool: "a", upTo: 50)
        #expect(a.admitted == 6)
        #expect(a.refusal?.description == "pool a cannot borrow: pool vch has used up its memory reservation and is not expandable (needs 1 GiB, 0 KiB available)")
        // b is not expandable: its reservation and no more, though a left nothing to borrow anyway.
        let b = Fixture.fill(&core, pool: "b", upTo: 50)
        #expect(b.admitted == 4)
        #expect(b.refusal?.description == "pool b has used up its memory reservation and is not expandable (needs 1 GiB, 0 KiB available)")
        // Once a gives back, the borrowed capacity returns to vch, and b still cannot take it.
        for placement in core.placements where placement.pool == "a" { try core.release(placement.id) }
        #expect(core.pools.held[try core.pools.index(of: "vch")].memoryKiB == 6 * gib)
        #expect(Fixture.fill(&core, pool: "b", upTo: 1).admitted == 0)
        // Making vch expandable lets a borrow through it from root's unreserved 90 GiB.
        var vch = core.pools.specs[try core.pools.index(of: "vch")]
        vch.expandable = true
        try core.updatePool(vch)
        #expect(Fixture.fill(&core, pool: "a", upTo: 200).admitted == 96)
        #expect(core.audit().isEmpty, "\(core.audit())")
    }

    @Test func releaseReturnsExactlyWhatWasCharged() throws {
        var core = try Fixture.singleHost(gib: 100)
        try core.addPool(PoolSpec(name: "vch", reservation: Resources(memoryKiB: 3 * gib, cpuMHz: 1000), expandable: true))
        try core.addPool(PoolSpec(name: "leaf", parent: "vch", reservation: Resources(memoryKiB: 1 * gib, cpuMHz: 0), expandable: true))
        let before = Fixture.fingerprint(core)
        var ids: [Int] = []
        for n in 0..<60 { ids.append(try core.reserve(pool: n % 3 == 0 ? "vch" : "leaf", image: n % 2 == 0 ? "nginx" : "big").id) }
        #expect(core.pools.held[0].memoryKiB > 3 * gib)
        for id in ids.shuffled() { try core.release(id) }
        #expect(Fixture.fingerprint(core) == before)
        #expect(throws: PlacementError.unknownPlacement(ids[0])) { try core.release(ids[0]) }
    }

    @Test func sharesSplitContendedCapacityAmongSiblings() throws {
        var core = PlacementCore()
        try core.addHost(Fixture.host("host-1", gib: 4))
        try core.addPool(PoolSpec(name: "a", shares: 1000))
        try core.addPool(PoolSpec(name: "b", shares: 3000))
        func entitled(_ demands: [String: Resources] = [:]) -> [String: Int] {
            Dictionary(uniqueKeysWithValues: zip(core.pools.names, core.pools.entitlements(demands: demands).map(\.memoryKiB)))
        }
        #expect(entitled()["a"] == 1 * gib)
        #expect(entitled()["b"] == 3 * gib)
        // A pool that wants less leaves the rest to its sibling.
        let modest = entitled(["a": Resources(memoryKiB: gib / 2, cpuMHz: 0)])
        #expect(modest["a"] == gib / 2)
        #expect(modest["b"] == 7 * gib / 2)
        // A reservation is a floor and a limit a ceiling; shares divide what is left.
        try core.updatePool(PoolSpec(name: "a", reservation: Resources(memoryKiB: 2 * gib, cpuMHz: 0), shares: 1000))
        #expect(entitled()["a"] == 2 * gib)
        #expect(entitled()["b"] == 2 * gib)
        try core.updatePool(PoolSpec(name: "a", shares: 1000))
        try core.updatePool(PoolSpec(name: "b", memoryLimitKiB: gib, shares: 3000))
        #expect(entitled()["a"] == 3 * gib)
        #expect(entitled()["b"] == 1 * gib)
        // CPU is divided the same way: 64 cores at 2000 MHz.
        let cpu = Dictionary(uniqueKeysWithValues: zip(core.pools.names, core.pools.entitlements().map(\.cpuMHz)))
        #expect(cpu["a"] == 32_000)
        #expect(cpu["b"] == 96_000)
    }

    @Test func cpuIsAdmittedLikeMemory() throws {
        var core = try Fixture.singleHost(gib: 100)
        try core.addPool(PoolSpec(name: "web", reservation: Resources(memoryKiB: gib, cpuMHz: 1000), expandable: false))
        var admitted = 0
        while (try? core.reserve(pool: "web", image: "nginx")) != nil { admitted += 1 }
        #expect(admitted == 10)
        #expect(throws: PlacementError.self) { try core.reserve(pool: "web", image: "nginx") }
        do {
            _ = try core.reserve(pool: "web", image: "nginx")
        } catch {
            #expect(error.description.contains("pool web has used up its cpu reservation"))
        }
    }
}
