import WorkloadProfiles

/// How a pool picks among hosts that fit: `spread` takes the most free capacity (even load),
/// `pack` the least that still fits (keeps whole hosts empty).
public enum PlacementPolicy: String, Sendable, Codable, CaseIterable {
    case spread, pack
}

/// A resource pool as an administrator declares it, with vSphere's meaning for each field.
public struct PoolSpec: Equatable, Sendable, Codable {
    public var name: String
    /// The parent pool; `PoolTree.rootName` for a top-level pool (one per Virtual Container Host).
    public var parent: String
    /// Taken from the parent when the pool is created, whether used or not.
    public var reservation: Resources
    /// Caps everything the pool holds, borrowed or not; nil for no limit.
    public var memoryLimitKiB: Int?
    public var cpuLimitMHz: Int?
    /// Relative weight among siblings when they contend for capacity nobody reserved.
    public var shares: Int
    /// Whether admission may borrow unreserved capacity from ancestors beyond the reservation.
    public var expandable: Bool
    public var policy: PlacementPolicy

    public init(name: String, parent: String = PoolTree.rootName, reservation: Resources = .zero, memoryLimitKiB: Int? = nil,
                cpuLimitMHz: Int? = nil, shares: Int = 1000, expandable: Bool = true, policy: PlacementPolicy = .spread) {
        self.name = name
        self.parent = parent
        self.reservation = reservation
        self.memoryLimitKiB = memoryLimitKiB
        self.cpuLimitMHz = cpuLimitMHz
        self.shares = shares
        self.expandable = expandable
        self.policy = policy
    }

    func limit(_ kind: ResourceKind) -> Int? { kind == .memory ? memoryLimitKiB : cpuLimitMHz }

    /// Checks the values that make sense on their own, before the tree is consulted.
    func validate() throws(PlacementError) {
        let subject = "pool \(name)"
        if name.isEmpty { throw .invalid("a pool needs a name") }
        for kind in ResourceKind.allCases {
            let reserved = kind.amount(reservation)
            if reserved < 0 { throw .negativeValue(subject: subject, what: "\(kind.rawValue) reservation", value: reserved) }
            if let limit = limit(kind) {
                if limit < 0 { throw .negativeValue(subject: subject, what: "\(kind.rawValue) limit", value: limit) }
                if reserved > limit { throw .reservationAboveLimit(pool: name, resource: kind, reservation: reserved, limit: limit) }
            }
        }
        if shares <= 0 { throw .invalid("pool \(name): shares \(shares) must be positive") }
    }
}

/// The resource-pool tree and its admission control, following vSphere's rules:
/// - a pool takes its reservation from its parent when created, whether it uses it or not;
/// - what a pool holds never exceeds its limit;
/// - beyond its reservation an expandable pool borrows from its parent, which in turn uses
///   its own unreserved capacity or borrows further up; a non-expandable pool refuses;
/// - the root pool is the fleet's healthy capacity and borrows from nobody.
/// Siblings therefore cannot take each other's reservations: a reservation counts as held by
/// the parent from the moment the child exists. Shares matter only under contention, see
/// `entitlements(demands:)`.
///
/// Bookkeeping: `held[p]` is what pool p holds, its own charges (forks, warm parents) plus,
/// for each child c, `taken(c) = max(reservation(c), held[c])`. Charging and releasing walk
/// up only as far as the taken amount changes, so admission costs O(depth).
public struct PoolTree: Sendable {
    public static let rootName = WorkloadProfile.rootPoolName
    static let root = 0

    private(set) var specs: [PoolSpec]
    private(set) var parentIndex: [Int]
    private(set) var children: [[Int]]
    /// Everything the pool holds: its own charges plus what its children take.
    private(set) var held: [Resources]
    /// Charges made directly to the pool (forks, warm parents).
    private(set) var own: [Resources]
    private(set) var indexByName: [String: Int]

    init(rootCapacity: Resources) {
        specs = [PoolSpec(name: Self.rootName, parent: "", reservation: rootCapacity, shares: 1000, expandable: false)]
        parentIndex = [-1]
        children = [[]]
        held = [.zero]
        own = [.zero]
        indexByName = [Self.rootName: Self.root]
    }

    var count: Int { specs.count }

    func index(of name: String) throws(PlacementError) -> Int {
        guard let index = indexByName[name] else { throw .unknownPool(name) }
        return index
    }

    /// What pool p takes from its parent.
    func taken(_ p: Int) -> Resources { Resources.max(specs[p].reservation, held[p]) }

    /// The root's reservation follows the fleet's healthy capacity.
    mutating func setRootCapacity(_ capacity: Resources) { specs[Self.root].reservation = capacity }

