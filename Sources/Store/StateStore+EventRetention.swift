import Foundation
import GRDB

/// How much of the event log the database keeps. The log is append-only, but an agent that
/// launches thousands of containers a second appends four events each (~100 bytes a row in
/// SQLite): about 2 MB a second, unbounded. So, as vCenter keeps its events for a retention
/// period, the oldest events leave the database once there are more than `keptEvents` or
/// they are older than `maxAge` — in recorded purges only (`EventPurgeRow`), and written to
/// `archiveFolder` first when one is given.
public struct EventRetention: Sendable, Equatable {
    /// At most this many events stay in the database (by id: the newest `keptEvents` ids); nil: no cap.
    public var keptEvents: Int?
    /// Events older than this (seconds) leave it; nil: no age limit.
    public var maxAge: TimeInterval?
    /// Where purged events are written first, as JSON Lines (one file a purge,
    /// `events-FIRSTID.jsonl`); nil: they are dropped, and only the purge is recorded.
    public var archiveFolder: URL?

    public init(keptEvents: Int?, maxAge: TimeInterval?, archiveFolder: URL? = nil) {
        self.keptEvents = keptEvents
        self.maxAge = maxAge
        self.archiveFolder = archiveFolder
    }

    /// The daemon's default: a million events (~100 MB), at most 30 days old, no archive.
    public static let standard = EventRetention(keptEvents: 1_000_000, maxAge: 30 * 86_400)
    /// Every event stays.
    public static let keepAll = EventRetention(keptEvents: nil, maxAge: nil)

    /// Whether any event would ever leave the database.
    public var purges: Bool { keptEvents != nil || maxAge != nil }
}

/// One purge of the event log: the events with ids up to `throughID` left the database (the
/// database refuses to delete any other; see the migration). Append-only itself.
public struct EventPurgeRow: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "eventPurge"
    /// The last id purged; every id at or below it is gone.
    public var throughID: Int64
    /// The first id this purge removed, and how many events it removed.
    public var firstID: Int64
    public var count: Int
    /// The purged events' earliest and latest times.
    public var firstTime: Double
    public var lastTime: Double
    /// The archive file they were written to, or "" when dropped.
    public var archive: String
    public var purgedAt: Double
    /// "count" (over `keptEvents`) or "age" (over `maxAge`).
    public var reason: String
}

