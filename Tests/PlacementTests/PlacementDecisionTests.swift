import TestSupport
import Testing
@testable import Placement

/// Where forks land: warm parents first, the right NUMA node, spread or pack, and the
/// indexed placer agreeing with the naive scan.
@Suite struct PlacementDecisionTests {
    let gib = Fixture.gib

    /// host-1 and host-3 hold a warm parent of nginx (host-3 on node 1); host-2 holds none.
    func threeHosts(policy: PlacementPolicy = .spread, selection: PlacementCore.Selection = .indexed) throws -> PlacementCore {
        var core = PlacementCore(selection: selection)
        try core.addHost(Fixture.host("host-1", gib: 8, nodes: 2))
        try core.addHost(Fixture.host("host-2", gib: 64, nodes: 2))
        try core.addHost(Fixture.host("host-3", gib: 16, nodes: 2))
        try core.addImage(Fixture.nginx)
        try core.addPool(PoolSpec(name: "prod", reservation: Resources(memoryKiB: 32 * gib, cpuMHz: 10_000), expandable: true, policy: policy))
        try core.addWarmParent(WarmParentSite(host: "host-1", image: "nginx", node: 0, memoryKiB: Fixture.nginx.parentMemoryKiB, pool: "prod"))
        try core.addWarmParent(WarmParentSite(host: "host-3", image: "nginx", node: 1, memoryKiB: Fixture.nginx.parentMemoryKiB, pool: "prod"))
        return core
    }

    @Test func forkGoesToWarmParentAndIsChargedOnlyItsGrowth() throws {
        var core = try threeHosts()
        let heldBefore = core.pools.held[try core.pools.index(of: "prod")]
        let placement = try core.reserve(pool: "prod", image: "nginx")
        // host-2 has the most memory but no warm parent; host-3's parent sits on node 1.
        #expect(placement.host == "host-3")
        #expect(placement.node == 1)
        #expect(placement.start == .warm)
        #expect(placement.charge == Resources(memoryKiB: 256, cpuMHz: 100))
        #expect(core.pools.held[try core.pools.index(of: "prod")] - heldBefore == placement.charge)
    }

    @Test func spreadTakesTheMostFreeNodeAndPackTheFullestThatFits() throws {
        var spread = try threeHosts(policy: .spread)
        var pack = try threeHosts(policy: .pack)
        #expect(try spread.reserve(pool: "prod", image: "nginx").host == "host-3")
        #expect(try pack.reserve(pool: "prod", image: "nginx").host == "host-1")
    }

