import Foundation
import HostSystem
import KVM
import Logging
import Metrics
import Store
import Synchronization

/// What an engine tells whoever watches it (a worker's server, which passes it to the daemon).
struct EngineObservers: Sendable {
    /// A container ended: its info (exited), what KVM counted for its run, and the container
    /// (its log files, for a run answered with its output).
    var exit: (@Sendable (ContainerInfo, VCPUCounters?, ManagedContainer) -> Void)?
    /// An event the engine recorded.
    var event: (@Sendable (EventRow) -> Void)?

    init(exit: (@Sendable (ContainerInfo, VCPUCounters?, ManagedContainer) -> Void)? = nil, event: (@Sendable (EventRow) -> Void)? = nil) {
        self.exit = exit
        self.event = event
    }
}

/// One engine worker as `GET /v1/workers` shows it.
public struct WorkerInfo: Codable, Sendable, Equatable {
    public var shard: Int
    /// Its process id, while it is connected.
    public var pid: Int32?
    public var connected: Bool
    /// Containers created or running in it.
    public var liveContainers: Int
    /// The parent policies placed on it.
    public var parents: [String]
    /// Times this daemon started it again after it died.
    public var restarts: Int
    /// What the worker says of itself (its process, confinement and VMs); nil when it is not
    /// connected or did not answer.
    public var process: WorkerProcessStatus?
}

/// How an engine runs: in one process (the daemon holds the VMs), as the control plane of
/// worker processes, or as one of those workers.
public struct EngineOptions: Sendable {
    /// Set in the daemon: the VMs live in this many worker processes.
    public var workers: WorkerSettings?
    /// Set in a worker: its shard number.
    public var workerShard: Int?
    /// Where containers' log files go (a worker writes into its daemon's folder).
    public var containersFolder: URL?
    /// Where runs' log folders go (`ContainerFolders`); nil: the state folder's own on tmpfs
    /// (`ContainerFolders.runsFolder`), or the kept containers' folder when there is none.
    public var runsFolder: URL?
    /// Containers serve their non-blocking system calls through the engine's polling thread
    /// (no VM exit; it spins while they make calls); false: every call is a VM exit.
    public var pollsSystemCalls: Bool
    /// Containers' programs have their `mov eax, N; syscall` pairs rewritten as they are
    /// loaded, so those calls skip PVM's SYSCALL switch (`ProcessVMConfiguration.rewritesSystemCalls`).
    public var rewritesSystemCalls: Bool
    /// Containers' programs may buffer their writes to a log in the program, without an exit
    /// (`ProcessVMConfiguration.buffersOutput`).
    public var buffersOutput: Bool
    /// Container threads made at start and kept however long idle (`RunnerThreads`); the
    /// daemon keeps `EngineOptions.daemonContainerThreads`. 0: each is made when first needed
    /// and ends after 10 s idle.
    public var containerThreadsKept = 0
    /// The daemon's kept container threads: a burst of 64 runs at once (each beyond a
    /// connection's own loop on a thread of its own) makes none.
    public static let daemonContainerThreads = 64
    /// How much of the event log the database keeps (a worker keeps none).
    public var eventRetention = EventRetention.standard

    public init(workers: WorkerSettings? = nil, workerShard: Int? = nil, containersFolder: URL? = nil, runsFolder: URL? = nil, pollsSystemCalls: Bool = true,
                rewritesSystemCalls: Bool = true, buffersOutput: Bool = true) {
        self.workers = workers
        self.workerShard = workerShard
        self.containersFolder = containersFolder
        self.runsFolder = runsFolder
        self.pollsSystemCalls = pollsSystemCalls
        self.rewritesSystemCalls = rewritesSystemCalls
        self.buffersOutput = buffersOutput
    }
}

// MARK: - The worker's side

