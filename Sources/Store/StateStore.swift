import Foundation
import GRDB

/// Everything the store holds, each table in creation order.
public struct StateSnapshot: Equatable, Sendable {
    public var pools: [PoolRow] = []
    public var images: [ImageRow] = []
    public var hosts: [HostRow] = []
    public var nodes: [NUMANodeRow] = []
    public var warmParents: [WarmParentRow] = []
    public var placements: [PlacementRow] = []
    /// One above the largest placement id ever written, released or not: ids are never
    /// reused, so a stale id can never release someone else's fork.
    public var nextPlacementID = 1

    public init() {}
}

/// One atomic change: rows to insert or replace, and placements to delete. A caller builds
/// one per operation so the database never holds half of it.
public struct StateChanges: Sendable {
    public var pools: [PoolRow] = []
    public var images: [ImageRow] = []
    public var hosts: [HostRow] = []
    public var nodes: [NUMANodeRow] = []
    public var warmParents: [WarmParentRow] = []
    public var placements: [PlacementRow] = []
    public var deletedPlacements: [Int] = []

    public init() {}
}

/// The placement state in an embedded SQLite database (GRDB, WAL mode, so readers such as
/// a capacity report never block the writer). The schema is created and upgraded by
/// migrations when the store opens.
public final class StateStore: Sendable {
    public let path: String
    let database: DatabasePool
    /// Held for the store's lifetime: one process at a time places from a folder.
    private let lock: FolderLock

    /// The database file inside a state folder.
    public static let fileName = "placement.sqlite"

