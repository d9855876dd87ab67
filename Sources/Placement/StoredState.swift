import Store

/// Conversions between placement's specs and the store's rows, and rebuilding a core from a
/// snapshot. Kept in one place so a new field is added to both directions together.
extension PoolSpec {
    func row(position: Int) -> PoolRow {
        PoolRow(name: name, parent: parent, position: position, memoryReservationKiB: reservation.memoryKiB,
                cpuReservationMHz: reservation.cpuMHz, memoryLimitKiB: memoryLimitKiB, cpuLimitMHz: cpuLimitMHz,
                shares: shares, expandable: expandable, policy: policy.rawValue)
    }

    init(_ row: PoolRow) throws(PlacementError) {
        guard let policy = PlacementPolicy(rawValue: row.policy) else { throw .invalid("stored pool \(row.name): unknown policy \(row.policy)") }
        self.init(name: row.name, parent: row.parent, reservation: Resources(memoryKiB: row.memoryReservationKiB, cpuMHz: row.cpuReservationMHz),
                  memoryLimitKiB: row.memoryLimitKiB, cpuLimitMHz: row.cpuLimitMHz, shares: row.shares, expandable: row.expandable, policy: policy)
    }
}

extension ImageCost {
    func row(position: Int) -> ImageRow {
        ImageRow(name: name, position: position, parentMemoryKiB: parentMemoryKiB, growthPerChildKiB: growthPerChildKiB, cpuMHzPerChild: cpuMHzPerChild)
    }

    init(_ row: ImageRow) {
        self.init(name: row.name, parentMemoryKiB: row.parentMemoryKiB, growthPerChildKiB: row.growthPerChildKiB, cpuMHzPerChild: row.cpuMHzPerChild)
    }
}

extension HostSpec {
    func row(position: Int) -> HostRow {
        HostRow(name: name, position: position, cpuCores: cpuCores, cpuMHzPerCore: cpuMHzPerCore, simulated: simulated, healthy: healthy)
    }

    var nodeRows: [NUMANodeRow] {
        nodes.enumerated().map { NUMANodeRow(host: name, node: $0.offset, memoryKiB: $0.element.memoryKiB, cpus: $0.element.cpus.map(String.init).joined(separator: ",")) }
    }
}

extension WarmParentSite {
    func row(position: Int) -> WarmParentRow {
        WarmParentRow(host: host, image: image, node: node, memoryKiB: memoryKiB, pool: pool, position: position)
    }
}

extension Placement {
    var row: PlacementRow {
        PlacementRow(id: id, pool: pool, image: image, host: host, node: node, memoryKiB: charge.memoryKiB, cpuMHz: charge.cpuMHz,
                     start: start.rawValue, committed: committed, leaseExpiresAt: leaseExpiresAt)
    }

    init(_ row: PlacementRow) throws(PlacementError) {
        guard let start = Start(rawValue: row.start) else { throw .invalid("stored placement \(row.id): unknown start \(row.start)") }
        self.init(id: row.id, pool: row.pool, image: row.image, host: row.host, node: row.node,
                  charge: Resources(memoryKiB: row.memoryKiB, cpuMHz: row.cpuMHz), start: start,
                  committed: row.committed, leaseExpiresAt: row.leaseExpiresAt)
    }
}

extension PlacementCore {
    /// Rebuilds the state a store holds, in the order it was created, charging what was
    /// charged then; admission is not asked again for what was already admitted.
    init(snapshot: StateSnapshot, selection: Selection) throws(PlacementError) {
        self.init(selection: selection)
        var nodesByHost: [String: [NUMANodeRow]] = [:]
        for node in snapshot.nodes { nodesByHost[node.host, default: []].append(node) }
        for row in snapshot.hosts {
            let nodes = (nodesByHost[row.name] ?? []).sorted { $0.node < $1.node }.map {
                NUMANodeSpec(memoryKiB: $0.memoryKiB, cpus: $0.cpus.split(separator: ",").compactMap { Int($0) })
            }
            try addHost(HostSpec(name: row.name, cpuCores: row.cpuCores, cpuMHzPerCore: row.cpuMHzPerCore, nodes: nodes,
                                 simulated: row.simulated, healthy: row.healthy))
        }
        for row in snapshot.images { try addImage(ImageCost(row)) }
        var pending = snapshot.pools
        while !pending.isEmpty {
            let ready = pending.filter { pools.indexByName[$0.parent] != nil }
            guard !ready.isEmpty else { throw .invalid("stored pools \(pending.map(\.name)) have no path to the root pool") }
            for row in ready { try restorePool(PoolSpec(row)) }
            pending.removeAll { pools.indexByName[$0.name] != nil }
        }
        for row in snapshot.warmParents {
            try addWarmParent(WarmParentSite(host: row.host, image: row.image, node: row.node, memoryKiB: row.memoryKiB, pool: row.pool), admit: false)
        }
        for row in snapshot.placements { try restore(Placement(row)) }
        nextPlacementID = Swift.max(nextPlacementID, snapshot.nextPlacementID)
    }
}
