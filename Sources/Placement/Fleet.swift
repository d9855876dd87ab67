/// A host as placement sees it: CPU, NUMA nodes, health, and whether it is this machine or a
/// simulated one (simulated hosts stand in for a fleet one machine cannot hold, and go
/// through the same calls real host agents make).
public struct HostSpec: Equatable, Sendable, Codable {
    public var name: String
    public var cpuCores: Int
    public var cpuMHzPerCore: Int
    /// The host's NUMA nodes; a node's number is its position.
    public var nodes: [NUMANodeSpec]
    public var simulated: Bool
    public var healthy: Bool

    public init(name: String, cpuCores: Int, cpuMHzPerCore: Int, nodes: [NUMANodeSpec], simulated: Bool, healthy: Bool = true) {
        self.name = name
        self.cpuCores = cpuCores
        self.cpuMHzPerCore = cpuMHzPerCore
        self.nodes = nodes
        self.simulated = simulated
        self.healthy = healthy
    }

    public var capacity: Resources {
        Resources(memoryKiB: nodes.reduce(0) { $0 + $1.memoryKiB }, cpuMHz: cpuCores * cpuMHzPerCore)
    }

    /// Node numbers share a 64-bit key with free memory and the host's position.
    static let maxNodes = 64
    static let maxNodeMemoryKiB = 1 << 36

    func validate() throws(PlacementError) {
        if name.isEmpty { throw .invalid("a host needs a name") }
        if cpuCores <= 0 { throw .invalid("host \(name): cpuCores \(cpuCores) must be positive") }
        if cpuMHzPerCore <= 0 { throw .invalid("host \(name): cpuMHzPerCore \(cpuMHzPerCore) must be positive") }
        if nodes.isEmpty || nodes.count > Self.maxNodes { throw .invalid("host \(name): needs 1 to \(Self.maxNodes) NUMA nodes, has \(nodes.count)") }
        for (number, node) in nodes.enumerated() {
            if node.memoryKiB < 0 { throw .negativeValue(subject: "host \(name) node \(number)", what: "memory", value: node.memoryKiB) }
            if node.memoryKiB >= Self.maxNodeMemoryKiB { throw .invalid("host \(name) node \(number): memory \(Resources.formatKiB(node.memoryKiB)) is above 64 TiB") }
        }
    }
}

/// One NUMA node of a host: its memory and the CPUs that are local to it.
public struct NUMANodeSpec: Equatable, Sendable, Codable {
    public var memoryKiB: Int
    public var cpus: [Int]

    public init(memoryKiB: Int, cpus: [Int] = []) {
        self.memoryKiB = memoryKiB
        self.cpus = cpus
    }
}

/// What forks of an image cost, as placement charges them (the engine's image is
/// `Engine.ImageRecord`; the parent it makes is `Fork.WarmParent`). `growthPerChildKiB` is what a fork really costs in memory:
/// the private pages a child owns after running a while (the parent's pages are shared and
/// already paid for). The fork engine measures it; a profile gives it until then.
public struct ImageCost: Equatable, Sendable, Codable {
    public var name: String
    public var parentMemoryKiB: Int
    public var growthPerChildKiB: Int
    public var cpuMHzPerChild: Int

    public init(name: String, parentMemoryKiB: Int, growthPerChildKiB: Int, cpuMHzPerChild: Int) {
        self.name = name
        self.parentMemoryKiB = parentMemoryKiB
        self.growthPerChildKiB = growthPerChildKiB
        self.cpuMHzPerChild = cpuMHzPerChild
    }

    /// A fork from a warm parent on the same node.
    public var warmCharge: Resources { Resources(memoryKiB: growthPerChildKiB, cpuMHz: cpuMHzPerChild) }
    /// A cold start: the whole VM, since no parent's pages are there to share.
    public var coldCharge: Resources { Resources(memoryKiB: parentMemoryKiB + growthPerChildKiB, cpuMHz: cpuMHzPerChild) }

    func validate() throws(PlacementError) {
        if name.isEmpty { throw .invalid("an image needs a name") }
        let subject = "image \(name)"
        if parentMemoryKiB < 0 { throw .negativeValue(subject: subject, what: "parentMemoryKiB", value: parentMemoryKiB) }
        if growthPerChildKiB < 0 { throw .negativeValue(subject: subject, what: "growthPerChildKiB", value: growthPerChildKiB) }
        if cpuMHzPerChild < 0 { throw .negativeValue(subject: subject, what: "cpuMHzPerChild", value: cpuMHzPerChild) }
    }
}

/// Where a warm parent lives, as placement sees it (the live one is `Fork.WarmParent`): an
/// image loaded and paused at its fork point on one NUMA node of a host,
/// charged to the pool that keeps it.
public struct WarmParentSite: Equatable, Sendable, Codable {
    public var host: String
    public var image: String
    public var node: Int
    public var memoryKiB: Int
    public var pool: String

    public init(host: String, image: String, node: Int, memoryKiB: Int, pool: String = PoolTree.rootName) {
        self.host = host
        self.image = image
        self.node = node
        self.memoryKiB = memoryKiB
        self.pool = pool
    }
}

/// A fork's place: which host and node, what it was charged, and how it starts.
public struct Placement: Equatable, Sendable, Codable {
    public enum Start: String, Sendable, Codable {
        /// Forked from a warm parent on the same node: charged only its private growth.
        case warm
        /// No warm parent fits: the whole VM boots, charged in full.
        case cold
    }

    public var id: Int
    public var pool: String
    public var image: String
    public var host: String
    public var node: Int
    public var charge: Resources
    public var start: Start
    /// A reservation holds capacity until committed or released; an uncommitted one is
    /// reclaimed when its lease runs out (seconds since 1970), so a crash leaks nothing.
    public var committed: Bool
    public var leaseExpiresAt: Double?

    public init(id: Int, pool: String, image: String, host: String, node: Int, charge: Resources, start: Start,
                committed: Bool, leaseExpiresAt: Double?) {
        self.id = id
        self.pool = pool
        self.image = image
        self.host = host
        self.node = node
        self.charge = charge
        self.start = start
        self.committed = committed
        self.leaseExpiresAt = leaseExpiresAt
    }
}
