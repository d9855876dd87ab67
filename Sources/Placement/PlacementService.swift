import Foundation
import Store
import Synchronization

/// The placement core behind a lock, with every change written to the SQLite store before
/// it is visible. This is what host agents, the RPC API and the command-line tool call: any
/// number of tasks may place concurrently, and no host or pool is ever oversubscribed
/// because each decision and its charge happen under one lock.
///
/// Reservations carry a lease. One that is neither committed nor released before its lease
/// runs out (its holder crashed between reserve and commit) is reclaimed: when the service
/// opens, by `reclaimExpired()`, and before a refusal that reclaiming could avoid.
public final class PlacementService: Sendable {
    private let state: Mutex<PlacementCore>
    public let store: StateStore
    /// How long a reservation may wait for its commit.
    public let leaseSeconds: Double
    private let clock: @Sendable () -> Double
    /// Where `placeAndCommit`'s and `release`'s rows go instead of a write of their own: the
    /// caller's write-behind queue (the engine's, which writes them in one transaction with
    /// the rows of the containers they belong to). Nil: written before the call returns.
    public typealias DeferredWrite = @Sendable (StateChanges) -> Void
    private let deferredWrite: DeferredWrite?

    /// The state folder used when none is given: `$VMFORK_STATE`, else `state/` here.
    public static var defaultFolder: URL {
        URL(fileURLWithPath: ProcessInfo.processInfo.environment["VMFORK_STATE"] ?? "state", isDirectory: true)
    }

