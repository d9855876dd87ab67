import WorkloadProfiles

/// Everything a workload profile declares, as placement's own specs: hosts generated from
/// host groups (named simulated when the profile says so), images, pools parents-first, and
/// the warm parents. Applying it goes through the same calls a host agent or an
/// administrator makes, so a simulated fleet exercises the real code path.
public struct FleetPlan: Sendable {
    public var hosts: [HostSpec] = []
    public var images: [ImageCost] = []
    public var pools: [PoolSpec] = []
    public var warmParents: [WarmParentSite] = []

    public init(profile: WorkloadProfile) {
        images = profile.images.map {
            ImageCost(name: $0.name, parentMemoryKiB: $0.parentMemoryMiB * 1024, growthPerChildKiB: $0.growthPerChildKiB, cpuMHzPerChild: $0.cpuMHzPerChild)
        }
        let imageByName = Dictionary(profile.images.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for group in profile.fleet.hostGroups where group.count > 0 {
            let perNodeKiB = group.memoryMiB * 1024 / group.numaNodes
            let coresPerNode = Swift.max(1, group.cpuCores / group.numaNodes)
            let nodes = (0..<group.numaNodes).map { n in
                NUMANodeSpec(memoryKiB: perNodeKiB, cpus: Array((n * coresPerNode)..<Swift.min(group.cpuCores, (n + 1) * coresPerNode)))
            }
            for number in 1...group.count {
                let name = "\(group.namePrefix)\(number)"
                hosts.append(HostSpec(name: name, cpuCores: group.cpuCores,
                                      cpuMHzPerCore: group.cpuMHzPerCore ?? WorkloadProfile.defaultCPUMHzPerCore,
                                      nodes: nodes, simulated: profile.fleet.simulated))
                for (k, imageName) in group.warmImages.enumerated() {
                    guard let image = imageByName[imageName] else { continue }
                    warmParents.append(WarmParentSite(host: name, image: imageName, node: k % group.numaNodes,
                                                  memoryKiB: image.parentMemoryMiB * 1024, pool: image.parentPool ?? PoolTree.rootName))
                }
            }
        }
        let parentOf = Dictionary(profile.pools.map { ($0.name, $0.parent) }, uniquingKeysWith: { first, _ in first })
        func depth(_ name: String) -> Int {
            var d = 0
            var next = parentOf[name] ?? nil
            while let parent = next, d <= profile.pools.count {
                d += 1
                next = parentOf[parent] ?? nil
            }
            return d
        }
        let ordered = profile.pools.enumerated().sorted { (depth($0.element.name), $0.offset) < (depth($1.element.name), $1.offset) }
        pools = ordered.map { _, pool in
            PoolSpec(name: pool.name, parent: pool.parent ?? PoolTree.rootName,
                     reservation: Resources(memoryKiB: pool.memoryReservationMiB * 1024, cpuMHz: pool.cpuReservationMHz),
                     memoryLimitKiB: pool.memoryLimitMiB.map { $0 * 1024 }, cpuLimitMHz: pool.cpuLimitMHz,
                     shares: pool.shares, expandable: pool.expandableReservation,
                     policy: pool.placement.flatMap(PlacementPolicy.init(rawValue:)) ?? .spread)
        }
    }

    /// Hosts first (their capacity funds the root pool), then images, pools and warm parents.
    public func apply(to core: inout PlacementCore) throws(PlacementError) {
        for host in hosts { try core.addHost(host) }
        for image in images { try core.addImage(image) }
        for pool in pools { try core.addPool(pool) }
        for parent in warmParents { try core.addWarmParent(parent) }
    }
}
