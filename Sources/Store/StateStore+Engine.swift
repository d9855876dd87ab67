import Foundation
import GRDB

/// An image the engine forks containers from: a root filesystem folder, the program its warm
/// parents load, and the arguments and environment a container gets unless it names its own.
public struct EngineImageRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "engineImage"
    public var name: String
    public var rootfs: String
    public var executable: String
    /// JSON array of strings.
    public var arguments: String
    /// JSON array of "NAME=value" strings.
    public var environment: String
    public var createdAt: Double

    public init(name: String, rootfs: String, executable: String, arguments: String, environment: String, createdAt: Double) {
        self.name = name
        self.rootfs = rootfs
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.createdAt = createdAt
    }
}

/// How many warm parents of an image (at one fork point, of one guest memory size) the engine
/// keeps, and how many ready VMs each one's pool holds.
public struct ParentPolicyRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "parentPolicy"
    public var id: String
    public var image: String
    /// "entry" or "stdin".
    public var forkPoint: String
    public var memoryMiB: Int
    public var parents: Int
    public var readyVMs: Int
    public var createdAt: Double

    public init(id: String, image: String, forkPoint: String, memoryMiB: Int, parents: Int, readyVMs: Int, createdAt: Double) {
        self.id = id
        self.image = image
        self.forkPoint = forkPoint
        self.memoryMiB = memoryMiB
        self.parents = parents
        self.readyVMs = readyVMs
        self.createdAt = createdAt
    }
}

/// A container as the engine last recorded it. A daemon that restarts finds the ones that
/// were running and records them as stopped (their VMs did not survive it).
public struct ContainerRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "container"
    public var id: String
    public var name: String
    public var image: String
    /// "created", "running" or "exited".
    public var state: String
    public var exitCode: Int?
    /// JSON of the container's specification (arguments, environment, labels...).
    public var spec: String
    public var createdAt: Double
    public var startedAt: Double?
    public var finishedAt: Double?

    public init(id: String, name: String, image: String, state: String, exitCode: Int?, spec: String, createdAt: Double,
                startedAt: Double?, finishedAt: Double?) {
        self.id = id
        self.name = name
        self.image = image
        self.state = state
        self.exitCode = exitCode
        self.spec = spec
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }
}