    /// Opens the store and rebuilds the state it holds; reservations whose lease ran out
    /// while nobody was running are deleted first, so they are never charged again.
    /// `clock` gives seconds since 1970 (tests move it by hand).
    public init(store: StateStore, leaseSeconds: Double = 30, selection: PlacementCore.Selection = .indexed,
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }, deferredWrite: DeferredWrite? = nil) throws {
        self.store = store
        self.deferredWrite = deferredWrite
        self.leaseSeconds = leaseSeconds
        self.clock = clock
        _ = try store.deleteExpiredReservations(now: clock())
        state = Mutex(try PlacementCore(snapshot: try store.snapshot(), selection: selection))
    }

    public convenience init(folder: URL = PlacementService.defaultFolder, leaseSeconds: Double = 30) throws {
        try self.init(store: try StateStore(folder: folder), leaseSeconds: leaseSeconds)
    }

    /// Runs `body` on the current state (reports, explanations).
    public func read<T: Sendable>(_ body: (borrowing PlacementCore) throws -> T) rethrows -> T {
        try state.withLock { core in try body(core) }
    }

    /// Applies an administrative change to a copy, writes its rows, then publishes the copy:
    /// a refused change or a failed write leaves both the state and the store as they were.
    private func change<R>(_ body: (inout PlacementCore) throws -> R, rows: (PlacementCore, R) -> StateChanges) throws -> R {
        try state.withLock { core in
            var next = core
            let result = try body(&next)
            try store.write(rows(next, result))
            core = next
            return result
        }
    }

    public func addPool(_ spec: PoolSpec) throws {
        try change({ core in try core.addPool(spec) }, rows: { core, _ in Self.poolRows(core, [spec.name]) })
    }

    public func updatePool(_ spec: PoolSpec) throws {
        try change({ core in try core.updatePool(spec) }, rows: { core, _ in Self.poolRows(core, [spec.name]) })
    }

    public func addImage(_ spec: ImageCost) throws {
        try change({ core in try core.addImage(spec) }, rows: { core, _ in Self.imageRows(core, [spec.name]) })
    }

    /// Records the growth per child the fork engine measured for an image.
    public func setGrowth(image: String, growthPerChildKiB: Int) throws {
        try change({ core in try core.setGrowth(image: image, growthPerChildKiB: growthPerChildKiB) },
                   rows: { core, _ in Self.imageRows(core, [image]) })
    }

    /// Takes the fork engine's measured figures for an image (either may be nil: kept), in one change.
    public func setMeasured(image: String, parentMemoryKiB: Int?, growthPerChildKiB: Int?) throws {
        try change({ core in
            if let parentMemoryKiB { try core.setParentMemory(image: image, parentMemoryKiB: parentMemoryKiB) }
            if let growthPerChildKiB { try core.setGrowth(image: image, growthPerChildKiB: growthPerChildKiB) }
        }, rows: { core, _ in Self.imageRows(core, [image]) })
    }

    /// Registers a host together with the warm parents it already holds.
    public func addHost(_ spec: HostSpec, warmParents: [WarmParentSite] = []) throws {
        try change({ core in
            try core.addHost(spec)
            for parent in warmParents { try core.addWarmParent(parent) }
        }, rows: { core, _ in
            var rows = StateChanges()
            rows.hosts = [spec.row(position: core.hostIndex[spec.name]!)]
            rows.nodes = spec.nodeRows
            rows.warmParents = Self.warmParentRows(core, last: warmParents.count)
            return rows
        })
    }

    public func addWarmParent(_ parent: WarmParentSite) throws {
        try change({ core in try core.addWarmParent(parent) }, rows: { core, _ in
            var rows = StateChanges()
            rows.warmParents = Self.warmParentRows(core, last: 1)
            return rows
        })
    }

    public func setHealth(host: String, healthy: Bool) throws {
        try change({ core in try core.setHealth(host: host, healthy: healthy) }, rows: { core, _ in
            var rows = StateChanges()
            let h = core.hostIndex[host]!
            rows.hosts = [core.hosts[h].row(position: h)]
            return rows
        })
    }

    /// Loads a whole fleet (a profile's hosts, images, pools and warm parents) in one
    /// transaction: all of it or, on the first refusal, none of it.
    public func load(_ plan: FleetPlan) throws {
        try change({ core in try plan.apply(to: &core) }, rows: { core, _ in
            var rows = StateChanges()
            rows.hosts = plan.hosts.map { $0.row(position: core.hostIndex[$0.name]!) }
            rows.nodes = plan.hosts.flatMap(\.nodeRows)
            rows.images = Self.imageRows(core, plan.images.map(\.name)).images
            rows.pools = Self.poolRows(core, plan.pools.map(\.name)).pools
            rows.warmParents = Self.warmParentRows(core, last: plan.warmParents.count)
            return rows
        })
    }

    private static func poolRows(_ core: PlacementCore, _ names: [String]) -> StateChanges {
        var rows = StateChanges()
        rows.pools = names.map { name in
            let p = core.pools.indexByName[name]!
            return core.pools.specs[p].row(position: p)
        }
        return rows
    }

    private static func imageRows(_ core: PlacementCore, _ names: [String]) -> StateChanges {
        var rows = StateChanges()
        rows.images = names.map { name in
            let i = core.imageIndex[name]!
            return core.images[i].row(position: i)
        }
        return rows
    }

    private static func warmParentRows(_ core: PlacementCore, last count: Int) -> [WarmParentRow] {
        let parents = core.warmParents
        return (parents.count - count..<parents.count).map { parents[$0].row(position: $0) }
    }

    // MARK: Decisions

    /// Places a fork and holds its capacity for `leaseSeconds` until `commit` or `release`.
    public func reserve(pool: String, image: String, allowColdStart: Bool = true, memoryKiB: Int? = nil) throws -> Placement {
        try state.withLock { core in
            let placement = try reserve(&core, pool: pool, image: image, allowColdStart: allowColdStart, memoryKiB: memoryKiB)
            var rows = StateChanges()
            rows.placements = [placement.row]
            do {
                try store.write(rows)
            } catch {
                try core.release(placement.id)
                throw error
            }
            return placement
        }
    }

    /// The fork started: the reservation becomes a placement with no lease.
    public func commit(_ id: Int) throws -> Placement {
        try state.withLock { core in
            let reserved = try core.placement(id)
            let committed = try core.commit(id)
            var rows = StateChanges()
            rows.placements = [committed.row]
            do {
                try store.write(rows)
            } catch {
                try core.release(id)
                try core.restore(reserved)
                throw error
            }
            return committed
        }
    }

    /// Places a fork and commits it at once, in one state write (what a reserve and a commit
    /// do in two): for a caller that forks right away, such as the engine's container create.
    public func placeAndCommit(pool: String, image: String, allowColdStart: Bool = true, memoryKiB: Int? = nil) throws -> Placement {
        try state.withLock { core in
            let reserved = try reserve(&core, pool: pool, image: image, allowColdStart: allowColdStart, memoryKiB: memoryKiB)
            let committed: Placement
            do { committed = try core.commit(reserved.id) } catch {
                try core.release(reserved.id)
                throw error
            }
            var rows = StateChanges()
            rows.placements = [committed.row]
            if let deferredWrite {
                deferredWrite(rows)  // under the lock: queued in the order the core changed
                return committed
            }
            do {
                try store.write(rows)
            } catch {
                try core.release(committed.id)
                throw error
            }
            return committed
        }
    }

    /// A reservation in `core` (not yet written), with a second try after reclaiming expired
    /// leases: capacity held by reservations whose holder vanished may be what is missing.
    private func reserve(_ core: inout PlacementCore, pool: String, image: String, allowColdStart: Bool, memoryKiB: Int?) throws -> Placement {
        let lease = clock() + leaseSeconds
        do throws(PlacementError) {
            return try core.reserve(pool: pool, image: image, allowColdStart: allowColdStart, leaseExpiresAt: lease, memoryKiB: memoryKiB)
        } catch let refusal {
            switch refusal {
            case .poolRefused, .noHostFits: guard try reclaimExpired(&core) > 0 else { throw refusal }
            default: throw refusal
            }
            return try core.reserve(pool: pool, image: image, allowColdStart: allowColdStart, leaseExpiresAt: lease, memoryKiB: memoryKiB)
        }
    }

    /// Gives back exactly what the placement was charged.
    @discardableResult
    public func release(_ id: Int) throws -> Placement {
        try state.withLock { core in
            let released = try core.release(id)
            var rows = StateChanges()
            rows.deletedPlacements = [id]
            if let deferredWrite {
                deferredWrite(rows)
                return released
            }
            do {
                try store.write(rows)
            } catch {
                try core.restore(released)
                throw error
            }
            return released
        }
    }

    /// Releases every uncommitted reservation whose lease has run out; returns how many.
    @discardableResult
    public func reclaimExpired() throws -> Int {
        try state.withLock { core in try reclaimExpired(&core) }
    }

    private func reclaimExpired(_ core: inout PlacementCore) throws -> Int {
        let now = clock()
        let expired = core.expiredReservations(now: now)
        guard !expired.isEmpty else { return 0 }
        var rows = StateChanges()
        rows.deletedPlacements = expired
        try store.write(rows)
        for id in expired { try core.release(id) }
        return expired.count
    }
}
