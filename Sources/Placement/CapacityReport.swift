import WorkloadProfiles

/// What the fleet holds and how much more it can take, per pool and per host: for capacity
/// planning by people (`vmfork capacity`) and by tools (its JSON). Built from the same
/// state and the same admission rules as placement, so "fits now" means placement would
/// say yes.
public struct CapacityReport: Codable, Sendable {
    public struct Totals: Codable, Sendable {
        public var hosts: Int
        public var healthyHosts: Int
        public var simulatedHosts: Int
        /// Healthy capacity (the root pool).
        public var capacity: Resources
        /// Taken by the top-level pools' reservations or by what they borrowed.
        public var reserved: Resources
        /// Charged by forks and warm parents.
        public var used: Resources
        /// Healthy capacity not yet charged to anything.
        public var free: Resources
        public var forks: Int
        public var warmParents: Int
        /// Memory the forks would need on top if each carried a private copy of its
        /// parent's pages instead of sharing them.
        public var savedBySharingKiB: Int
    }

    public struct Pool: Codable, Sendable {
        public var name: String
        public var parent: String?
        public var depth: Int
        public var reservation: Resources
        public var memoryLimitKiB: Int?
        public var cpuLimitMHz: Int?
        public var shares: Int
        public var expandable: Bool
        public var policy: PlacementPolicy
        /// Everything the pool holds: its own charges and its children's reservations.
        public var held: Resources
        /// Its own forks' charges.
        public var usedByForks: Resources
        /// Warm parents it keeps.
        public var usedByWarmParents: Resources
        /// Held beyond its reservation, lent by ancestors.
        public var borrowed: Resources
        /// The most it could be charged now (unreserved part plus what ancestors can lend,
        /// capped by its limit).
        public var free: Resources
        /// Its share when every pool wants more than there is.
        public var entitlement: Resources
        public var forks: Int
        public var savedBySharingKiB: Int
        public var headroom: [Headroom]
        public var runway: Runway?
    }

    /// How many more forks of one image fit now in a pool, and what stops the next one.
    public struct Headroom: Codable, Sendable {
        public var image: String
        public var forks: Int
        public var limitedBy: String
    }

    /// When a pool runs out at the profile's launch rate for it.
    public struct Runway: Codable, Sendable {
        public var launchesPerSecond: Double
        /// nil when it never runs out: the launches' steady state fits.
        public var secondsUntilFull: Double?
        public var limitedBy: String
        /// Memory the pool's launches hold once every lifetime has passed; nil when some
        /// launch runs until released, so usage only grows.
        public var steadyStateKiB: Int?
    }

    public struct Host: Codable, Sendable {
        public var name: String
        public var simulated: Bool
        public var healthy: Bool
        public var capacity: Resources
        public var usedByForks: Resources
        public var usedByWarmParents: Resources
        public var free: Resources
        public var forks: Int
        public var warmImages: [String]
        public var savedBySharingKiB: Int
    }

    public var profile: String?
    public var totals: Totals
    public var pools: [Pool]
    public var hosts: [Host]
}