extension StateStore {
    static func registerEventRetentionMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v3: event log retention, in recorded purges") { db in
            try db.create(table: EventPurgeRow.databaseTableName) { t in
                t.primaryKey("throughID", .integer)
                t.column("firstID", .integer).notNull()
                t.column("count", .integer).notNull()
                t.column("firstTime", .double).notNull()
                t.column("lastTime", .double).notNull()
                t.column("archive", .text).notNull()
                t.column("purgedAt", .double).notNull()
                t.column("reason", .text).notNull()
            }
            // An event may leave the log only when a purge through its id is recorded; purges
            // only move forward, and are never changed or deleted.
            try db.execute(sql: """
                DROP TRIGGER eventNoDelete;
                CREATE TRIGGER eventNoDelete BEFORE DELETE ON event
                    WHEN OLD.id > coalesce((SELECT max(throughID) FROM eventPurge), 0)
                    BEGIN SELECT RAISE(ABORT, 'the event log is append-only: an event leaves it only in a recorded purge'); END;
                CREATE TRIGGER eventPurgeForward BEFORE INSERT ON eventPurge
                    WHEN NEW.throughID <= coalesce((SELECT max(throughID) FROM eventPurge), 0)
                    BEGIN SELECT RAISE(ABORT, 'event purges only move forward'); END;
                CREATE TRIGGER eventPurgeNoUpdate BEFORE UPDATE ON eventPurge BEGIN SELECT RAISE(ABORT, 'the purge record is append-only'); END;
                CREATE TRIGGER eventPurgeNoDelete BEFORE DELETE ON eventPurge BEGIN SELECT RAISE(ABORT, 'the purge record is append-only'); END;
                """)
        }
    }

    /// Every purge so far, oldest first.
    public func eventPurges() throws -> [EventPurgeRow] {
        try database.read { db in try EventPurgeRow.order(Column("throughID")).fetchAll(db) }
    }

    /// One step of `retention`: purges the oldest events beyond it, at most `atMost` of them
    /// (one transaction each: a step of 50,000 takes ~50 ms), writing them to the archive
    /// first when there is one. Nil when nothing is beyond it. Call again while it purges.
    ///
    /// Nothing is lost to a crash: the archive is written, synced and renamed into place
    /// before the transaction that records the purge and deletes the events. A crash between
    /// the two leaves an archive of events still in the database, which the next step writes
    /// again under the same name (its first id), whole.
    public func purgeEvents(_ retention: EventRetention, now: Double, atMost: Int = 50_000) throws -> EventPurgeRow? {
        guard retention.purges, atMost > 0 else { return nil }
        let plan: (first: Int64, through: Int64, reason: String)? = try database.read { db in
            guard let first = try Int64.fetchOne(db, sql: "SELECT min(id) FROM event"),
                  let last = try Int64.fetchOne(db, sql: "SELECT max(id) FROM event") else { return nil }
            let window = first + Int64(atMost) - 1
            let overCount = retention.keptEvents.map { last - Int64(max(0, $0)) } ?? 0
            // The last event older than the limit among this step's (by id, from the oldest):
            // none when the oldest is young, without a scan. "max(id) WHERE time < ?" over the
            // table walked it backwards from the newest, all of it when no event was old: a
            // scan of the 100 MB log every check, 15-20 µs of each launch at 5,000/s.
            let overAge = try retention.maxAge.flatMap { age -> Int64? in
                let cutoff = now - age
                guard let oldest = try Double.fetchOne(db, sql: "SELECT time FROM event WHERE id = ?", arguments: [first]), oldest < cutoff else { return nil }
                return try Int64.fetchOne(db, sql: "SELECT max(id) FROM event WHERE id BETWEEN ? AND ? AND +time < ?", arguments: [first, window, cutoff])
            } ?? 0
            let through = min(max(overCount, overAge), window)
            guard through >= first else { return nil }
            return (first, through, overCount >= overAge ? "count" : "age")
        }
        guard let plan else { return nil }
        // With an archive the events are read (and written out) first; without one, only
        // their count and time span, in SQLite (decoding ten thousand rows to drop them took
        // more than the delete).
        let archive = try retention.archiveFolder.map { folder in
            let events = try database.read { db in
                try EventRow.filter(Column("id") >= plan.first && Column("id") <= plan.through).order(Column("id")).fetchAll(db)
            }
            return try Self.archive(events, in: folder, firstID: plan.first)
        } ?? ""
        return try database.write { db -> EventPurgeRow? in
            guard let span = try Row.fetchOne(db, sql: "SELECT count(*), min(time), max(time) FROM event WHERE id BETWEEN ? AND ?",
                                              arguments: [plan.first, plan.through]),
                  let count = span[0] as Int?, count > 0 else { return nil }
            let purge = EventPurgeRow(throughID: plan.through, firstID: plan.first, count: count, firstTime: span[1] ?? now,
                                      lastTime: span[2] ?? now, archive: archive, purgedAt: now, reason: plan.reason)
            try purge.insert(db)
            try db.execute(sql: "DELETE FROM event WHERE id <= ?", arguments: [plan.through])
            return purge
        }
    }

    /// Writes `events` as JSON Lines to FOLDER/events-FIRSTID.jsonl (synced, then renamed
    /// into place and the folder synced) and returns its path.
    static func archive(_ events: [EventRow], in folder: URL, firstID: Int64) throws -> String {
        // Only the daemon's user reads the audit log's archives, as its database.
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = folder.appendingPathComponent("events-\(firstID).jsonl").path
        let temporary = path + ".partial"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var data = Data()
        for event in events {
            data.append(try encoder.encode(event))
            data.append(0x0A)
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.archive("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        // unsafe: write reads within the buffer's bounds, and the buffer outlives the closure's calls.
        let written = data.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let count = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return false }
                offset += count
            }
            return true
        }
        let reason = String(cString: strerror(errno))
        guard written, fsync(fd) == 0 else {
            close(fd)
            unlink(temporary)
            throw StoreError.archive("cannot write \(temporary): \(reason)")
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw StoreError.archive("cannot rename \(temporary) to \(path): \(reason)")
        }
        let folderFD = open(folder.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folderFD >= 0 {
            _ = fsync(folderFD)
            close(folderFD)
        }
        return path
    }
}

/// A store operation that failed outside SQLite.
public enum StoreError: Error, CustomStringConvertible {
    case archive(String)

    public var description: String {
        switch self {
        case .archive(let message): "event archive: \(message)"
        }
    }
}
