extension PlacementCore {
    /// Recomputes every account from the placements and warm parents alone and lists each
    /// way the running totals, the indexes or the pool rules disagree. Empty means sound:
    /// no host, node or pool is oversubscribed and nothing leaked.
    public func audit() -> [String] {
        var problems: [String] = []
        var nodeUse = [Int](repeating: 0, count: nodeFree.count)
        var cpuUse = [Int](repeating: 0, count: hosts.count)
        var own = [Resources](repeating: .zero, count: pools.count)
        for parent in warmParents {
            guard let h = hostIndex[parent.host], let p = pools.indexByName[parent.pool] else {
                problems.append("warm parent of \(parent.image) on unknown host or pool")
                continue
            }
            nodeUse[nodeBase[h] + parent.node] += parent.memoryKiB
            own[p].memoryKiB += parent.memoryKiB
        }
        for record in held.values {
            nodeUse[nodeBase[record.host] + record.node] += record.charge.memoryKiB
            cpuUse[record.host] += record.charge.cpuMHz
            own[record.pool] += record.charge
        }
        var expectedCold: [UInt64] = []
        var expectedWarm = [[UInt64]](repeating: [], count: images.count)
        for (h, host) in hosts.enumerated() {
            if cpuUse[h] + cpuFree[h] != host.capacity.cpuMHz { problems.append("host \(host.name): CPU free \(cpuFree[h]) MHz does not match its charges") }
            if cpuFree[h] < 0 { problems.append("host \(host.name): CPU oversubscribed by \(-cpuFree[h]) MHz") }
            for (n, node) in host.nodes.enumerated() {
                let slot = nodeBase[h] + n
                if nodeUse[slot] + nodeFree[slot] != node.memoryKiB { problems.append("host \(host.name) node \(n): free memory does not match its charges") }
                if nodeFree[slot] < 0 { problems.append("host \(host.name) node \(n): memory oversubscribed by \(Resources.formatKiB(-nodeFree[slot]))") }
                guard host.healthy else { continue }
                let k = Self.key(free: nodeFree[slot], host: h, node: n)
                expectedCold.append(k)
                for i in warmImagesOnNode[slot] { expectedWarm[i].append(k) }
            }
        }
        if coldIndex.all != expectedCold.sorted() { problems.append("the cold-start index does not match the healthy nodes") }
        for i in images.indices where warmIndex[i].all != expectedWarm[i].sorted() {
            problems.append("the warm index of \(images[i].name) does not match its warm parents")
        }
        // Sum bottom-up by depth: re-parenting can put a child before its parent in the list.
        var expectedHeld = own
        let depth = (0..<pools.count).map { p -> Int in
            var d = 0
            var a = pools.parentIndex[p]
            while a != -1 { d += 1; a = pools.parentIndex[a] }
            return d
        }
        for p in (0..<pools.count).sorted(by: { depth[$0] > depth[$1] }) where p != PoolTree.root {
            expectedHeld[pools.parentIndex[p]] += Resources.max(pools.specs[p].reservation, expectedHeld[p])
        }
        for p in 0..<pools.count {
            let spec = pools.specs[p]
            if own[p] != pools.own[p] { problems.append("pool \(spec.name): own charges \(pools.own[p]) but placements add up to \(own[p])") }
            if expectedHeld[p] != pools.held[p] { problems.append("pool \(spec.name): holds \(pools.held[p]) but should hold \(expectedHeld[p])") }
            if let limit = spec.memoryLimitKiB, pools.held[p].memoryKiB > limit { problems.append("pool \(spec.name): above its memory limit") }
            if let limit = spec.cpuLimitMHz, pools.held[p].cpuMHz > limit { problems.append("pool \(spec.name): above its CPU limit") }
            if !spec.expandable, p != PoolTree.root,
               pools.held[p].memoryKiB > spec.reservation.memoryKiB || pools.held[p].cpuMHz > spec.reservation.cpuMHz {
                problems.append("pool \(spec.name): not expandable but holds more than its reservation")
            }
        }
        return problems
    }
}