extension Engine {
    /// The engine of worker `shard` of the daemon on `stateFolder`: its own state in
    /// STATE/workers/N/, its containers' logs in STATE/containers/ (where the daemon reads them).
    public static func worker(stateFolder: URL, shard: Int, logger: Logger, rewritesSystemCalls: Bool = true, buffersOutput: Bool = true) throws -> Engine {
        try Engine(stateFolder: stateFolder.appendingPathComponent("workers/\(shard)", isDirectory: true), logger: logger,
                   metricsFactory: NOOPMetricsHandler.instance,
                   options: EngineOptions(workerShard: shard, containersFolder: stateFolder.appendingPathComponent("containers", isDirectory: true),
                                          runsFolder: ContainerFolders.runsFolder(stateFolder: stateFolder).folder,
                                          rewritesSystemCalls: rewritesSystemCalls, buffersOutput: buffersOutput))
    }

    func setObservers(_ observers: EngineObservers) { self.observers.withLock { $0 = observers } }

    /// Takes the daemon's record of an image (kept in this worker's state, so that its
    /// parents can be made again after a restart of the worker).
    func adopt(image: ImageRecord) async throws {
        if registry.withLock({ $0.images[image.name] }) == image { return }
        try await store.save(image: image.row)
        registry.withLock { $0.images[image.name] = image }
    }

    /// Records the daemon's policy here and makes its parents (once).
    func ensureParents(_ policy: ParentPolicy, image: ImageRecord) async throws -> ParentInfo {
        try await adopt(image: image)
        if registry.withLock({ $0.policies[policy.id] }) != policy {
            try await store.save(policy: policy.row(createdAt: Date().timeIntervalSince1970))
            registry.withLock { $0.policies[policy.id] = policy }
        }
        return try await family(for: policy).info()
    }
}

// MARK: - The daemon's side

extension Engine {
    var workersMode: Bool { workerSet != nil }

    /// The workers (empty when this process holds the VMs itself), each with what it says of
    /// itself (`sharing`: with the measured memory of its parents and children, a page walk,
    /// which placement then takes: see `adoptMeasuredFigures`).
    public func workers(withSharing sharing: Bool = false) async -> [WorkerInfo] {
        guard let workers = workerSet else { return [] }
        let statuses = await withTaskGroup(of: (Int, WorkerProcessStatus?).self) { group in
            for connection in workers.connections {
                group.addTask { (connection.shard, try? await connection.call("status", WorkerStatusRequest(sharing: sharing), as: WorkerProcessStatus.self)) }
            }
            var statuses: [Int: WorkerProcessStatus] = [:]
            for await (shard, status) in group { statuses[shard] = status }
            return statuses
        }
        if sharing { await adoptMeasuredFigures(Array(statuses.values)) }
        let live = registry.withLock { registry in registry.containers.values.compactMap { $0.isLive ? $0.shard : nil } }
        let connections = Dictionary(uniqueKeysWithValues: workers.connections.map { ($0.shard, $0) })
        return (0..<workers.count).map { shard in
            let connection = connections[shard]
            return WorkerInfo(shard: shard, pid: connection?.pid, connected: connection != nil, liveContainers: live.filter { $0 == shard }.count,
                              parents: workers.policies(on: shard).sorted(), restarts: workers.restarts(shard), process: statuses[shard])
        }
    }