    @Test func noWarmParentWithRoomMeansAColdStartChargedInFull() throws {
        var core = try threeHosts()
        try core.setHealth(host: "host-1", healthy: false)
        try core.setHealth(host: "host-3", healthy: false)
        let placement = try core.reserve(pool: "prod", image: "nginx")
        #expect(placement.host == "host-2")
        #expect(placement.start == .cold)
        #expect(placement.charge == Fixture.nginx.coldCharge)
        #expect(throws: PlacementError.noHostFits(image: "nginx", pool: "prod", needed: Fixture.nginx.warmCharge)) {
            try core.reserve(pool: "prod", image: "nginx", allowColdStart: false)
        }
    }

    @Test func forkStaysOnTheParentsNodeEvenWhenAnotherNodeHasRoom() throws {
        var core = PlacementCore()
        try core.addHost(Fixture.host("host-1", gib: 2, nodes: 2))
        let image = ImageCost(name: "fat", parentMemoryKiB: 0, growthPerChildKiB: 256 * 1024, cpuMHzPerChild: 0)
        try core.addImage(image)
        try core.addWarmParent(WarmParentSite(host: "host-1", image: "fat", node: 1, memoryKiB: 0))
        try core.addPool(PoolSpec(name: "p"))
        for _ in 0..<4 { #expect(try core.reserve(pool: "p", image: "fat", allowColdStart: false).node == 1) }
        // Node 1 (1 GiB) is full; node 0 is empty but holds no parent to share pages with.
        #expect(throws: PlacementError.self) { try core.reserve(pool: "p", image: "fat", allowColdStart: false) }
        let cold = try core.reserve(pool: "p", image: "fat")
        #expect(cold.node == 0)
        #expect(cold.start == .cold)
    }

    @Test func equalHostsBreakTiesTheSameWayEveryTime() throws {
        func build() throws -> PlacementCore {
            var core = PlacementCore()
            for n in 1...5 {
                try core.addHost(Fixture.host("host-\(n)", gib: 4))
            }
            try core.addImage(Fixture.nginx)
            try core.addPool(PoolSpec(name: "p"))
            for n in 1...5 { try core.addWarmParent(WarmParentSite(host: "host-\(n)", image: "nginx", node: 0, memoryKiB: 1024)) }
            return core
        }
        var first = try build()
        var second = try build()
        let a = try (0..<12).map { _ in try first.reserve(pool: "p", image: "nginx").host }
        let b = try (0..<12).map { _ in try second.reserve(pool: "p", image: "nginx").host }
        #expect(a == b)
        // Spreading over equal hosts visits each before returning to any.
        #expect(Set(a.prefix(5)).count == 5)
    }

    @Test func imagesAddedAfterHostsKeepTheirWarmParents() throws {
        var core = PlacementCore()
        try core.addHost(Fixture.host("host-1", gib: 4))
        try core.addPool(PoolSpec(name: "p"))
        for n in 0..<20 {
            try core.addImage(ImageCost(name: "image-\(n)", parentMemoryKiB: 1024, growthPerChildKiB: 64, cpuMHzPerChild: 1))
            if n % 3 == 0 { try core.addWarmParent(WarmParentSite(host: "host-1", image: "image-\(n)", node: 0, memoryKiB: 1024)) }
        }
        for n in 0..<20 {
            #expect(try core.reserve(pool: "p", image: "image-\(n)").start == (n % 3 == 0 ? .warm : .cold))
        }
        #expect(core.audit().isEmpty)
    }

    @Test func explanationNamesWhyEachHostWasPassedOver() throws {
        var core = try threeHosts()
        try core.setHealth(host: "host-1", healthy: false)
        let text = try core.explain(pool: "prod", image: "nginx").render()
        #expect(text.contains("fork of nginx in pool prod: host-3 node 1, warm"))
        #expect(text.contains("host-3: chosen (spread)"))
        #expect(text.contains("host-2: no warm parent of nginx"))
        #expect(text.contains("host-1: unhealthy"))

        try core.setHealth(host: "host-1", healthy: true)
        try core.updatePool(PoolSpec(name: "prod", memoryLimitKiB: core.pools.held[try core.pools.index(of: "prod")].memoryKiB, expandable: true))
        let limited = try core.explain(pool: "prod", image: "nginx").render()
        #expect(limited.contains("refused: pool prod at its memory limit"))
        #expect(limited.contains("host-3: pool prod at its memory limit"))
    }

    /// The same random sequence of reservations, releases, commits and health changes on an
    /// indexed and a scanning placer must give identical decisions and identical refusals.
    @Test(arguments: [PlacementPolicy.spread, .pack])
    func indexedPlacerAgreesWithScanningEveryHost(policy: PlacementPolicy) throws {
        var generator = SplitMix64(seed: 42)
        func build(_ selection: PlacementCore.Selection) throws -> PlacementCore {
            var core = PlacementCore(selection: selection)
            var seed = SplitMix64(seed: 7)
            let images = [Fixture.nginx, ImageCost(name: "redis", parentMemoryKiB: 32 * 1024, growthPerChildKiB: 96 * 1024, cpuMHzPerChild: 400)]
            for image in images { try core.addImage(image) }
            try core.addPool(PoolSpec(name: "p", policy: policy))
            for h in 0..<120 {
                let nodes = 1 + Int(seed.next() % 2)
                try core.addHost(Fixture.host("host-\(h)", gib: 1 + Int(seed.next() % 3), nodes: nodes, cores: 1 + Int(seed.next() % 4)))
                for image in images where seed.next() % 3 != 0 {
                    try core.addWarmParent(WarmParentSite(host: "host-\(h)", image: image.name, node: Int(seed.next() % UInt64(nodes)), memoryKiB: image.parentMemoryKiB))
                }
            }
            return core
        }
        var indexed = try build(.indexed)
        var scanning = try build(.scanEveryHost)
        var live: [Int] = []
        var cold = 0
        for step in 0..<6000 {
            let roll = generator.next() % 100
            if roll < 70 || live.isEmpty {
                let image = generator.next() % 2 == 0 ? "nginx" : "redis"
                let a = Result { () throws(PlacementError) in try indexed.reserve(pool: "p", image: image) }
                let b = Result { () throws(PlacementError) in try scanning.reserve(pool: "p", image: image) }
                #expect(a == b, "step \(step)")
                if case .success(let placement) = a {
                    live.append(placement.id)
                    if placement.start == .cold { cold += 1 }
                }
            } else if roll < 95 {
                let id = live.remove(at: Int(generator.next() % UInt64(live.count)))
                #expect(try indexed.release(id) == scanning.release(id))
            } else {
                let host = "host-\(generator.next() % 120)"
                let healthy = generator.next() % 4 != 0
                try indexed.setHealth(host: host, healthy: healthy)
                try scanning.setHealth(host: host, healthy: healthy)
            }
        }
        #expect(cold > 0, "the sequence should also exercise cold starts")
        #expect(live.count > 100)
        #expect(indexed.audit().isEmpty, "\(indexed.audit())")
        #expect(Fixture.fingerprint(indexed) == Fixture.fingerprint(scanning))
    }
}

