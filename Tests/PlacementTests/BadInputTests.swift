import Testing
@testable import Placement

/// Bad input is refused with an error naming what was wrong, and changes nothing.
@Suite struct BadInputTests {
    static let gib = Fixture.gib

    func fleet() throws -> PlacementCore {
        var core = try Fixture.singleHost(gib: 10)
        try core.addPool(PoolSpec(name: "prod", reservation: Resources(memoryKiB: 2 * Self.gib, cpuMHz: 0)))
        try core.addPool(PoolSpec(name: "team", parent: "prod"))
        _ = try core.reserve(pool: "team", image: "nginx")
        return core
    }

    static let cases: [(String, @Sendable (inout PlacementCore) throws(PlacementError) -> Void, String)] = [
        ("unknown pool", { core throws(PlacementError) in _ = try core.reserve(pool: "qa", image: "nginx") }, "unknown pool qa"),
        ("unknown image", { core throws(PlacementError) in _ = try core.reserve(pool: "prod", image: "postgres") }, "unknown image postgres"),
        ("negative reservation", { core throws(PlacementError) in
            try core.addPool(PoolSpec(name: "dev", reservation: Resources(memoryKiB: -5, cpuMHz: 0)))
        }, "pool dev: memory reservation -5 is negative"),
        ("reservation above its limit", { core throws(PlacementError) in
            try core.addPool(PoolSpec(name: "dev", reservation: Resources(memoryKiB: 2048, cpuMHz: 0), memoryLimitKiB: 1024))
        }, "pool dev: memory reservation 2 MiB is above its limit 1 MiB"),
        ("pool cycle", { core throws(PlacementError) in try core.updatePool(PoolSpec(name: "prod", parent: "team")) }, "pool cycle: prod -> team -> prod"),
        ("pool its own parent", { core throws(PlacementError) in try core.updatePool(PoolSpec(name: "prod", parent: "prod")) }, "pool cycle: prod -> prod"),
        ("unknown parent", { core throws(PlacementError) in try core.addPool(PoolSpec(name: "dev", parent: "nowhere")) }, "unknown pool nowhere"),
        ("duplicate pool", { core throws(PlacementError) in try core.addPool(PoolSpec(name: "prod")) }, "pool prod already exists"),
        ("reservation beyond the fleet", { core throws(PlacementError) in
            try core.addPool(PoolSpec(name: "huge", reservation: Resources(memoryKiB: 100 * gib, cpuMHz: 0)))
        }, "pool huge: reservation 100 GiB memory, 0 MHz CPU not admitted: the fleet (root pool) has no unreserved memory left"),
        ("limit below what a pool holds", { core throws(PlacementError) in
            try core.updatePool(PoolSpec(name: "team", parent: "prod", memoryLimitKiB: 1))
        }, "pool team: memory limit 1 KiB is below the 256 KiB it already holds"),
        ("zero shares", { core throws(PlacementError) in try core.addPool(PoolSpec(name: "dev", shares: 0)) }, "pool dev: shares 0 must be positive"),
        ("negative growth", { core throws(PlacementError) in try core.setGrowth(image: "nginx", growthPerChildKiB: -1) }, "image nginx: growthPerChildKiB -1 is negative"),
        ("unknown host", { core throws(PlacementError) in try core.setHealth(host: "host-9", healthy: false) }, "unknown host host-9"),
        ("missing NUMA node", { core throws(PlacementError) in
            try core.addWarmParent(WarmParentSite(host: "host-1", image: "nginx", node: 3, memoryKiB: 1))
        }, "host host-1 has no NUMA node 3"),
        ("release of nothing", { core throws(PlacementError) in try core.release(999) }, "unknown placement 999"),
    ]

    @Test(arguments: cases.indices)
    func badInputIsNamedAndChangesNothing(index: Int) throws {
        let (label, change, message) = Self.cases[index]
        var core = try fleet()
        let before = Fixture.fingerprint(core)
        do {
            try change(&core)
            Issue.record("\(label): expected an error")
        } catch {
            #expect(error.description.hasPrefix(message), "\(label): \(error.description)")
        }
        #expect(Fixture.fingerprint(core) == before, "\(label) changed the state")
    }
}
