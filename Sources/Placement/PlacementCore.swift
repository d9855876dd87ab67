/// The in-memory placement engine: the pool tree, the hosts with their NUMA nodes and warm
/// parents, and the indexes decisions read. It knows nothing of storage or threads; the
/// `PlacementService` wraps it with a lock and the SQLite store. Every mutating call either
/// succeeds whole or throws and leaves the state as it was.
public struct PlacementCore: Sendable {
    /// How hosts are chosen. Both give the same decision; `scanEveryHost` is the naive
    /// baseline the benchmark and the agreement test compare against.
    public enum Selection: String, Sendable, CaseIterable {
        case indexed, scanEveryHost
    }

    public var selection: Selection

    public private(set) var pools: PoolTree

    private(set) var images: [ImageCost] = []
    private(set) var imageIndex: [String: Int] = [:]

    private(set) var hosts: [HostSpec] = []
    private(set) var hostIndex: [String: Int] = [:]
    /// CPU MHz not yet charged, per host.
    private(set) var cpuFree: [Int] = []
    /// Position of each host's node 0 in the per-node arrays.
    private(set) var nodeBase: [Int] = []
    /// Memory KiB not yet charged, per NUMA node of every host.
    private(set) var nodeFree: [Int] = []
    /// Images with a warm parent on each node (a handful per node).
    private(set) var warmImagesOnNode: [[Int]] = []
    /// The warm parents, in the order they were added.
    public private(set) var warmParents: [WarmParentSite] = []
    /// The node holding each host's warm parent of each image, or -1: row `host`, column
    /// `image`, `imageColumns` wide (widened when images outgrow it).
    private var warmNodeTable: [Int8] = []
    private var imageColumns = 8

    /// Per image, the healthy nodes holding its warm parent, keyed by (free memory, slot).
    private(set) var warmIndex: [OrderedKeys] = []
    /// Every healthy node, for cold starts.
    private(set) var coldIndex = OrderedKeys()

    struct Held: Sendable {
        var pool: Int
        var image: Int
        var host: Int
        var node: Int
        var charge: Resources
        var start: Placement.Start
        var committed: Bool
        var leaseExpiresAt: Double?
    }

    private(set) var held: [Int: Held] = [:]
    public internal(set) var nextPlacementID = 1

    public init(selection: Selection = .indexed) {
        self.selection = selection
        pools = PoolTree(rootCapacity: .zero)
    }

    // MARK: Keys

    /// A node's key: free memory in the high bits, then host position, then node number, so
    /// keys order by free memory with a fixed tie-break (later host, then higher node wins
    /// when spreading; the earlier one when packing).
    static let slotBits: UInt64 = 28
    static let nodeBits: UInt64 = 6

    @inline(__always)
    static func key(free: Int, host: Int, node: Int) -> UInt64 {
        UInt64(Swift.max(0, free)) << slotBits | UInt64(host) << nodeBits | UInt64(node)
    }

    @inline(__always)
    static func host(ofKey key: UInt64) -> Int { Int((key & ((1 << slotBits) - 1)) >> nodeBits) }

    @inline(__always)
    static func node(ofKey key: UInt64) -> Int { Int(key & ((1 << nodeBits) - 1)) }

    static let maxHosts = 1 << Int(slotBits - nodeBits)

    private func key(host h: Int, node n: Int) -> UInt64 { Self.key(free: nodeFree[nodeBase[h] + n], host: h, node: n) }

    // MARK: Images

    public mutating func addImage(_ spec: ImageCost) throws(PlacementError) {
        try spec.validate()
        guard imageIndex[spec.name] == nil else { throw .duplicateName(kind: "image", name: spec.name) }
        imageIndex[spec.name] = images.count
        images.append(spec)
        warmIndex.append(OrderedKeys())
        if images.count > imageColumns {
            let wider = imageColumns * 2
            var table = [Int8](repeating: -1, count: hosts.count * wider)
            for h in hosts.indices {
                for i in 0..<imageColumns { table[h * wider + i] = warmNodeTable[h * imageColumns + i] }
            }
            warmNodeTable = table
            imageColumns = wider
        }
    }

    /// Records a newly observed growth per child; forks placed from now on are charged it,
    /// forks already placed keep (and give back) what they were charged.
    public mutating func setGrowth(image: String, growthPerChildKiB: Int) throws(PlacementError) {
        let i = try index(ofImage: image)
        var spec = images[i]
        spec.growthPerChildKiB = growthPerChildKiB
        try spec.validate()
        images[i] = spec
    }