extension PlacementCore {
    /// Builds the report. `images` chooses whose headroom each pool reports (default: the
    /// images the profile launches in that pool, else every image); `profile` supplies the
    /// launch rate for the runway.
    public func capacityReport(profile: WorkloadProfile? = nil, images chosen: [String]? = nil) throws(PlacementError) -> CapacityReport {
        for name in chosen ?? [] { _ = try index(ofImage: name) }
        var poolForks = [Int](repeating: 0, count: pools.count)
        var poolForkCharge = [Resources](repeating: .zero, count: pools.count)
        var poolSaved = [Int](repeating: 0, count: pools.count)
        var hostForks = [Int](repeating: 0, count: hosts.count)
        var hostForkCharge = [Resources](repeating: .zero, count: hosts.count)
        var hostSaved = [Int](repeating: 0, count: hosts.count)
        for record in held.values {
            let saved = record.start == .warm ? images[record.image].parentMemoryKiB : 0
            poolForks[record.pool] += 1
            poolForkCharge[record.pool] += record.charge
            poolSaved[record.pool] += saved
            hostForks[record.host] += 1
            hostForkCharge[record.host] += record.charge
            hostSaved[record.host] += saved
        }
        var poolParents = [Resources](repeating: .zero, count: pools.count)
        var hostParents = [Resources](repeating: .zero, count: hosts.count)
        var hostImages = [[String]](repeating: [], count: hosts.count)
        for parent in warmParents {
            let charge = Resources(memoryKiB: parent.memoryKiB, cpuMHz: 0)
            if let p = pools.indexByName[parent.pool] { poolParents[p] += charge }
            if let h = hostIndex[parent.host] {
                hostParents[h] += charge
                hostImages[h].append(parent.image)
            }
        }
        let entitlements = pools.entitlements()
        let hostFits = images.indices.map(hostHeadroom(image:))

        // Parents before their children, depth first, so the table reads as a tree.
        var treeOrder: [Int] = []
        var stack = [PoolTree.root]
        while let p = stack.popLast() {
            treeOrder.append(p)
            stack.append(contentsOf: pools.children[p].reversed())
        }
        var reportPools: [CapacityReport.Pool] = []
        for p in treeOrder {
            let spec = pools.specs[p]
            var depth = 0
            var ancestor = pools.parentIndex[p]
            while ancestor != -1 { depth += 1; ancestor = pools.parentIndex[ancestor] }
            let entries = profile?.launchMix.entries.filter { $0.pool == spec.name } ?? []
            // Without a choice: the images the profile launches here, or every image when
            // there is no profile to say.
            let headroomImages = chosen ?? (profile == nil ? (p == PoolTree.root ? [] : images.map(\.name)) : unique(entries.map(\.image)))
            let free = pools.headroom(at: p)
            let headroom = headroomImages.compactMap { name -> CapacityReport.Headroom? in
                guard let i = imageIndex[name] else { return nil }
                return Self.headroom(image: images[i], poolFree: free, pool: spec.name, hosts: hostFits[i])
            }
            reportPools.append(CapacityReport.Pool(
                name: spec.name, parent: p == PoolTree.root ? nil : pools.specs[pools.parentIndex[p]].name, depth: depth,
                reservation: spec.reservation, memoryLimitKiB: spec.memoryLimitKiB, cpuLimitMHz: spec.cpuLimitMHz,
                shares: spec.shares, expandable: spec.expandable, policy: spec.policy, held: pools.held[p],
                usedByForks: poolForkCharge[p], usedByWarmParents: poolParents[p],
                borrowed: p == PoolTree.root ? .zero : Resources.max(.zero, pools.held[p] - spec.reservation),
                free: free, entitlement: entitlements[p], forks: poolForks[p], savedBySharingKiB: poolSaved[p],
                headroom: headroom, runway: profile.flatMap { runway(pool: spec.name, free: free, profile: $0) }))
        }

        var reportHosts: [CapacityReport.Host] = []
        var totals = CapacityReport.Totals(hosts: hosts.count, healthyHosts: 0, simulatedHosts: 0, capacity: pools.specs[PoolTree.root].reservation,
                                           reserved: .zero, used: .zero, free: .zero, forks: held.count, warmParents: warmParents.count,
                                           savedBySharingKiB: poolSaved.reduce(0, +))
        for (h, host) in hosts.enumerated() {
            let free = Resources(memoryKiB: host.nodes.indices.reduce(0) { $0 + nodeFree[nodeBase[h] + $1] }, cpuMHz: cpuFree[h])
            reportHosts.append(CapacityReport.Host(
                name: host.name, simulated: host.simulated, healthy: host.healthy, capacity: host.capacity,
                usedByForks: hostForkCharge[h], usedByWarmParents: hostParents[h], free: free, forks: hostForks[h],
                warmImages: hostImages[h], savedBySharingKiB: hostSaved[h]))
            totals.used += hostForkCharge[h] + hostParents[h]
            if host.healthy {
                totals.healthyHosts += 1
                totals.free += free
            }
            if host.simulated { totals.simulatedHosts += 1 }
        }
        for c in pools.children[PoolTree.root] { totals.reserved += pools.taken(c) }
        return CapacityReport(profile: profile?.name, totals: totals, pools: reportPools, hosts: reportHosts)
    }

    private func unique(_ names: [String]) -> [String] {
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }

    /// Forks of one image that healthy hosts could take now, counting only nodes with a warm
    /// parent: per host, the smaller of what its parent's node and its CPU allow.
    private func hostHeadroom(image i: Int) -> (forks: Int, limitedBy: String) {
        let charge = images[i].warmCharge
        var total = 0
        var byMemory = 0
        var byCPU = 0
        var warmHosts = 0
        for h in hosts.indices where hosts[h].healthy {
            guard let n = warmNode(host: h, image: i) else { continue }
            warmHosts += 1
            let memoryFits = charge.memoryKiB > 0 ? nodeFree[nodeBase[h] + n] / charge.memoryKiB : Int.max
            let cpuFits = charge.cpuMHz > 0 ? cpuFree[h] / charge.cpuMHz : Int.max
            total = Self.saturatingAdd(total, Swift.min(memoryFits, cpuFits))
            if memoryFits <= cpuFits { byMemory += 1 } else { byCPU += 1 }
        }
        if warmHosts == 0 { return (0, "no healthy host holds a warm parent") }
        return (total, byMemory >= byCPU ? "memory of warm parents' nodes" : "CPU of hosts with a warm parent")
    }

    static func headroom(image: ImageCost, poolFree: Resources, pool: String, hosts: (forks: Int, limitedBy: String)) -> CapacityReport.Headroom {
        let charge = image.warmCharge
        let byMemory = charge.memoryKiB > 0 ? poolFree.memoryKiB / charge.memoryKiB : Int.max
        let byCPU = charge.cpuMHz > 0 ? poolFree.cpuMHz / charge.cpuMHz : Int.max
        let poolForks = Swift.min(byMemory, byCPU)
        if hosts.forks < poolForks { return .init(image: image.name, forks: hosts.forks, limitedBy: hosts.limitedBy) }
        return .init(image: image.name, forks: poolForks, limitedBy: "pool \(pool) \(byMemory <= byCPU ? "memory" : "CPU")")
    }

    /// When a pool's free capacity is used up by the profile's launches into it: each entry
    /// adds rate x charge per second until its containers start exiting after their
    /// lifetime, so usage is piecewise linear in time.
    private func runway(pool: String, free: Resources, profile: WorkloadProfile) -> CapacityReport.Runway? {
        let mix = profile.launchMix
        let totalWeight = mix.entries.reduce(0) { $0 + $1.weight }
        let entries = mix.entries.filter { $0.pool == pool }
        guard !entries.isEmpty, totalWeight > 0 else { return nil }
        typealias Flow = (rate: Double, charge: Resources, lifetime: Double?)
        let flows: [Flow] = entries.compactMap { entry in
            guard let i = imageIndex[entry.image] else { return nil }
            return (mix.launchesPerSecond * entry.weight / totalWeight, images[i].warmCharge, entry.lifetimeSeconds)
        }
        let rate = flows.reduce(0) { $0 + $1.rate }
        var best: (seconds: Double, kind: ResourceKind)?
        for kind in ResourceKind.allCases {
            if let seconds = Self.timeToReach(Double(kind.amount(free)), flows.map { ($0.rate * Double(kind.amount($0.charge)), $0.lifetime) }),
               best == nil || seconds < best!.seconds {
                best = (seconds, kind)
            }
        }
        let steady: Int? = flows.contains { $0.lifetime == nil } ? nil
            : Int(flows.reduce(0.0) { $0 + $1.rate * Double($1.charge.memoryKiB) * ($1.lifetime ?? 0) })
        return .init(launchesPerSecond: rate, secondsUntilFull: best?.seconds,
                     limitedBy: best.map { "pool \(pool) \($0.kind == .memory ? "memory" : "CPU")" } ?? "steady state fits", steadyStateKiB: steady)
    }

    /// The first time at which flows of (amount per second, lifetime) have added up to
    /// `amount`, each flow growing until its lifetime and then staying level; nil if never.
    static func timeToReach(_ amount: Double, _ flows: [(perSecond: Double, lifetime: Double?)]) -> Double? {
        var time = 0.0
        var reached = 0.0
        let breaks = flows.compactMap(\.lifetime).sorted() + [Double.infinity]
        for end in breaks where end > time {
            let slope = flows.reduce(0.0) { $0 + (($1.lifetime ?? .infinity) > time ? $1.perSecond : 0) }
            if slope > 0 {
                let needed = (amount - reached) / slope
                if time + needed <= end { return time + Swift.max(0, needed) }
            }
            if end == .infinity { return nil }
            reached += slope * (end - time)
            time = end
        }
        return nil
    }

    static func saturatingAdd(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? Int.max : sum
    }
}