    /// The per-worker gauges of the metrics page, labelled worker="N" (called before each
    /// scrape; nothing without workers).
    public func refreshWorkerMetrics() async {
        guard let workerSet else { return }
        // The pollers are the workers': the engine's poller figure is their sum, each one's
        // is labelled with its worker.
        var pollerSeconds: Double?
        for connection in workerSet.connections {
            guard let thread = connection.pollerThread, let seconds = CPUTime.ofThread(thread, of: connection.pid) else { continue }
            metrics.gauge("vmfork_worker_thread_cpu_seconds", [("worker", "\(connection.shard)"), ("thread", "poller")]).record(seconds)
            pollerSeconds = (pollerSeconds ?? 0) + seconds
        }
        if let pollerSeconds { metrics.gauge("vmfork_thread_cpu_seconds", [("thread", "poller")]).record(pollerSeconds) }
        for connection in workerSet.connections {
            for (op, count) in connection.requestsSent {
                metrics.gauge("vmfork_worker_requests", [("worker", "\(connection.shard)"), ("op", op)]).record(count)
            }
        }
        for worker in await workers() {
            let dimensions = [("worker", "\(worker.shard)")]
            metrics.gauge("vmfork_worker_up", dimensions).record(worker.connected ? 1 : 0)
            metrics.gauge("vmfork_worker_restarts", dimensions).record(worker.restarts)
            metrics.gauge("vmfork_worker_containers_live", dimensions).record(worker.liveContainers)
            metrics.gauge("vmfork_worker_parent_policies", dimensions).record(worker.parents.count)
            guard let process = worker.process else { continue }
            metrics.gauge("vmfork_worker_rss_bytes", dimensions).record(process.rssKiB << 10)
            metrics.gauge("vmfork_worker_threads", dimensions).record(process.threads)
            metrics.gauge("vmfork_worker_vms", dimensions).record(process.parents + process.readyVMs + process.liveChildren)
            metrics.gauge("vmfork_worker_parents", dimensions).record(process.parents)
            metrics.gauge("vmfork_worker_ready_vms", dimensions).record(process.readyVMs)
            metrics.gauge("vmfork_worker_live_children", dimensions).record(process.liveChildren)
            metrics.gauge("vmfork_worker_seccomp", dimensions).record(process.seccomp)
            if let poller = process.poller {
                metrics.gauge("vmfork_worker_poller_calls_served", dimensions).record(poller.callsServed)
                metrics.gauge("vmfork_worker_poller_back_offs", dimensions).record(poller.backOffs)
                metrics.gauge("vmfork_worker_poller_unprofitable_back_offs", dimensions).record(poller.unprofitableBackOffs)
            }
        }
    }

    /// Connects to the workers on this state folder that still run (a daemon that died left
    /// them) and starts the others; rebuilds the view of every container from what they hold:
    /// running ones stay running, ones that ended meanwhile get their real status, ones no
    /// worker holds are recorded as stopped. Call once, before serving.
    public func startWorkers() async throws {
        guard let workers = workerSet else { return }
        for shard in 0..<workers.count { try await bringUp(shard) }
        // Each measurement goes to the workers at once (and every 2 s to one that lacks it,
        // `watchMemoryPressure`): until then a worker's poller polls without judging.
        costsProbe?.whenMeasured { [weak self] _ in Task { await self?.sendCostsToWorkers(workers) } }
        await sendCostsToWorkers(workers)
        let leftovers = registry.withLock { registry -> [ManagedContainer] in
            defer { registry.unreconciled = [] }
            return registry.unreconciled.compactMap { registry.containers[$0] }
        }
        for container in leftovers where container.exit == nil {
            var info = container.info
            info.exitCode = 137
            info.exitReason = "stopped: the daemon restarted and no worker holds it"
            finishRemote(container, WorkerExit(info: info), eventType: "container.stopped")
        }
    }