    /// The memory a warm parent of an image holds, as measured (its cold starts' charge and the
    /// charge of warm parents added from now on; ones already placed keep theirs).
    public mutating func setParentMemory(image: String, parentMemoryKiB: Int) throws(PlacementError) {
        let i = try index(ofImage: image)
        var spec = images[i]
        spec.parentMemoryKiB = parentMemoryKiB
        try spec.validate()
        images[i] = spec
    }

    public func image(_ name: String) throws(PlacementError) -> ImageCost { images[try index(ofImage: name)] }

    func index(ofImage name: String) throws(PlacementError) -> Int {
        guard let i = imageIndex[name] else { throw .unknownImage(name) }
        return i
    }

    func index(ofHost name: String) throws(PlacementError) -> Int {
        guard let h = hostIndex[name] else { throw .unknownHost(name) }
        return h
    }

    // MARK: Pools

    public func pool(_ name: String) throws(PlacementError) -> PoolSpec { pools.specs[try pools.index(of: name)] }
    public mutating func addPool(_ spec: PoolSpec) throws(PlacementError) { try pools.addPool(spec) }
    mutating func restorePool(_ spec: PoolSpec) throws(PlacementError) { try pools.addPool(spec, admit: false) }
    public mutating func updatePool(_ spec: PoolSpec) throws(PlacementError) { try pools.updatePool(spec) }

    // MARK: Hosts

    public var allHosts: [HostSpec] { hosts }

    /// Registers a host; its healthy capacity joins the root pool.
    public mutating func addHost(_ spec: HostSpec) throws(PlacementError) {
        try spec.validate()
        guard hostIndex[spec.name] == nil else { throw .duplicateName(kind: "host", name: spec.name) }
        guard hosts.count < Self.maxHosts else { throw .invalid("host \(spec.name): the fleet is full (\(Self.maxHosts) hosts)") }
        let h = hosts.count
        hosts.append(spec)
        hostIndex[spec.name] = h
        cpuFree.append(spec.capacity.cpuMHz)
        nodeBase.append(nodeFree.count)
        for node in spec.nodes {
            nodeFree.append(node.memoryKiB)
            warmImagesOnNode.append([])
        }
        warmNodeTable.append(contentsOf: repeatElement(-1, count: imageColumns))
        if spec.healthy {
            pools.setRootCapacity(pools.specs[PoolTree.root].reservation + spec.capacity)
            for n in spec.nodes.indices { coldIndex.insert(key(host: h, node: n)) }
        }
    }

    /// Marks a host healthy or not. An unhealthy host takes no new forks and its capacity
    /// leaves the root pool; what is already placed on it stays charged until released.
    public mutating func setHealth(host: String, healthy: Bool) throws(PlacementError) {
        let h = try index(ofHost: host)
        guard hosts[h].healthy != healthy else { return }
        hosts[h].healthy = healthy
        let capacity = hosts[h].capacity
        let root = pools.specs[PoolTree.root].reservation
        pools.setRootCapacity(healthy ? root + capacity : root - capacity)
        for n in hosts[h].nodes.indices {
            let k = key(host: h, node: n)
            for i in warmImagesOnNode[nodeBase[h] + n] {
                if healthy { warmIndex[i].insert(k) } else { warmIndex[i].remove(k) }
            }
            if healthy { coldIndex.insert(k) } else { coldIndex.remove(k) }
        }
    }

    /// Puts a warm parent of an image on a host's node, charging its memory to the node and
    /// to the pool that keeps it. One read back from the store is not admitted again.
    public mutating func addWarmParent(_ parent: WarmParentSite) throws(PlacementError) { try addWarmParent(parent, admit: true) }

    mutating func addWarmParent(_ parent: WarmParentSite, admit: Bool) throws(PlacementError) {
        let h = try index(ofHost: parent.host)
        let i = try index(ofImage: parent.image)
        let p = try pools.index(of: parent.pool)
        guard parent.node >= 0, parent.node < hosts[h].nodes.count else {
            throw .invalid("host \(parent.host) has no NUMA node \(parent.node)")
        }
        if parent.memoryKiB < 0 { throw .negativeValue(subject: "warm parent of \(parent.image)", what: "memory", value: parent.memoryKiB) }
        if warmNode(host: h, image: i) != nil { throw .duplicateName(kind: "warm parent of image \(parent.image) on host", name: parent.host) }
        let free = nodeFree[nodeBase[h] + parent.node]
        guard free >= parent.memoryKiB || !admit else {
            throw .invalid("host \(parent.host) node \(parent.node): \(Resources.formatKiB(free)) free, warm parent of \(parent.image) needs \(Resources.formatKiB(parent.memoryKiB))")
        }
        let charge = Resources(memoryKiB: parent.memoryKiB, cpuMHz: 0)
        if admit, let refused = pools.refusal(charging: charge, at: p) { throw .poolRefused(refused) }
        pools.charge(charge, at: p)
        adjustNode(host: h, node: parent.node, by: -parent.memoryKiB)
        warmParents.append(parent)
        warmNodeTable[h * imageColumns + i] = Int8(parent.node)
        warmImagesOnNode[nodeBase[h] + parent.node].append(i)
        if hosts[h].healthy { warmIndex[i].insert(key(host: h, node: parent.node)) }
    }