    /// Opens (creating if needed) the store in `folder`, waiting up to `lockWaitSeconds` while
    /// another process has it open.
    public init(folder: URL, lockWaitSeconds: Double = 10) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        lock = try FolderLock(folder: folder, file: "placement.lock", waitSeconds: lockWaitSeconds)
        path = folder.appendingPathComponent(Self.fileName).path
        var configuration = Configuration()
        // Several `vmfork` processes may share one state folder; wait for each other.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // WAL with NORMAL sync survives a process crash; each commit costs no fsync.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        database = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(database)
    }

    /// "wal" when the database runs in write-ahead-log mode.
    public func journalMode() throws -> String {
        try database.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "" }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: pools, images, hosts, NUMA nodes, warm parents, placements") { db in
            try db.create(table: PoolRow.databaseTableName) { t in
                t.primaryKey("name", .text)
                t.column("parent", .text).notNull()
                t.column("position", .integer).notNull()
                t.column("memoryReservationKiB", .integer).notNull()
                t.column("cpuReservationMHz", .integer).notNull()
                t.column("memoryLimitKiB", .integer)
                t.column("cpuLimitMHz", .integer)
                t.column("shares", .integer).notNull()
                t.column("expandable", .boolean).notNull()
                t.column("policy", .text).notNull()
            }
            try db.create(table: ImageRow.databaseTableName) { t in
                t.primaryKey("name", .text)
                t.column("position", .integer).notNull()
                t.column("parentMemoryKiB", .integer).notNull()
                t.column("growthPerChildKiB", .integer).notNull()
                t.column("cpuMHzPerChild", .integer).notNull()
            }
            try db.create(table: HostRow.databaseTableName) { t in
                t.primaryKey("name", .text)
                t.column("position", .integer).notNull().unique()
                t.column("cpuCores", .integer).notNull()
                t.column("cpuMHzPerCore", .integer).notNull()
                t.column("simulated", .boolean).notNull()
                t.column("healthy", .boolean).notNull()
            }
            try db.create(table: NUMANodeRow.databaseTableName) { t in
                t.column("host", .text).notNull().references(HostRow.databaseTableName, onDelete: .cascade)
                t.column("node", .integer).notNull()
                t.column("memoryKiB", .integer).notNull()
                t.column("cpus", .text).notNull()
                t.primaryKey(["host", "node"])
            }
            try db.create(table: WarmParentRow.databaseTableName) { t in
                t.column("host", .text).notNull().references(HostRow.databaseTableName, onDelete: .cascade)
                t.column("image", .text).notNull().references(ImageRow.databaseTableName)
                t.column("node", .integer).notNull()
                t.column("memoryKiB", .integer).notNull()
                t.column("pool", .text).notNull()
                t.column("position", .integer).notNull()
                t.primaryKey(["host", "image"])
            }
            try db.create(table: PlacementRow.databaseTableName) { t in
                t.primaryKey("id", .integer)
                // The root pool is implicit (it is the fleet), so pool names are not a foreign key.
                t.column("pool", .text).notNull()
                t.column("image", .text).notNull().references(ImageRow.databaseTableName)
                t.column("host", .text).notNull().references(HostRow.databaseTableName)
                t.column("node", .integer).notNull()
                t.column("memoryKiB", .integer).notNull()
                t.column("cpuMHz", .integer).notNull()
                t.column("start", .text).notNull()
                t.column("committed", .boolean).notNull()
                t.column("leaseExpiresAt", .double)
            }
            try db.create(index: "placementLease", on: PlacementRow.databaseTableName, columns: ["committed", "leaseExpiresAt"])
            try db.create(table: "counter") { t in
                t.primaryKey("name", .text)
                t.column("value", .integer).notNull()
            }
            try db.execute(sql: "INSERT INTO counter (name, value) VALUES ('nextPlacementID', 1)")
        }
        registerEngineMigration(&migrator)
        registerEventRetentionMigration(&migrator)
        return migrator
    }

    /// Reads the whole state in one consistent read.
    public func snapshot() throws -> StateSnapshot {
        try database.read { db in
            var snapshot = StateSnapshot()
            snapshot.pools = try PoolRow.order(Column("position")).fetchAll(db)
            snapshot.images = try ImageRow.order(Column("position")).fetchAll(db)
            snapshot.hosts = try HostRow.order(Column("position")).fetchAll(db)
            snapshot.nodes = try NUMANodeRow.order(Column("host"), Column("node")).fetchAll(db)
            snapshot.warmParents = try WarmParentRow.order(Column("position")).fetchAll(db)
            snapshot.placements = try PlacementRow.order(Column("id")).fetchAll(db)
            snapshot.nextPlacementID = try Int.fetchOne(db, sql: "SELECT value FROM counter WHERE name = 'nextPlacementID'") ?? 1
            return snapshot
        }
    }

    /// Applies one change in one transaction: all of it or none of it.
    public func write(_ changes: StateChanges) throws {
        try database.write { db in
            for row in changes.pools { try row.upsert(db) }
            for row in changes.images { try row.upsert(db) }
            for row in changes.hosts { try row.upsert(db) }
            for row in changes.nodes { try row.upsert(db) }
            for row in changes.warmParents { try row.upsert(db) }
            try Self.apply(placements: changes.placements, deleted: changes.deletedPlacements, in: db)
        }
    }

    /// Placements written (and the next id past them kept), then those deleted: ids are never
    /// reused, so a batch's deletions come after its writes whatever their order in time.
    static func apply(placements: [PlacementRow], deleted: [Int], in db: Database) throws {
        for row in placements { try row.upsert(db) }
        if let highest = placements.map(\.id).max() {
            try db.execute(sql: "UPDATE counter SET value = max(value, ?) WHERE name = 'nextPlacementID'", arguments: [highest + 1])
        }
        if !deleted.isEmpty {
            _ = try PlacementRow.deleteAll(db, keys: deleted)
        }
    }

    /// Deletes uncommitted reservations whose lease ran out by `now` and returns them: their
    /// holder crashed or gave up between reserve and commit.
    public func deleteExpiredReservations(now: Double) throws -> [PlacementRow] {
        try database.write { db in
            let expired = PlacementRow.filter(Column("committed") == false && Column("leaseExpiresAt") <= now)
            let rows = try expired.order(Column("id")).fetchAll(db)
            try expired.deleteAll(db)
            return rows
        }
    }
}
