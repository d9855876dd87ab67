import Foundation
import Synchronization

/// What became of a caller's connection a worker held (`CallerConnections`), told to the
/// server that handed it over (`Engine.handOverConnection`).
public enum HandedOverConnectionEnd: Sendable, Equatable {
    /// Given back, with the bytes the worker read of its next request (one it does not
    /// serve): the server serves the connection again, beginning with them.
    case returned(leftover: [UInt8])
    /// Closed: the caller closed it or left it idle, the worker could not go on with it, or
    /// the worker is gone.
    case closed
}

/// Callers' connections the daemon handed to its workers, by key, each with its worker and
/// whom to tell of its end.
final class HandedOverConnections: Sendable {
    private struct Entry {
        let shard: Int
        let ended: @Sendable (HandedOverConnectionEnd) -> Void
    }
    private struct State {
        var next: UInt64 = 1
        var entries: [UInt64: Entry] = [:]
    }
    private let state = Mutex(State())
    /// Connections held now (read without the lock before every request that is not a run).
    private let holding = Atomic<Int>(0)

    func add(shard: Int, ended: @escaping @Sendable (HandedOverConnectionEnd) -> Void) -> UInt64 {
        state.withLock { state in
            defer { state.next += 1 }
            state.entries[state.next] = Entry(shard: shard, ended: ended)
            holding.add(1, ordering: .releasing)
            return state.next
        }
    }

    /// Its end's callback, once.
    func end(_ key: UInt64) -> (@Sendable (HandedOverConnectionEnd) -> Void)? {
        state.withLock { state in
            guard let entry = state.entries.removeValue(forKey: key) else { return nil }
            holding.subtract(1, ordering: .releasing)
            return entry.ended
        }
    }

    /// The end callbacks of every connection `shard` holds, once.
    func endAll(on shard: Int) -> [@Sendable (HandedOverConnectionEnd) -> Void] {
        state.withLock { state in
            let keys = state.entries.filter { $0.value.shard == shard }.map(\.key)
            holding.subtract(keys.count, ordering: .releasing)
            return keys.compactMap { state.entries.removeValue(forKey: $0)?.ended }
        }
    }

    func count(on shard: Int) -> Int { state.withLock { $0.entries.values.filter { $0.shard == shard }.count } }

    /// The workers holding connections now (none: no lock taken).
    var shards: Set<Int> {
        guard holding.load(ordering: .acquiring) > 0 else { return [] }
        return state.withLock { Set($0.entries.values.map(\.shard)) }
    }
}

extension Engine {
    /// Hands a caller's connection to worker `shard` (the one that has just answered a run on
    /// it), which serves its requests from now on, beginning with `leftover` (bytes already
    /// read of the next one): runs it can serve itself, the rest it gives back (see
    /// `CallerConnections`). `fd` is the caller's own descriptor, which it keeps until `ended`;
    /// the worker gets a duplicate. `ended` hears, once, that the connection came back or
    /// closed (`.closed` too when the worker did not take it).
    public func handOverConnection(_ fd: Int32, shard: Int, actor: String, leftover: [UInt8],
                                   ended: @escaping @Sendable (HandedOverConnectionEnd) -> Void) async {
        guard let workers = workerSet, let connection = try? workers.connection(shard),
              workers.held.count(on: shard) < CallerConnections.limit else { return ended(.closed) }
        // Known before the frame goes: the worker may give it back at once.
        let key = workers.held.add(shard: shard, ended: ended)
        do {
            _ = try await connection.call("takeConnection", WorkerTakeConnection(key: key, actor: actor, leftover: Data(leftover)),
                                          as: WorkerNothing.self, passing: fd)
            metrics.connectionsHandedOver.increment()
        } catch {
            logger.warning("a caller's connection was not handed over", metadata: ["shard": "\(shard)", "error": "\(error)"])
            workers.held.end(key)?(.closed)
        }
    }