    /// The node number of the host's warm parent of the image, if it has one.
    @inline(__always)
    func warmNode(host h: Int, image i: Int) -> Int? {
        let node = warmNodeTable[h * imageColumns + i]
        return node < 0 ? nil : Int(node)
    }

    /// Changes a node's free memory and moves its key in every index that holds it.
    private mutating func adjustNode(host h: Int, node n: Int, by delta: Int) {
        let slot = nodeBase[h] + n
        let indexed = hosts[h].healthy
        let oldKey = key(host: h, node: n)
        nodeFree[slot] += delta
        guard indexed else { return }
        let newKey = key(host: h, node: n)
        for i in warmImagesOnNode[slot] {
            warmIndex[i].remove(oldKey)
            warmIndex[i].insert(newKey)
        }
        coldIndex.remove(oldKey)
        coldIndex.insert(newKey)
    }

    // MARK: Decisions

    /// Admits a fork of `image` in `pool`, picks its host and node, and charges it: the pool
    /// tree, the node's memory and the host's CPU. The result stays reserved until
    /// `commit` or `release`; `leaseExpiresAt` bounds how long an uncommitted one lives.
    /// `memoryKiB`, when given, is the fork's own memory reservation: it is charged instead of
    /// the image's per-child growth when larger.
    public mutating func reserve(pool: String, image: String, allowColdStart: Bool = true,
                                 leaseExpiresAt: Double? = nil, memoryKiB: Int? = nil) throws(PlacementError) -> Placement {
        let p = try pools.index(of: pool)
        let i = try index(ofImage: image)
        let decision = try decide(pool: p, image: i, allowColdStart: allowColdStart, memoryKiB: memoryKiB)
        return charge(pool: p, image: i, key: decision.key, charge: decision.charge, start: decision.start, leaseExpiresAt: leaseExpiresAt)
    }

    struct Decision {
        var key: UInt64
        var charge: Resources
        var start: Placement.Start
    }

    /// Admission, then the node: a warm fork if the pool admits it and a node fits, else a
    /// cold start if allowed.
    func decide(pool p: Int, image i: Int, allowColdStart: Bool, memoryKiB: Int? = nil) throws(PlacementError) -> Decision {
        let spec = images[i]
        let policy = pools.specs[p].policy
        // A fork's own reservation replaces the image's per-child growth when larger.
        let extra = max(0, (memoryKiB ?? 0) - spec.growthPerChildKiB)
        let warmCharge = Resources(memoryKiB: spec.warmCharge.memoryKiB + extra, cpuMHz: spec.warmCharge.cpuMHz)
        let coldCharge = Resources(memoryKiB: spec.coldCharge.memoryKiB + extra, cpuMHz: spec.coldCharge.cpuMHz)
        if let refused = pools.refusal(charging: warmCharge, at: p) { throw .poolRefused(refused) }
        if let key = chooseNode(image: i, need: warmCharge, policy: policy) {
            return Decision(key: key, charge: warmCharge, start: .warm)
        }
        guard allowColdStart else { throw .noHostFits(image: spec.name, pool: pools.specs[p].name, needed: warmCharge) }
        if let refused = pools.refusal(charging: coldCharge, at: p) { throw .poolRefused(refused) }
        if let key = chooseNode(image: nil, need: coldCharge, policy: policy) {
            return Decision(key: key, charge: coldCharge, start: .cold)
        }
        throw .noHostFits(image: spec.name, pool: pools.specs[p].name, needed: coldCharge)
    }

    /// The best node's key for a fork needing `need`: among healthy nodes holding a warm
    /// parent of `image` (or any healthy node for a cold start when `image` is nil) with
    /// that much free memory on the node and CPU on the host, the most free (spread) or the
    /// least free (pack).
    func chooseNode(image: Int?, need: Resources, policy: PlacementPolicy) -> UInt64? {
        switch selection {
        case .indexed: chooseIndexed(image: image, need: need, policy: policy)
        case .scanEveryHost: chooseByScan(image: image, need: need, policy: policy)
        }
    }

