import Foundation
import HostSystem
import Logging
import Store
import Synchronization

/// Writes the engine's container rows and events to SQLite off the caller's path: callers
/// queue them (in call order) and one background queue applies whatever has gathered in one
/// transaction. `flush()` waits until everything queued so far is written (shutdown, and
/// readers of the event log that must see their own writes). Followers of the event log are
/// woken after each batch.
final class StateWriter: Sendable {
    private let store: StateStore
    private let logger: Logger
    /// False in a worker: the event log is the daemon's, which records each of a worker's
    /// containers' events itself (a worker's own were written and never read: two or three
    /// SQLite inserts per `run` in a profile of the worker).
    private let keepsEvents: Bool
    /// Every container thread and event loop queues here, several times a launch: a lock whose
    /// waiters sleep at once (`ThreadLock`). With a backlog's hundred container threads on two
    /// cores, this Mutex's spinning took a sixth of the cores (2026-12-07).
    private let pending = ThreadLock(Pending())
    /// SCHED_IDLE: a batch (1-4 ms of SQLite at 3,000 launches a second, every 100 ms or so)
    /// on a SCHED_BATCH thread held one of the two cores while launches queued behind it; at
    /// 3,200/s the p99 of six steps was 2.0-4.4 ms with it, 0.7-1.4 ms without (2026-12-07).
    /// It runs when a core is free; flushes are written by their callers, and a backlog past
    /// `backlogLimit` by the thread that queues to it, so that nothing waits on a starved thread.
    private let queue = BackgroundThread(name: "vmfork-state", policy: .idle)
    /// Held while a batch is taken and written: batches reach the database in the order queued,
    /// whoever writes them.
    private let drainLock = NSLock()
    let feed = EventFeed()
    /// How much of the event log the database keeps (`EventRetention`): applied on the
    /// writer's thread at the engine's start, every `retentionCheckEvery` events written, and
    /// with the first batch an hour after the last check (for the age limit).
    private let retention: EventRetention
    /// Events written since the last check, and when that was (seconds since 1970).
    private let retentionCheck: ThreadLock<(events: Int, at: TimeInterval)>
    /// Events written between checks of the retention (`retentionCheckEvery`; tests set it).
    private let checkEvery: Int

    private struct Pending {
        var writes = QueuedWrites()
        var scheduled = false
    }

    init(store: StateStore, logger: Logger, keepsEvents: Bool = true, retention: EventRetention = .keepAll,
         retentionCheckEvery: Int = StateWriter.retentionCheckEvery) {
        self.store = store
        self.logger = logger
        self.keepsEvents = keepsEvents
        self.retention = keepsEvents ? retention : .keepAll
        checkEvery = retentionCheckEvery
        retentionCheck = ThreadLock((0, Date().timeIntervalSince1970))
    }

    func enqueue(_ body: (inout QueuedWrites) -> Void) {
        let (schedule, backlog) = pending.withLock { state in
            body(&state.writes)
            defer { state.scheduled = true }
            return (!state.scheduled, state.writes.count > Self.backlogLimit)
        }
        // A short gathering window: a container's create, start, exit and removal usually land
        // in one transaction, and the writer takes less of the cores the containers run on.
        if schedule { queue.async(after: Self.window) { [self] in drainNow(holding: true) } }
        // The writer's thread got no core for seconds (the host saturated): written here.
        if backlog { drainNow(holding: true) }
    }

    /// Queued rows and events beyond which the thread that queues writes them itself
    /// (seconds of launches at thousands a second).
    static let backlogLimit = 20_000

    /// The gathering window of a batch.
    static let window = Duration.milliseconds(5)
    /// How long a run's container (`QueuedWrites.transient`) may live without a row.
    static let transientHold: TimeInterval = 0.1

    func event(_ event: EventRow) { enqueue { $0.events.append(event) } }

    /// `drain` under `drainLock`, on any thread.
    private func drainNow(holding: Bool) {
        drainLock.lock()
        defer { drainLock.unlock() }
        drain(holding: holding)
    }