    /// Why charging `amount` to pool `start` would be refused, or nil when it would be admitted.
    func refusal(charging amount: Resources, at start: Int) -> PoolRefusal? {
        var need = amount
        var p = start
        while true {
            let spec = specs[p]
            let before = held[p]
            let after = before + need
            if let limit = spec.memoryLimitKiB, need.memoryKiB > 0, after.memoryKiB > limit {
                return refusal(start, p, .memory, .limit, need.memoryKiB, limit - before.memoryKiB)
            }
            if let limit = spec.cpuLimitMHz, need.cpuMHz > 0, after.cpuMHz > limit {
                return refusal(start, p, .cpu, .limit, need.cpuMHz, limit - before.cpuMHz)
            }
            let extra = Resources.max(spec.reservation, after) - Resources.max(spec.reservation, before)
            if extra.isZero { return nil }
            if !spec.expandable || p == Self.root {
                let reason: PoolRefusal.Reason = p == Self.root ? .fleetFull : .reservationUsedUp
                let kind: ResourceKind = extra.memoryKiB > 0 ? .memory : .cpu
                let unreserved = kind.amount(spec.reservation) - kind.amount(before)
                return refusal(start, p, kind, reason, kind.amount(need), unreserved)
            }
            need = extra
            p = parentIndex[p]
        }
    }

    private func refusal(_ start: Int, _ p: Int, _ kind: ResourceKind, _ reason: PoolRefusal.Reason, _ needed: Int, _ available: Int) -> PoolRefusal {
        PoolRefusal(requestPool: specs[start].name, refusingPool: specs[p].name, resource: kind, reason: reason,
                    needed: needed, available: Swift.max(0, available))
    }

    /// Charges a fork or warm parent to pool p. Call only after `refusal` returned nil.
    mutating func charge(_ amount: Resources, at p: Int) {
        own[p] += amount
        propagate(amount, from: p)
    }

    /// Returns exactly what `charge` took; ancestors give back what they lent.
    mutating func release(_ amount: Resources, at p: Int) {
        own[p] -= amount
        propagate(Resources.zero - amount, from: p)
    }

    /// Applies a change of what pool `start` holds and carries the change of what it takes
    /// up the tree, stopping where the taken amount no longer changes.
    private mutating func propagate(_ change: Resources, from start: Int) {
        var delta = change
        var p = start
        while true {
            let before = held[p]
            held[p] = before + delta
            if p == Self.root { return }
            let reservation = specs[p].reservation
            delta = Resources.max(reservation, held[p]) - Resources.max(reservation, before)
            if delta.isZero { return }
            p = parentIndex[p]
        }
    }

    /// Adds a pool; its reservation is admitted against (and taken from) its parent. A pool
    /// read back from the store was admitted before and is not asked again (`admit` false).
    mutating func addPool(_ spec: PoolSpec, admit: Bool = true) throws(PlacementError) {
        try spec.validate()
        guard indexByName[spec.name] == nil else { throw .duplicateName(kind: "pool", name: spec.name) }
        let parent = try index(of: spec.parent)
        if admit, let refused = refusal(charging: spec.reservation, at: parent) {
            throw .invalid("pool \(spec.name): reservation \(spec.reservation) not admitted: \(refused)")
        }
        let p = specs.count
        specs.append(spec)
        parentIndex.append(parent)
        children.append([])
        children[parent].append(p)
        held.append(.zero)
        own.append(.zero)
        indexByName[spec.name] = p
        propagate(spec.reservation, from: parent)
    }

    /// Changes a pool's reservation, limits, shares, expandability, policy or parent. The new
    /// reservation is admitted against the (new) parent as if the pool were created anew.
    mutating func updatePool(_ spec: PoolSpec) throws(PlacementError) {
        try spec.validate()
        let p = try index(of: spec.name)
        guard p != Self.root else { throw .invalid("the root pool follows the fleet's capacity and cannot be changed") }
        let newParent = try index(of: spec.parent)
        var ancestor = newParent
        var path = [spec.name]
        while ancestor != -1 {
            path.append(specs[ancestor].name)
            if ancestor == p { throw .poolCycle(path) }
            ancestor = parentIndex[ancestor]
        }
        for kind in ResourceKind.allCases {
            if let limit = spec.limit(kind), limit < kind.amount(held[p]) {
                throw .limitBelowHeld(pool: spec.name, resource: kind, limit: limit, held: kind.amount(held[p]))
            }
        }
        if !spec.expandable, held[p].memoryKiB > spec.reservation.memoryKiB || held[p].cpuMHz > spec.reservation.cpuMHz {
            throw .invalid("pool \(spec.name): holds \(held[p]), more than reservation \(spec.reservation); it must stay expandable")
        }
        var updated = self
        let oldParent = parentIndex[p]
        updated.propagate(Resources.zero - taken(p), from: oldParent)
        updated.specs[p] = spec
        if let refused = updated.refusal(charging: updated.taken(p), at: newParent) {
            throw .invalid("pool \(spec.name): not admitted under \(spec.parent): \(refused)")
        }
        updated.propagate(updated.taken(p), from: newParent)
        if newParent != oldParent {
            updated.parentIndex[p] = newParent
            updated.children[oldParent].removeAll { $0 == p }
            updated.children[newParent].append(p)
        }
        self = updated
    }