    /// Whether the workers serve runs (workers mode): a run's connection may then go to one.
    public var holdsConnectionsInWorkers: Bool { workerSet != nil }

    /// Returns once every worker holding callers' connections has had everything it wrote so
    /// far read here: a run it answered on one of them is then recorded (it tells the daemon
    /// before it answers), so a request that follows an answer finds the run's records. Without
    /// held connections this costs nothing.
    public func syncHandedOverConnections() async {
        guard let workers = workerSet else { return }
        let shards = workers.held.shards
        guard !shards.isEmpty else { return }
        await withTaskGroup(of: Void.self) { group in
            for shard in shards {
                guard let connection = try? workers.connection(shard) else { continue }
                group.addTask { _ = try? await connection.call("sync", WorkerNothing(), as: WorkerNothing.self) }
            }
        }
    }

    /// Has every worker close the callers' connections it holds (the engine's shutdown).
    func endHandedOverConnections() async {
        guard let workers = workerSet else { return }
        await withTaskGroup(of: Void.self) { group in
            for shard in workers.held.shards {
                guard let connection = try? workers.connection(shard) else { continue }
                group.addTask { _ = try? await connection.call("endConnections", WorkerNothing(), as: WorkerNothing.self) }
            }
        }
    }

    /// A worker's word about a connection it holds (on its stream's reader, in order).
    func handedOverConnectionEvent(_ event: String, frame: WorkerFrame, shard: Int) {
        let body = frame.member("body")
        switch event {
        case "callerRun":
            guard let run = WorkerQuick.callerRun(body) ?? (try? JSONDecoder().decode(WorkerEventMessage<WorkerCallerRun>.self, from: frame.data).body)
            else { return logger.warning("malformed callerRun from a worker", metadata: ["shard": "\(shard)"]) }
            callerRunBegan(run, shard: shard)
        case "connectionEnd":
            guard let (key, leftover) = WorkerQuick.connectionEnd(body) else {
                return logger.warning("malformed connectionEnd from a worker", metadata: ["shard": "\(shard)"])
            }
            workerSet?.held.end(key)?(leftover.map { .returned(leftover: $0) } ?? .closed)
        default:
            break
        }
    }

    /// Records a run a worker served on a connection it holds, as `createInWorker` and
    /// `runContainer` record one of their own: its container (transient: removed at its end),
    /// its create and start (once: a run told at a sync while it ran is told again at its end),
    /// then its end and removal when the message has them.
    private func callerRunBegan(_ run: WorkerCallerRun, shard: Int) {
        let info = run.info
        let made = ManagedContainer(info: info, logFolder: containerFolders.path(of: info.id, run: true), vm: nil, stdinWriter: -1, family: nil, shard: shard)
        let (container, isNew) = registry.withLock { registry -> (ManagedContainer, Bool) in
            if let known = registry.containers[info.id] { return (known, false) }
            registry.containers[info.id] = made
            if registry.names[info.name] == nil { registry.names[info.name] = info.id }
            registry.forks += 1
            return (made, true)
        }
        if isNew {
            if let micros = info.forkMicroseconds { metrics.forkLatency.record(duration: .nanoseconds(Int64(micros * 1000))) }
            metrics.forks.increment()
            metrics.runsOnHandedOverConnections.increment()
            writer.enqueue { writes in
                writes.containers.append(info)
                writes.made.insert(info.id)
                writes.transient.insert(info.id)
            }
            record("container.create", subject: info.id, actor: run.actor)
            record("container.start", subject: info.id, actor: run.actor)
        }
        if let exit = run.exit { finishRemote(container, exit) }
        guard run.removed else { return }
        container.removedThere()
        // The worker removed it: nothing here waits (no placement, no worker call), so the
        // records are made before the next frame is read.
        Task.immediate { [self] in
            do {
                try await remove(container, awaitWorker: false)
                record("container.remove", subject: info.id, actor: run.actor)
            } catch {
                logger.debug("a caller's run was removed already", metadata: ["container": "\(info.id)"])
            }
        }
    }
}