    /// Writes what has gathered; with `holding`, a run's container younger than
    /// `transientHold` that is still there goes to the next batch instead (see `held`).
    /// Only under `drainLock`.
    private func drain(holding: Bool) {
        var writes = pending.withLock { state in
            defer { state = Pending() }
            return state.writes
        }
        let now = Date().timeIntervalSince1970
        if holding, let held = Self.held(from: &writes, now: now) {
            let schedule = pending.withLock { state in
                // Before what was queued since: its later states win.
                state.writes.containers.insert(contentsOf: held.containers, at: 0)
                state.writes.made.formUnion(held.ids)
                state.writes.transient.formUnion(held.ids)
                defer { state.scheduled = true }
                return !state.scheduled
            }
            // Nothing else queued: the next batch when the first of them is due, not every window.
            let due = (held.containers.map(\.createdAt).min() ?? now) + Self.transientHold - now
            if schedule { queue.async(after: max(Self.window, .milliseconds(Int(due * 1000) + 1))) { [self] in drainNow(holding: true) } }
        }
        if !keepsEvents { writes.events = [] }
        guard !writes.isEmpty else { return }
        do {
            try store.apply(Self.coalesced(writes))
        } catch {
            logger.error("state write failed: \(error)", metadata: ["events": "\(writes.events.count)", "containers": "\(writes.containers.count)"])
        }
        if !writes.events.isEmpty {
            feed.notify()
            noteWritten(events: writes.events.count, now: now)
        }
    }

    /// Events written between checks of the retention, and at most this long between checks
    /// while events are written (for the age limit).
    static let retentionCheckEvery = 10_000
    static let retentionCheckSeconds: TimeInterval = 3600

    private func noteWritten(events: Int, now: TimeInterval) {
        guard retention.purges else { return }
        let due = retentionCheck.withLock { check -> Bool in
            check.events += events
            guard check.events >= checkEvery || now - check.at >= Self.retentionCheckSeconds else { return false }
            check = (0, now)
            return true
        }
        if due { applyRetentionSoon() }
    }

    /// Applies the retention on the writer's thread, step by step until nothing is beyond it;
    /// each purge is recorded in the log itself ("events.purge") and in the store's purge table.
    func applyRetentionSoon() {
        guard retention.purges else { return }
        queue.async { [self] in applyRetentionNow() }
    }

    /// One purge at a time: two would plan the same range (and write one archive file).
    private let purgeLock = NSLock()

    /// Applies the retention on the caller's thread (the writer's, or a test's).
    func applyRetentionNow() {
        purgeLock.lock()
        defer { purgeLock.unlock() }
        do {
            while let purge = try store.purgeEvents(retention, now: Date().timeIntervalSince1970) {
                logger.info("event log purged", metadata: ["events": "\(purge.firstID)-\(purge.throughID)", "count": "\(purge.count)",
                                                           "reason": "\(purge.reason)", "archive": "\(purge.archive)"])
                var fields: [String: Any] = ["first": purge.firstID, "through": purge.throughID, "count": purge.count, "reason": purge.reason]
                if !purge.archive.isEmpty { fields["archive"] = purge.archive }
                let detail = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? ""
                event(EventRow(time: purge.purgedAt, actor: "engine", type: "events.purge", subject: "\(purge.firstID)-\(purge.throughID)",
                               result: "ok", detail: detail))
            }
        } catch {
            logger.error("event log purge failed: \(error)")
        }
    }

    /// Takes out of `writes` the runs' containers (made in this batch, to be removed at their
    /// run's end) that are neither removed yet nor older than `transientHold`: a run is
    /// usually removed a millisecond or two after it is made, and a fixed window cut about one
    /// run in four in two, its row written in one batch and deleted in the next (in a worker,
    /// whose writer keeps no events, those were its only writes). Their latest states, for
    /// the next batch; nil when there are none. A run's id reaches its caller only with its
    /// end, so none it knows of goes unwritten.
    static func held(from writes: inout QueuedWrites, now: TimeInterval) -> (ids: Set<String>, containers: [ContainerInfo])? {
        guard !writes.transient.isEmpty else { return nil }
        let deleted = Set(writes.deletedContainers)
        var latest: [String: ContainerInfo] = [:]
        for info in writes.containers where writes.transient.contains(info.id) && !deleted.contains(info.id) { latest[info.id] = info }
        let ids = Set(latest.values.filter { now - $0.createdAt < transientHold }.map(\.id))
        guard !ids.isEmpty else { return nil }
        writes.containers.removeAll { ids.contains($0.id) }
        writes.made.subtract(ids)
        writes.transient.subtract(ids)
        return (ids, ids.compactMap { latest[$0] })
    }