    /// The largest amount pool p could be charged now, per resource: its unreserved part plus,
    /// if expandable, what its ancestors could lend, capped by its limit.
    func headroom(at p: Int) -> Resources {
        let spec = specs[p]
        let lendable = spec.expandable && p != Self.root ? headroom(at: parentIndex[p]) : .zero
        func room(_ kind: ResourceKind) -> Int {
            let before = kind.amount(held[p])
            var result = Swift.max(0, kind.amount(spec.reservation) - before) + kind.amount(lendable)
            if let limit = spec.limit(kind) { result = Swift.min(result, limit - before) }
            return Swift.max(0, result)
        }
        return Resources(memoryKiB: room(.memory), cpuMHz: room(.cpu))
    }

    /// What each pool is entitled to when every pool wants more than there is: the root's
    /// capacity is divided top-down among siblings in proportion to their shares, each
    /// getting at least its reservation and at most its limit and its demand. `demands`
    /// gives a pool's own demand; a pool without one wants all it can get if it is a leaf
    /// and nothing for itself otherwise. An interior pool's own demand is served before its
    /// children divide the rest. Indexed like the tree (see `names`).
    public func entitlements(demands: [String: Resources] = [:]) -> [Resources] {
        var result = [Resources](repeating: .zero, count: count)
        for kind in ResourceKind.allCases {
            var demand = [Int](repeating: 0, count: count)
            func subtreeDemand(_ p: Int) -> Int {
                let ownDemand = demands[specs[p].name].map(kind.amount) ?? (children[p].isEmpty ? Int.max : 0)
                var total = ownDemand
                for c in children[p] { total = Self.saturatingAdd(total, subtreeDemand(c)) }
                if let limit = specs[p].limit(kind) { total = Swift.min(total, limit) }
                demand[p] = total
                return total
            }
            _ = subtreeDemand(Self.root)
            var amount = [Int](repeating: 0, count: count)
            amount[Self.root] = Swift.min(kind.amount(specs[Self.root].reservation), demand[Self.root])
            var queue = [Self.root]
            while let p = queue.popLast() {
                let ownDemand = demands[specs[p].name].map(kind.amount) ?? 0
                let forChildren = Swift.max(0, amount[p] - (children[p].isEmpty ? 0 : Swift.min(ownDemand, amount[p])))
                let kids = children[p]
                let split = Self.divide(forChildren,
                                        floors: kids.map { kind.amount(specs[$0].reservation) },
                                        caps: kids.map { Swift.max(kind.amount(specs[$0].reservation), demand[$0]) },
                                        shares: kids.map { specs[$0].shares })
                for (c, value) in zip(kids, split) {
                    amount[c] = value
                    queue.append(c)
                }
            }
            for p in 0..<count {
                if kind == .memory { result[p].memoryKiB = amount[p] } else { result[p].cpuMHz = amount[p] }
            }
        }
        return result
    }

    public var names: [String] { specs.map(\.name) }

    private static func saturatingAdd(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? Int.max : sum
    }

    /// Water-filling: finds the per-share level at which shares, clamped to each sibling's
    /// floor and cap, add up to `amount`, then hands out whole units.
    static func divide(_ amount: Int, floors: [Int], caps: [Int], shares: [Int]) -> [Int] {
        guard !floors.isEmpty else { return [] }
        if floors.reduce(0, +) >= amount { return floors }
        if caps.reduce(0, saturatingAdd) <= amount { return caps }
        func clamped(_ level: Double) -> [Double] {
            floors.indices.map { Swift.min(Swift.max(level * Double(shares[$0]), Double(floors[$0])), Double(caps[$0])) }
        }
        var low = 0.0
        var high = Double(amount) / Double(shares.min()!) + 1
        for _ in 0..<200 {
            let mid = (low + high) / 2
            if clamped(mid).reduce(0, +) < Double(amount) { low = mid } else { high = mid }
        }
        // Siblings held at a floor or cap keep it; the others share what remains exactly.
        let level = (low + high) / 2
        var result = [Int](repeating: 0, count: floors.count)
        var free: [Int] = []
        var remaining = amount
        for i in floors.indices {
            let share = level * Double(shares[i])
            if share <= Double(floors[i]) { result[i] = floors[i] } else if share >= Double(caps[i]) { result[i] = caps[i] } else { free.append(i); continue }
            remaining -= result[i]
        }
        let freeShares = free.reduce(0) { $0 + shares[$1] }
        for i in free { result[i] = Int((Double(remaining) * Double(shares[i]) / Double(freeShares)).rounded(.down)) }
        return result
    }
}