    private func chooseIndexed(image: Int?, need: Resources, policy: PlacementPolicy) -> UInt64? {
        let minimum = UInt64(need.memoryKiB) << Self.slotBits
        let cpu = need.cpuMHz
        let keys = image.map { warmIndex[$0] } ?? coldIndex
        switch policy {
        case .spread: return keys.lastDescending(atLeast: minimum) { cpuFree[Self.host(ofKey: $0)] >= cpu }
        case .pack: return keys.firstAscending(from: minimum) { cpuFree[Self.host(ofKey: $0)] >= cpu }
        }
    }

    /// The naive baseline: look at every node of every host.
    private func chooseByScan(image: Int?, need: Resources, policy: PlacementPolicy) -> UInt64? {
        var best: UInt64?
        for h in hosts.indices where hosts[h].healthy && cpuFree[h] >= need.cpuMHz {
            func consider(_ n: Int) {
                let free = nodeFree[nodeBase[h] + n]
                guard free >= need.memoryKiB else { return }
                let k = Self.key(free: free, host: h, node: n)
                if let current = best, policy == .spread ? k < current : k > current { return }
                best = k
            }
            if let image {
                if let n = warmNode(host: h, image: image) { consider(n) }
            } else {
                for n in hosts[h].nodes.indices { consider(n) }
            }
        }
        return best
    }

    private mutating func charge(pool p: Int, image i: Int, key: UInt64, charge: Resources, start: Placement.Start,
                                 leaseExpiresAt: Double?) -> Placement {
        let h = Self.host(ofKey: key)
        let n = Self.node(ofKey: key)
        let record = Held(pool: p, image: i, host: h, node: n, charge: charge, start: start, committed: false, leaseExpiresAt: leaseExpiresAt)
        let id = nextPlacementID
        nextPlacementID += 1
        apply(record, id: id)
        return placement(id: id, record)
    }

    private mutating func apply(_ record: Held, id: Int) {
        pools.charge(record.charge, at: record.pool)
        cpuFree[record.host] -= record.charge.cpuMHz
        adjustNode(host: record.host, node: record.node, by: -record.charge.memoryKiB)
        held[id] = record
    }

    private func placement(id: Int, _ record: Held) -> Placement {
        Placement(id: id, pool: pools.specs[record.pool].name, image: images[record.image].name, host: hosts[record.host].name,
                  node: record.node, charge: record.charge, start: record.start, committed: record.committed,
                  leaseExpiresAt: record.leaseExpiresAt)
    }

    /// Makes a reservation permanent: the fork started, so its lease no longer applies.
    public mutating func commit(_ id: Int) throws(PlacementError) -> Placement {
        guard var record = held[id] else { throw .unknownPlacement(id) }
        record.committed = true
        record.leaseExpiresAt = nil
        held[id] = record
        return placement(id: id, record)
    }

    /// Returns exactly what the placement was charged, whether committed or not.
    @discardableResult
    public mutating func release(_ id: Int) throws(PlacementError) -> Placement {
        guard let record = held.removeValue(forKey: id) else { throw .unknownPlacement(id) }
        pools.release(record.charge, at: record.pool)
        cpuFree[record.host] += record.charge.cpuMHz
        adjustNode(host: record.host, node: record.node, by: record.charge.memoryKiB)
        return placement(id: id, record)
    }

    /// Re-applies a placement read back from the store, as it was charged then. Admission is
    /// not asked again: the capacity was granted before the restart.
    public mutating func restore(_ placement: Placement) throws(PlacementError) {
        guard held[placement.id] == nil else { throw .duplicateName(kind: "placement", name: String(placement.id)) }
        let h = try index(ofHost: placement.host)
        guard placement.node >= 0, placement.node < hosts[h].nodes.count else {
            throw .invalid("placement \(placement.id): host \(placement.host) has no NUMA node \(placement.node)")
        }
        let record = Held(pool: try pools.index(of: placement.pool), image: try index(ofImage: placement.image), host: h,
                          node: placement.node, charge: placement.charge, start: placement.start,
                          committed: placement.committed, leaseExpiresAt: placement.leaseExpiresAt)
        apply(record, id: placement.id)
        nextPlacementID = Swift.max(nextPlacementID, placement.id + 1)
    }

    public func placement(_ id: Int) throws(PlacementError) -> Placement {
        guard let record = held[id] else { throw .unknownPlacement(id) }
        return placement(id: id, record)
    }

    public var placements: [Placement] { held.keys.sorted().map { placement(id: $0, held[$0]!) } }

    /// Uncommitted reservations whose lease ran out by `now` (seconds since 1970).
    public func expiredReservations(now: Double) -> [Int] {
        held.compactMap { id, record in
            guard !record.committed, let lease = record.leaseExpiresAt, lease <= now else { return nil }
            return id
        }.sorted()
    }
}