    /// The batch to write: only the last state of each container, and none for a container
    /// deleted in the same batch (its row would be written and deleted at once); nor its
    /// deletion when it was made in this batch too (it has no row to delete: a `run` of a
    /// short program, whose create, start, exit and removal usually land in one batch). Rows
    /// are encoded here, once per container and batch, not by each caller under the lock.
    static func coalesced(_ writes: QueuedWrites) -> EngineWrites {
        var result = EngineWrites()
        result.events = writes.events
        result.deletedContainers = writes.made.isEmpty ? writes.deletedContainers : writes.deletedContainers.filter { !writes.made.contains($0) }
        result.placements = writes.placements
        result.deletedPlacements = writes.deletedPlacements
        let deleted = Set(writes.deletedContainers)
        var seen = Set<String>()
        result.containers = writes.containers.reversed().filter { info in
            guard !deleted.contains(info.id) else { return false }
            return seen.insert(info.id).inserted
        }.reversed().map(ContainerRow.init(info:))
        return result
    }

    /// Runs `body` on the writer's own thread, after what is queued there (tests).
    func onWritersThread(_ body: @escaping @Sendable () -> Void) { queue.async(body) }

    /// Returns once everything queued before the call is in the database (written on the
    /// caller's thread: the writer's, SCHED_IDLE, may be waiting for a core).
    func flush() {
        drainNow(holding: false)
    }

    func flushAsync() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            // On a thread of normal policy that may block (SQLite), not the caller's executor.
            DispatchQueue.global().async { [self] in
                drainNow(holding: false)
                continuation.resume()
            }
        }
    }
}

/// What callers queue for the state writer: events, containers' states (in call order;
/// encoded as rows when written), deletions.
struct QueuedWrites {
    var events: [EventRow] = []
    var containers: [ContainerInfo] = []
    var deletedContainers: [String] = []
    /// Containers made since the last batch: none has a row yet.
    var made: Set<String> = []
    /// Of those, runs' containers removed at their run's end (`StateWriter.held`).
    var transient: Set<String> = []
    /// The placement service's rows for the engine's forks (`PlacementService.DeferredWrite`).
    var placements: [PlacementRow] = []
    var deletedPlacements: [Int] = []

    var isEmpty: Bool { events.isEmpty && containers.isEmpty && deletedContainers.isEmpty && placements.isEmpty && deletedPlacements.isEmpty }
    /// Rows and events queued.
    var count: Int { events.count + containers.count + deletedContainers.count + placements.count + deletedPlacements.count }
}

/// Wakes the followers of the event log when new events are written, and ends them when the
/// engine shuts down.
public final class EventFeed: Sendable {
    private struct State {
        var generation = 0
        var closed = false
        var waiters: [UUID: CheckedContinuation<Bool, Never>] = [:]
    }

    private let state = Mutex(State())

    /// The generation to pass to `wait(after:)`.
    public var generation: Int { state.withLock { $0.generation } }

    func notify() {
        let waiters = state.withLock { state in
            state.generation += 1
            defer { state.waiters = [:] }
            return state.waiters
        }
        for waiter in waiters.values { waiter.resume(returning: true) }
    }

    func close() {
        let waiters = state.withLock { state in
            state.closed = true
            defer { state.waiters = [:] }
            return state.waiters
        }
        for waiter in waiters.values { waiter.resume(returning: false) }
    }

    /// Waits until events newer than `generation` are written (true), the timeout passes
    /// (true: the caller looks again), or the feed closes or the task is cancelled (false).
    public func wait(after generation: Int, timeout: Duration = .seconds(1)) async -> Bool {
        let key = UUID()
        let timer = Task { [self] in
            try? await Task.sleep(for: timeout)
            resume(key, with: !Task.isCancelled)
        }
        defer { timer.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let immediate: Bool? = state.withLock { state in
                    if state.closed { return false }
                    if state.generation != generation { return true }
                    state.waiters[key] = continuation
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            resume(key, with: false)
        }
    }

    private func resume(_ key: UUID, with value: Bool) {
        let waiter = state.withLock { $0.waiters.removeValue(forKey: key) }
        waiter?.resume(returning: value)
    }

    public var isClosed: Bool { state.withLock { $0.closed } }
}
