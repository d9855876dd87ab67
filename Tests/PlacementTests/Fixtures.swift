@testable import Placement

/// Small fleets built through the public calls, sized so each test's arithmetic is easy.
enum Fixture {
    static let gib = 1 << 20

    /// One image whose forks cost exactly 1 GiB and no CPU, so counts of forks are GiB.
    static let gigabyteImage = ImageCost(name: "big", parentMemoryKiB: 512 * 1024, growthPerChildKiB: 1 << 20, cpuMHzPerChild: 0)
    static let nginx = ImageCost(name: "nginx", parentMemoryKiB: 64 * 1024, growthPerChildKiB: 256, cpuMHzPerChild: 100)

    static func host(_ name: String, gib memory: Int, nodes: Int = 1, cores: Int = 64, healthy: Bool = true) -> HostSpec {
        HostSpec(name: name, cpuCores: cores, cpuMHzPerCore: 2000,
                 nodes: Array(repeating: NUMANodeSpec(memoryKiB: memory * gib / nodes), count: nodes), simulated: true, healthy: healthy)
    }

    /// One host with `gib` GiB plus 1 GiB that the warm parents of `big` and `nginx` (576 MiB,
    /// charged to the root pool) mostly use, so forks of `big` fit exactly `gib` times.
    static func singleHost(gib memory: Int) throws -> PlacementCore {
        var core = PlacementCore()
        try core.addHost(host("host-1", gib: memory + 1))
        try core.addImage(gigabyteImage)
        try core.addImage(nginx)
        try core.addWarmParent(WarmParentSite(host: "host-1", image: "big", node: 0, memoryKiB: gigabyteImage.parentMemoryKiB))
        try core.addWarmParent(WarmParentSite(host: "host-1", image: "nginx", node: 0, memoryKiB: nginx.parentMemoryKiB))
        return core
    }

    /// Charges `count` forks of `big` to `pool` and returns how many were admitted before
    /// the first refusal, with that refusal.
    static func fill(_ core: inout PlacementCore, pool: String, upTo count: Int) -> (admitted: Int, refusal: PlacementError?) {
        for n in 0..<count {
            do { _ = try core.reserve(pool: pool, image: "big") } catch { return (n, error) }
        }
        return (count, nil)
    }

    /// Everything placement state consists of, for "changed nothing" checks.
    static func fingerprint(_ core: PlacementCore) -> String {
        "\(core.pools.specs) \(core.pools.held) \(core.pools.own) \(core.placements) \(core.warmParents) \(core.hosts) \(core.images) \(core.nodeFree) \(core.cpuFree)"
    }
}
