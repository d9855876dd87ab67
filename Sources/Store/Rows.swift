import GRDB

/// The rows of the placement state, one struct per table. They are plain values so the
/// Placement module can read and write them without knowing SQL; `position` keeps the order
/// things were created in, which placement's deterministic tie-breaking depends on.
public struct PoolRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "pool"
    public var name: String
    public var parent: String
    public var position: Int
    public var memoryReservationKiB: Int
    public var cpuReservationMHz: Int
    public var memoryLimitKiB: Int?
    public var cpuLimitMHz: Int?
    public var shares: Int
    public var expandable: Bool
    public var policy: String

    public init(name: String, parent: String, position: Int, memoryReservationKiB: Int, cpuReservationMHz: Int,
                memoryLimitKiB: Int?, cpuLimitMHz: Int?, shares: Int, expandable: Bool, policy: String) {
        self.name = name
        self.parent = parent
        self.position = position
        self.memoryReservationKiB = memoryReservationKiB
        self.cpuReservationMHz = cpuReservationMHz
        self.memoryLimitKiB = memoryLimitKiB
        self.cpuLimitMHz = cpuLimitMHz
        self.shares = shares
        self.expandable = expandable
        self.policy = policy
    }
}

public struct ImageRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "image"
    public var name: String
    public var position: Int
    public var parentMemoryKiB: Int
    public var growthPerChildKiB: Int
    public var cpuMHzPerChild: Int

    public init(name: String, position: Int, parentMemoryKiB: Int, growthPerChildKiB: Int, cpuMHzPerChild: Int) {
        self.name = name
        self.position = position
        self.parentMemoryKiB = parentMemoryKiB
        self.growthPerChildKiB = growthPerChildKiB
        self.cpuMHzPerChild = cpuMHzPerChild
    }
}

public struct HostRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "host"
    public var name: String
    public var position: Int
    public var cpuCores: Int
    public var cpuMHzPerCore: Int
    public var simulated: Bool
    public var healthy: Bool

    public init(name: String, position: Int, cpuCores: Int, cpuMHzPerCore: Int, simulated: Bool, healthy: Bool) {
        self.name = name
        self.position = position
        self.cpuCores = cpuCores
        self.cpuMHzPerCore = cpuMHzPerCore
        self.simulated = simulated
        self.healthy = healthy
    }
}

public struct NUMANodeRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "numaNode"
    public var host: String
    public var node: Int
    public var memoryKiB: Int
    /// The node's CPU numbers, comma-separated.
    public var cpus: String

    public init(host: String, node: Int, memoryKiB: Int, cpus: String) {
        self.host = host
        self.node = node
        self.memoryKiB = memoryKiB
        self.cpus = cpus
    }
}

public struct WarmParentRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "warmParent"
    public var host: String
    public var image: String
    public var node: Int
    public var memoryKiB: Int
    public var pool: String
    public var position: Int

    public init(host: String, image: String, node: Int, memoryKiB: Int, pool: String, position: Int) {
        self.host = host
        self.image = image
        self.node = node
        self.memoryKiB = memoryKiB
        self.pool = pool
        self.position = position
    }
}

/// A reservation or a committed placement, with exactly what it was charged, so a restart
/// re-applies (and a release later returns) the same amounts.
public struct PlacementRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "placement"
    public var id: Int
    public var pool: String
    public var image: String
    public var host: String
    public var node: Int
    public var memoryKiB: Int
    public var cpuMHz: Int
    /// "warm" or "cold".
    public var start: String
    public var committed: Bool
    /// Seconds since 1970 after which an uncommitted reservation is reclaimed.
    public var leaseExpiresAt: Double?

    public init(id: Int, pool: String, image: String, host: String, node: Int, memoryKiB: Int, cpuMHz: Int, start: String,
                committed: Bool, leaseExpiresAt: Double?) {
        self.id = id
        self.pool = pool
        self.image = image
        self.host = host
        self.node = node
        self.memoryKiB = memoryKiB
        self.cpuMHz = cpuMHz
        self.start = start
        self.committed = committed
        self.leaseExpiresAt = leaseExpiresAt
    }
}