/// One entry of the append-only audit log: who did what, when, and how it ended.
public struct EventRow: Codable, Equatable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "event"
    public var id: Int64?
    /// Seconds since 1970.
    public var time: Double
    /// "uid:0" on the Unix socket, "token:NAME" on TCP, "engine" for what the engine does itself.
    public var actor: String
    /// e.g. "container.create", "container.exit", "parent.evict", "auth.refused".
    public var type: String
    /// What it was done to (a container id, an image name...), or "".
    public var subject: String
    /// "ok", or the error's message.
    public var result: String
    /// More, as JSON, or "".
    public var detail: String

    public init(id: Int64? = nil, time: Double, actor: String, type: String, subject: String, result: String, detail: String = "") {
        self.id = id
        self.time = time
        self.actor = actor
        self.type = type
        self.subject = subject
        self.result = result
        self.detail = detail
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// The engine's tables, and the calls the engine makes on them. Each write is one
/// transaction; the async variants run on GRDB's own writer queue, never on the caller's.
extension StateStore {
    static func registerEngineMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v2: engine images, parent policies, containers, events") { db in
            try db.create(table: EngineImageRow.databaseTableName) { t in
                t.primaryKey("name", .text)
                t.column("rootfs", .text).notNull()
                t.column("executable", .text).notNull()
                t.column("arguments", .text).notNull()
                t.column("environment", .text).notNull()
                t.column("createdAt", .double).notNull()
            }
            try db.create(table: ParentPolicyRow.databaseTableName) { t in
                t.primaryKey("id", .text)
                t.column("image", .text).notNull().references(EngineImageRow.databaseTableName)
                t.column("forkPoint", .text).notNull()
                t.column("memoryMiB", .integer).notNull()
                t.column("parents", .integer).notNull()
                t.column("readyVMs", .integer).notNull()
                t.column("createdAt", .double).notNull()
            }
            try db.create(table: ContainerRow.databaseTableName) { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull()
                t.column("image", .text).notNull()
                t.column("state", .text).notNull()
                t.column("exitCode", .integer)
                t.column("spec", .text).notNull()
                t.column("createdAt", .double).notNull()
                t.column("startedAt", .double)
                t.column("finishedAt", .double)
            }
            try db.create(table: EventRow.databaseTableName) { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .double).notNull()
                t.column("actor", .text).notNull()
                t.column("type", .text).notNull()
                t.column("subject", .text).notNull()
                t.column("result", .text).notNull()
                t.column("detail", .text).notNull()
            }
            try db.create(index: "eventTime", on: EventRow.databaseTableName, columns: ["time"])
            // Append-only: the database itself refuses to change or delete an event.
            try db.execute(sql: """
                CREATE TRIGGER eventNoUpdate BEFORE UPDATE ON event BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
                CREATE TRIGGER eventNoDelete BEFORE DELETE ON event BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
                """)
        }
    }

    /// Every image, parent policy and container the engine recorded, in creation order.
    public func engineSnapshot() throws -> (images: [EngineImageRow], policies: [ParentPolicyRow], containers: [ContainerRow]) {
        try database.read { db in
            (try EngineImageRow.order(Column("createdAt")).fetchAll(db),
             try ParentPolicyRow.order(Column("createdAt")).fetchAll(db),
             try ContainerRow.order(Column("createdAt")).fetchAll(db))
        }
    }

    public func save(image: EngineImageRow) async throws {
        try await database.write { db in try image.upsert(db) }
    }

    /// Deletes an image with its parent policies.
    public func deleteImage(named name: String) async throws {
        try await database.write { db in
            _ = try ParentPolicyRow.filter(Column("image") == name).deleteAll(db)
            _ = try EngineImageRow.deleteOne(db, key: name)
        }
    }

    public func save(policy: ParentPolicyRow) async throws {
        try await database.write { db in try policy.upsert(db) }
    }

    public func deletePolicy(id: String) async throws {
        try await database.write { db in _ = try ParentPolicyRow.deleteOne(db, key: id) }
    }

    /// Writes a container's row (from any thread; it blocks while the writer is busy).
    public func save(container: ContainerRow) throws {
        try database.write { db in try container.upsert(db) }
    }

    public func deleteContainer(id: String) throws {
        try database.write { db in _ = try ContainerRow.deleteOne(db, key: id) }
    }

    /// Appends an event and returns it with its id.
    @discardableResult
    public func append(event: EventRow) throws -> EventRow {
        try database.write { db in
            var row = event
            try row.insert(db)
            return row
        }
    }

    /// Events in the order they were appended: after `afterID`, within [since, until], of
    /// the given types (all when empty), at most `limit`.
    public func events(afterID: Int64 = 0, since: Double? = nil, until: Double? = nil, types: [String] = [], limit: Int = 1000) throws -> [EventRow] {
        try database.read { db in
            var request = EventRow.filter(Column("id") > afterID)
            if let since { request = request.filter(Column("time") >= since) }
            if let until { request = request.filter(Column("time") <= until) }
            if !types.isEmpty { request = request.filter(types.contains(Column("type"))) }
            return try request.order(Column("id")).limit(limit).fetchAll(db)
        }
    }

    /// Writes the write-ahead log back into the database file (at shutdown).
    public func checkpoint() throws {
        _ = try database.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
    }
}

/// Writes queued by the engine's state writer, applied in one transaction.
public struct EngineWrites: Sendable {
    public var events: [EventRow] = []
    public var containers: [ContainerRow] = []
    public var deletedContainers: [String] = []
    /// Placements of the engine's forks and their releases, in the same transaction as the
    /// containers they belong to.
    public var placements: [PlacementRow] = []
    public var deletedPlacements: [Int] = []

    public init() {}
    public var isEmpty: Bool { events.isEmpty && containers.isEmpty && deletedContainers.isEmpty && placements.isEmpty && deletedPlacements.isEmpty }
}

extension StateStore {
    /// Applies a batch in order of kind: container rows, deletions, placements, then events.
    public func apply(_ writes: EngineWrites) throws {
        try database.write { db in
            for row in writes.containers { try row.upsert(db) }
            for id in writes.deletedContainers { _ = try ContainerRow.deleteOne(db, key: id) }
            try Self.apply(placements: writes.placements, deleted: writes.deletedPlacements, in: db)
            try Self.append(writes.events, in: db)
        }
    }

    /// Appends events with one prepared statement, kept by the connection (a record's
    /// `insert` builds its statement each time: most of the batch's cost at hundreds of
    /// launches a second, four events each).
    static func append(_ events: [EventRow], in db: Database) throws {
        guard !events.isEmpty else { return }
        let statement = try db.cachedStatement(sql: "INSERT INTO event (time, actor, type, subject, result, detail) VALUES (?, ?, ?, ?, ?, ?)")
        for event in events {
            try statement.execute(arguments: [event.time, event.actor, event.type, event.subject, event.result, event.detail])
        }
    }

    /// The id of the last event appended (0 when none).
    public func lastEventID() throws -> Int64 {
        try database.read { db in try Int64.fetchOne(db, sql: "SELECT max(id) FROM event") ?? 0 }
    }
}