    /// Connects to shard `shard`'s worker, starting it when none answers, and takes its view.
    func bringUp(_ shard: Int) async throws {
        guard let workers = workerSet else { return }
        let path = workers.socketPath(shard)
        var connection = try? WorkerConnection(shard: shard, socketPath: path)
        if connection == nil {
            let pid = try workers.spawn(shard, stateFolder: stateFolder)
            record("worker.start", subject: "\(shard)", actor: "engine", detail: "{\"pid\":\(pid)}")
            let deadline = ContinuousClock.now + .seconds(30)
            while connection == nil {
                try await Task.sleep(for: .milliseconds(10))
                connection = try? WorkerConnection(shard: shard, socketPath: path)
                if connection != nil { break }
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    workers.forgetChild(shard)
                    throw EngineError(.failed, "worker \(shard) \(describeWaitStatus(status)) at start (see \(workers.logPath(shard)))")
                }
                if ContinuousClock.now > deadline {
                    throw EngineError(.failed, "worker \(shard) (pid \(pid)) did not listen on \(path) within 30 s (see \(workers.logPath(shard)))")
                }
            }
        }
        guard let connection else { return }
        try await connection.startReading(
            with: workers.settings.reader,
            onEvent: { [weak self] event, frame in self?.workerEvent(event, frame: frame, shard: shard) },
            onClose: { [weak self] why in self?.workerLost(connection, why: why) })
        let hello = try await connection.call("hello", WorkerNothing(), as: WorkerHello.self)
        connection.pid = hello.pid
        connection.version = hello.version
        if let thread = hello.pollerThread {
            raisePollerPriority(thread, of: hello.pid, shard: shard)
            connection.pollerThread = thread
        }
        workers.set(connection, shard: shard)
        for parent in hello.parents { workers.assign(parent.id, to: shard) }
        reconcile(hello.containers, shard: shard, connection: connection)
        logger.info("worker connected", metadata: ["shard": "\(shard)", "pid": "\(hello.pid)", "containers": "\(hello.containers.count)",
                                                   "parents": "\(hello.parents.count)"])
    }

    /// Gives a worker's system-call poller the priority an engine gives its own (nice -10: guests
    /// spin while they wait for it; at normal priority it shared a core with the vCPU it
    /// served, and a fork through a worker took ~1.3× as long). The worker holds no
    /// CAP_SYS_NICE, so the daemon does it, for a thread it checks is the worker's.
    private func raisePollerPriority(_ thread: Int32, of pid: Int32, shard: Int) {
        guard thread > 0, access("/proc/\(pid)/task/\(thread)", F_OK) == 0 else {
            logger.warning("worker named a poller thread that is not its own", metadata: ["shard": "\(shard)", "thread": "\(thread)"])
            return
        }
        if setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(thread), -10) != 0 {
            logger.notice("worker's poller keeps normal priority", metadata: ["shard": "\(shard)", "error": "\(String(cString: strerror(errno)))"])
        }
    }

    /// Takes a worker's containers into the view: known ones get its state; ones this daemon
    /// has no record of (a daemon killed within the state writer's few milliseconds after it
    /// answered their create) are taken as the worker holds them, without their placement.
    private func reconcile(_ containers: [ContainerInfo], shard: Int, connection: WorkerConnection) {
        var adopted = 0
        for info in containers {
            let (known, isNew) = registry.withLock { registry -> (ManagedContainer, Bool) in
                registry.unreconciled.remove(info.id)
                if let known = registry.containers[info.id] { return (known, false) }
                // Taken as running until its exit is recorded below (with its event), if it has ended.
                var running = info
                if running.state == .exited { running.state = .running }
                let managed = ManagedContainer(info: running, logFolder: containerFolders.existingPath(of: info.id),
                                               vm: nil, stdinWriter: -1, family: nil, shard: shard)
                registry.containers[info.id] = managed
                if registry.names[info.name] == nil { registry.names[info.name] = info.id }
                return (managed, true)
            }
            if isNew {
                adopted += 1
                if info.state != .exited { writer.enqueue { $0.containers.append(info) } }
            }
            known.setShard(shard)
            if info.state == .exited {
                finishRemote(known, WorkerExit(info: info))
            } else if known.applyRemote(info) {
                writer.enqueue { $0.containers.append(known.info) }
            }
        }
        if adopted > 0 { logger.notice("took containers no daemon had recorded", metadata: ["shard": "\(shard)", "count": "\(adopted)"]) }
    }

    /// An event frame from a worker (on its connection's reader thread, in order).
    private func workerEvent(_ event: String, frame: WorkerFrame, shard: Int) {
        let decoder = JSONDecoder()
        switch event {
        case "exit":
            guard let exit = WorkerQuick.exit(frame.member("body")) ?? (try? decoder.decode(WorkerEventMessage<WorkerExit>.self, from: frame.data).body)
            else { return }
            let container = registry.withLock { registry -> ManagedContainer? in
                if let container = registry.containers[exit.info.id], !registry.exitsHeld.contains(exit.info.id) { return container }
                // Its create reply is still on its way to the caller, or its start is not
                // recorded yet: applied at registration, or once it is.
                registry.parkedExits[exit.info.id] = exit
                return nil
            }
            if let container { finishRemote(container, exit) }
        case "event":
            guard var row = try? decoder.decode(WorkerEventMessage<EventRow>.self, from: frame.data).body else { return }
            row.id = nil
            writer.event(row)
        case "callerRun", "connectionEnd":
            handedOverConnectionEvent(event, frame: frame, shard: shard)
        default:
            logger.warning("unknown worker event", metadata: ["event": "\(event)"])
        }
    }

    /// Records a remote container's end (once, however many reports of it come).
    func finishRemote(_ container: ManagedContainer, _ exit: WorkerExit, eventType: String = "container.exit") {
        let reported = ExitInfo(exitCode: exit.info.exitCode ?? 137, reason: exit.info.exitReason ?? "exited")
        guard let (info, wake) = container.finishOnce(reported, at: exit.info.finishedAt ?? Date().timeIntervalSince1970,
                                                       startedAt: exit.info.startedAt) else { return }
        defer { wake() }
        metrics.exits.increment()
        if let exits = exit.vmExits {
            metrics.vmExits.increment(by: Int(exits))
            metrics.vmExitsPerContainer.record(Int(exits))
        }
        if let faults = exit.pageFaults { metrics.pageFaults.increment(by: Int(faults)) }
        if let emulated = exit.emulatedInstructions { metrics.emulatedInstructions.increment(by: Int(emulated)) }
        let detail = eventType == "container.exit" ? "{\"exitCode\":\(reported.exitCode)}" : "{\"reason\":\(Self.jsonString(reported.reason))}"
        let event = EventRow(time: info.finishedAt ?? 0, actor: "engine", type: eventType, subject: info.id, result: "ok", detail: detail)
        writer.enqueue { writes in
            writes.containers.append(info)
            writes.events.append(event)
        }
    }

    static func jsonString(_ text: String) -> String {
        (try? String(decoding: JSONEncoder().encode(text), as: UTF8.self)) ?? "\"\""
    }

    /// A worker's connection ended: when the worker died, its containers are recorded as
    /// exited with the reason, and it is started again (its parents are made again by policy).
    private func workerLost(_ connection: WorkerConnection, why: String) {
        guard let workers = workerSet, workers.drop(connection) else { return }
        let shard = connection.shard
        // The callers' connections it held went with it.
        for ended in workers.held.endAll(on: shard) { ended(.closed) }
        let pid = connection.pid
        var how = why
        if let child = workers.childPID(shard), child == pid {
            // Our own child: reap it and say how it ended (it is ending, so this is short).
            var status: Int32 = 0
            for _ in 0..<500 {
                let reaped = waitpid(pid, &status, WNOHANG)
                if reaped == pid {
                    how = describeWaitStatus(status)
                    workers.forgetChild(shard)
                    break
                }
                if reaped < 0 { break }
                usleep(10_000)
            }
        }
        let reason = "its worker (shard \(shard), pid \(pid)) died: \(how)"
        let victims = registry.withLock { registry in registry.containers.values.filter { $0.shard == shard && $0.exit == nil } }
        for container in victims {
            var info = container.info
            info.exitCode = 137
            info.exitReason = reason
            finishRemote(container, WorkerExit(info: info))
        }
        let stopping = workers.isStopping || !registry.withLock({ $0.accepting })
        record("worker.exit", subject: "\(shard)", actor: "engine",
               detail: "{\"pid\":\(pid),\"reason\":\(Self.jsonString(how)),\"containers\":\(victims.count)}")
        guard !stopping else { return }
        logger.error("worker died", metadata: ["shard": "\(shard)", "pid": "\(pid)", "how": "\(how)", "containers": "\(victims.count)"])
        Task { await restartWorker(shard) }
    }

    /// Starts a dead worker again (backing off while it fails), then makes its parents.
    private func restartWorker(_ shard: Int) async {
        guard let workers = workerSet else { return }
        var delay = Duration.milliseconds(50)
        while !workers.isStopping {
            try? await Task.sleep(for: delay)
            do {
                try await bringUp(shard)
                let attempt = workers.countRestart(shard)
                record("worker.restart", subject: "\(shard)", actor: "engine", detail: "{\"restarts\":\(attempt)}")
                break
            } catch {
                logger.error("worker restart failed", metadata: ["shard": "\(shard)", "error": "\(error)"])
                delay = min(delay * 2, .seconds(5))
            }
        }
        await warmUpRemote(shard: shard)
    }

    /// Makes the parents of every policy placed on `shard` (or on any shard when nil).
    func warmUpRemote(shard: Int? = nil) async {
        guard let workers = workerSet else { return }
        let (policies, images) = registry.withLock { (Array($0.policies.values), $0.images) }
        for policy in policies.sorted(by: { $0.id < $1.id }) {
            guard let image = images[policy.image] else { continue }
            let shards = workers.shards(for: policy)
            for target in shards where shard == nil || shard == target {
                let share = WorkerSet.share(of: policy, shard: target, among: shards)
                do {
                    _ = try await workers.connection(target).call("ensureParents", WorkerEnsureParents(policy: share, image: image), as: ParentInfo.self)
                } catch {
                    logger.error("warm parent not made", metadata: ["parent": "\(policy.id)", "shard": "\(target)", "error": "\(error)"])
                }
            }
        }
    }

    /// Forks in the worker holding the policy's family (its parents made first at the policy's first use).
    func createInWorker(_ workers: WorkerSet, id: String, name: String, spec: ContainerSpec, image: ImageRecord, policy: ParentPolicy,
                        recordedNow: Bool, labels: [String: String], placementID: Int?, startNow: Bool, untilEnd: Bool = false,
                        removeAtEnd: Bool = false, answerEnded: (@Sendable (RunResult) -> Void)? = nil, handOff: RunAnswerHandOff? = nil,
                        registered: (@Sendable (ManagedContainer) -> Void)? = nil) async throws -> ManagedContainer {
        if recordedNow {
            do { _ = try await ensureParentsInWorkers(workers, policy, image: image) } catch {
                try? await forgetPolicy(policy.id)
                workers.unassign(policy.id)
                throw error
            }
        }
        let shard = forkShard(workers, policy)
        let connection = try workers.connection(shard)
        var resolved = spec
        resolved.name = name
        resolved.forkPoint = policy.forkPoint
        resolved.memoryMiB = policy.memoryMiB
        resolved.labels = labels
        resolved.pool = nil
        resolved.memoryReservationMiB = nil
        // The caller's connection goes along only where the worker can answer there: a run
        // removed at its end, charged to no pool.
        let offered = handOff
        let handOff = untilEnd && removeAtEnd && placementID == nil ? handOff : nil
        if handOff == nil { offered?.resolved(.notAnswered) }
        let request = WorkerCreate(id: id, spec: resolved, image: nil, start: startNow, untilEnd: untilEnd ? true : nil,
                                   removeAtEnd: untilEnd && removeAtEnd ? true : nil, answerHead: handOff?.head)
        let frameSent = Atomic<Bool>(false)
        let refused = Atomic<Bool>(false)
        var (info, end): (ContainerInfo, WorkerRunEnd?)
        do {
            (info, end) = try await connection.create(request, image: image, passing: handOff?.connection,
                                                      sent: {
                                                          handOff?.going()
                                                          frameSent.store(true, ordering: .releasing)
                                                      }, refused: { refused.store(true, ordering: .releasing) })
        } catch {
            // A refusal: the worker wrote nothing (it writes an answer only with a run's end).
            // Anything else after the create went (the connection ended, a reply that does not
            // read) leaves the answer unknown.
            if let handOff, frameSent.load(ordering: .acquiring) { handOff.resolved(refused.load(ordering: .acquiring) ? .notAnswered : .unknown) }
            throw error
        }
        // A run answered with its end, its output and its removal in the worker: its caller
        // hears the result now, before this daemon records it (the records follow at once,
        // without a wait; a trace put 127 µs between the worker's answer and the HTTP
        // answer, against 37 µs in one process). With a hand-off the worker wrote it already.
        if let handOff {
            if let end, let written = end.answered {
                handOff.resolved(.answered(written: written, rest: end.answerRest ?? [], shard: shard))
                metrics.answersByWorkers.increment()
                if end.answerRest?.isEmpty == false { metrics.answersFinishedByDaemon.increment() }
            } else {
                handOff.resolved(.notAnswered)
            }
        }
        if let answerEnded, let end, end.answered == nil, end.removed, placementID == nil, let stdout = end.stdout, let stderr = end.stderr {
            let ended = end.exit.info
            answerEnded(RunResult(id: id, exitCode: ended.exitCode ?? 137, reason: ended.exitReason ?? "exited",
                                  stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self),
                                  forkMicroseconds: info.forkMicroseconds, startedAt: info.startedAt ?? ended.startedAt,
                                  finishedAt: ended.finishedAt))
        }
        info.pool = spec.pool
        info.placementID = placementID
        let managed = ManagedContainer(info: info, logFolder: containerFolders.path(of: id, run: startNow && untilEnd && removeAtEnd), vm: nil,
                                       stdinWriter: -1, family: nil, shard: shard)
        if let end { managed.took(end) }
        let parked = registry.withLock { registry -> WorkerExit? in
            registry.containers[id] = managed
            registry.forks += 1
            if registered != nil {
                registry.exitsHeld.insert(id)
                return nil
            }
            return registry.parkedExits.removeValue(forKey: id)
        }
        if let micros = info.forkMicroseconds { metrics.forkLatency.record(duration: .nanoseconds(Int64(micros * 1000))) }
        metrics.forks.increment()
        writer.enqueue { writes in
            writes.containers.append(info)
            // New to this daemon's state: a run removed within the batch leaves no row to delete.
            writes.made.insert(info.id)
            if untilEnd && removeAtEnd { writes.transient.insert(info.id) }
        }
        if let registered {
            // Created and started in one call: its create and start are recorded before any
            // exit the worker reported meanwhile.
            registered(managed)
            let held = registry.withLock { registry -> WorkerExit? in
                registry.exitsHeld.remove(id)
                return registry.parkedExits.removeValue(forKey: id)
            }
            // A run answered with its end: no exit event follows when the worker removed it.
            if let exit = end?.exit ?? held { finishRemote(managed, exit) }
        } else if let exit = end?.exit ?? parked {
            finishRemote(managed, exit)
        }
        return managed
    }

    func startInWorker(_ container: ManagedContainer, shard: Int, by actor: String) async throws {
        guard container.info.state == .created, container.exit == nil else {
            throw EngineError(.conflict, "container \(container.id) is \(container.info.state.rawValue), not created")
        }
        // Recorded before the worker runs it, as in one process: a program that ends at once
        // has its exit reported (and logged) before the reply to this call arrives. A refusal
        // is recorded after it with its reason by the caller.
        record("container.start", subject: container.id, actor: actor)
        let info = try await workerSet!.connection(shard).call("start", WorkerContainerRef(id: container.id), as: ContainerInfo.self)
        if container.applyRemote(info) { writer.enqueue { $0.containers.append(container.info) } }
    }

    func stopInWorker(_ container: ManagedContainer, shard: Int, grace: Duration) async throws -> ExitInfo {
        _ = try await workerSet!.connection(shard).call("stop", WorkerStop(id: container.id, graceMilliseconds: grace.milliseconds), as: ExitInfo.self)
        // Its exit event came before the reply, on the same stream.
        return await container.waitForExit()
    }

    /// Removes the container's VM in its worker (a worker that is gone took it along).
    /// Removes the container in its worker: false when the worker could not (gone, or it no
    /// longer knows the container).
    @discardableResult
    func removeInWorker(_ container: ManagedContainer, shard: Int) async -> Bool {
        guard let connection = try? workerSet?.connection(shard) else { return false }
        do {
            try await connection.remove(WorkerRemove(id: container.id, force: true))
            return true
        } catch {
            logger.warning("worker remove failed", metadata: ["container": "\(container.id)", "shard": "\(shard)", "error": "\(error)"])
            return false
        }
    }

    /// Every policy with what its worker's parents hold now.
    func parentsInWorkers(_ workers: WorkerSet, withSharing: Bool) async throws -> [ParentInfo] {
        let policies = registry.withLock { $0.policies }
        var held: [String: [ParentInfo]] = [:]
        try await withThrowingTaskGroup(of: [ParentInfo].self) { group in
            for connection in workers.connections {
                group.addTask { (try? await connection.call("parents", WorkerParents(sharing: withSharing), as: [ParentInfo].self)) ?? [] }
            }
            for try await list in group { for info in list { held[info.id, default: []].append(info) } }
        }
        return policies.values.sorted { $0.id < $1.id }.map { policy in
            if let info = ParentInfo.merged(held[policy.id] ?? [], policy: policy) { return info }
            return ParentInfo(id: policy.id, policy: policy, state: "absent", failure: nil, parentsReady: 0, readyVMsNow: 0,
                              liveChildren: 0, poolMisses: 0, sharing: nil)
        }
    }

    /// One policy as the workers it is assigned to hold it: only they are asked, and each
    /// measures only that policy's family.
    func parentInWorkers(_ workers: WorkerSet, _ id: String, withSharing: Bool) async throws -> ParentInfo {
        guard let policy = registry.withLock({ $0.policies[id] }) else { throw EngineError(.notFound, "unknown parent \(id)", field: "id") }
        var parts: [ParentInfo] = []
        try await withThrowingTaskGroup(of: [ParentInfo].self) { group in
            for shard in workers.assignedShards(id) {
                let connection = try workers.connection(shard)
                group.addTask { (try? await connection.call("parents", WorkerParents(sharing: withSharing, id: id), as: [ParentInfo].self)) ?? [] }
            }
            for try await list in group { parts += list.filter { $0.id == id } }
        }
        return ParentInfo.merged(parts, policy: policy)
            ?? ParentInfo(id: policy.id, policy: policy, state: "absent", failure: nil, parentsReady: 0, readyVMsNow: 0,
                          liveChildren: 0, poolMisses: 0, sharing: nil)
    }

    /// Passes a reading under pressure to every worker, which shrinks and evicts its own.
    func relievePressureInWorkers(_ workers: WorkerSet, _ reading: MemoryReading, policy: MemoryPressurePolicy) async {
        guard policy.isUnderPressure(reading) else { return }
        let request = WorkerPressure(availableKiB: reading.availableKiB, totalKiB: reading.totalKiB, stalledPercent: reading.stalledPercent,
                                     minimumAvailableMiB: policy.minimumAvailableMiB, maximumStalledPercent: policy.maximumStalledPercent)
        for connection in workers.connections {
            _ = try? await connection.call("pressure", request, as: [String].self)
        }
    }

    /// Passes the machine's costs, as the daemon last measured them, to each worker that does
    /// not have them yet (a new or restarted worker, or new figures): its poller judges by them.
    func sendCostsToWorkers(_ workers: WorkerSet) async {
        guard let costs = costsProbe?.latest else { return }
        for connection in workers.connections where connection.costsSent != costs {
            if (try? await connection.call("costs", costs, as: WorkerNothing.self)) != nil { connection.costsSent = costs }
        }
    }

    /// Stops every worker (the daemon's graceful shutdown: their containers are stopped already).
    func stopWorkers(grace: Duration) async {
        guard let workers = workerSet else { return }
        workers.isStopping = true
        await withTaskGroup(of: Void.self) { group in
            for connection in workers.connections {
                group.addTask { _ = try? await connection.call("shutdown", WorkerShutdown(graceMilliseconds: grace.milliseconds), as: WorkerNothing.self) }
            }
        }
    }
}
