import Fork
import Foundation
import HostSystem
import IOEngine
import Images
import KVM
import Logging
import Metrics
import Placement
import ProcessVM
import Store
import Synchronization

/// The one object between the engine's parts (process VMs, warm parents, placement, the
/// SQLite state) and the executables (the daemon's API, the command-line tool). It keeps the
/// registries of images, warm parent policies and their families, and containers; it writes
/// every state-changing call, container exit and parent eviction to the event log; and its
/// API is async, with every call that blocks on KVM or a VM (making a parent, a fork that
/// finds its pool empty, killing, tearing down) moved to a dedicated queue of threads
/// (`onKVMThread`), off the callers' cooperative threads.
///
/// Shutdown order (`shutdown(grace:)`, which the daemon calls first on SIGTERM, while its
/// listeners still answer the requests in flight; they stop accepting once it returns):
/// 1. refuse new state-changing calls (they get `unavailable`); in workers mode the workers
///    close the callers' connections they hold (`CallerConnections`), which take no more runs;
/// 2. stop every running container: SIGTERM to its program, then after the grace period power
///    the VM off (its vCPU is kicked out of KVM_RUN, so `run()` returns on its thread and the
///    VM stops being polled by the system-call poller, which unregisters it on the way out);
/// 3. remove every container: each VM goes to its warm parent's pool queue, which closes its
///    KVM descriptors (vCPU, VM) and unmaps its guest memory; wait until every queue is done;
///    in workers mode each worker stops and exits;
/// 4. release the warm parents: their pooled VMs and their memfds go the same way; stop the
///    system-call poller's thread (owned through the engine's KVM system);
/// 5. record the daemon's stop, flush the queued state writes and checkpoint the SQLite
///    write-ahead log; end the followers of the event log; finish emptying removed
///    containers' log folders, and delete the ready runs' folders on tmpfs (memory); let the
///    kept container threads end;
/// 6. the daemon then closes its sockets and drops the engine, which releases the state
///    folder's locks.
public final class Engine: Sendable {
    public static let version = "0.2.0"

    public let stateFolder: URL
    public let store: StateStore
    /// Pools, hosts, place/commit/release and the capacity report, on the same state.
    public let placement: PlacementService
    public let logger: Logger
    /// nil when this host has no usable /dev/kvm (placement and the registries still work).
    let system: KVMSystem?
    let kvmUnavailable: String?
    let writer: StateWriter
    let metrics: EngineMetrics
    /// The daemon's own lock on its state folder (`vmfork.lock`, see `FolderLock`).
    private let daemonLock: FolderLock
    let registry = Mutex(Registry())
    /// Where blocking KVM and VM work runs (libdispatch's threads, never the cooperative pool).
    private let kvmQueue = DispatchQueue(label: "vmfork.engine.kvm", qos: .userInitiated, attributes: .concurrent)
    private let forkRate = Mutex((count: 0, time: ContinuousClock.now))
    /// The poller's figures at the last scrape, for its counters' increments.
    private let pollerSeen = Mutex(SystemCallPollerStatistics.zero)
    /// The system-call poller of this engine's VMs (its KVM system's), nil without KVM.
    var poller: SyscallPoller? { system.map(SyscallPoller.of) }
    /// The threads containers run on, kept between containers.
    let runners: RunnerThreads
    /// Containers being made at once (files, fork), at most two per core; the rest wait their
    /// turn, first come first served. Making is CPU work of a few hundred µs that gains
    /// nothing from running hundreds wide: under a burst beyond what the host runs at once
    /// (launches queued behind a stall), every queued launch made its log folder and took a
    /// VM at once, so both pools ran dry and each was made anew (milliseconds of CPU each);
    /// the engine's CPU per launch tripled and the host never caught up. Queued here, the
    /// launches take the VMs and folders their predecessors give back.
    let makeSlots = DispatchSemaphore(value: 2 * ProcessInfo.processInfo.activeProcessorCount)
    /// Pulls images from registries into the datastore, images/ in the state folder.
    let imagePuller: ImagePuller
    /// Containers of pulled images run from the image's layer disks instead of its folder
    /// (`Engine+LayerDisks`).
    let rootfsFromLayerDisks: Bool
    /// The disk root filesystems opened for images, by top layer disk; and their I/O engine.
    let layerDiskRoots = Mutex<[String: DiskRootFileSystem]>([:])
    let layerDiskEngine: IOEngine?
    /// Containers' own writable disks, children of their image's top layer (`ContainerDiskPool`).
    let containerDisks: ContainerDiskPool?
    /// Containers' log folders (kept containers' and runs'), and emptied ones kept for reuse
    /// (`ContainerFolders`, `ContainerFolderPool`).
    let containerFolders: ContainerFolders
    /// Measures this machine's exit and polled-call costs for the poller (when it polls).
    let costsProbe: MachineCostsProbe?
    /// In one process, as the control plane of worker processes, or as a worker.
    public let options: EngineOptions
    /// The daemon's workers (nil when this process holds the VMs itself).
    let workerSet: WorkerSet?
    /// Whether the VMs live in engine workers (`vmfork serve --workers N`), not in this process.
    public var runsInWorkers: Bool { workerSet != nil }
    /// Who is told of exits and events (a worker's server).
    let observers = Mutex(EngineObservers())

    struct Registry {
        var images: [String: ImageRecord] = [:]
        var policies: [String: ParentPolicy] = [:]
        var families: [String: ParentFamily] = [:]
        var builds: [String: Task<Void, Error>] = [:]
        var containers: [String: ManagedContainer] = [:]
        var names: [String: String] = [:]
        var accepting = true
        var forks = 0
        /// Workers mode: exits reported before their container's create reply was taken.
        var parkedExits: [String: WorkerExit] = [:]
        /// Workers mode: containers registered whose exit waits (parked) until their create
        /// and start are recorded, so that the log has them first.
        var exitsHeld: Set<String> = []
        /// Workers mode, at start: containers recorded live whose worker has not reported yet.
        var unreconciled: Set<String> = []
    }

    /// The followers of the event log wait on it.
    public var eventFeed: EventFeed { writer.feed }

    /// Opens the state folder (creating it), refusing when another daemon holds it; loads the
    /// images, parent policies and containers it records. Containers that were running when
    /// the last daemon stopped are recorded as stopped now (their VMs did not survive it).
    /// `system`: the KVM system to make VMs on (its own when nil).
    public init(stateFolder: URL, logger: Logger = Logger(label: "vmfork.engine"), metricsFactory: any MetricsFactory,
                options: EngineOptions = EngineOptions(), system: KVMSystem? = nil, rootfsFromLayerDisks: Bool = false) throws {
        self.stateFolder = stateFolder
        self.rootfsFromLayerDisks = rootfsFromLayerDisks
        layerDiskEngine = rootfsFromLayerDisks ? try IOEngine() : nil
        self.logger = logger
        self.options = options
        runners = RunnerThreads(kept: options.containerThreadsKept)
        // Grown now, not on a launch's path: each growth under load held every thread that
        // opens a descriptor for an RCU grace period (`DescriptorTable`).
        DescriptorTable.reserve(DescriptorTable.engineReserve)
        try FileManager.default.createDirectory(at: stateFolder, withIntermediateDirectories: true)
        do {
            daemonLock = try FolderLock(folder: stateFolder, file: "vmfork.lock", waitSeconds: 0, mode: 0o600, recordsPID: true)
        } catch let busy as FolderLock.Busy {
            throw EngineError(.conflict, "state folder \(busy.folder) is in use by another vmfork daemon (pid \(busy.holder ?? "?")); stop it first or use another --state folder")
        } catch {
            throw EngineError(.failed, "\(error)")
        }
        store = try StateStore(folder: stateFolder, lockWaitSeconds: 2)
        // The placements of forks go with their containers' rows, in the writer's batches
        // (a placement's SQLite write was half a millisecond of each create on this machine).
        let writer = StateWriter(store: store, logger: logger, keepsEvents: options.workerShard == nil, retention: options.eventRetention)
        self.writer = writer
        writer.applyRetentionSoon()
        placement = try PlacementService(store: store, deferredWrite: { changes in
            writer.enqueue { writes in
                writes.placements += changes.placements
                writes.deletedPlacements += changes.deletedPlacements
            }
        })
        do {
            self.system = try system ?? KVMSystem()
            kvmUnavailable = nil
        } catch {
            self.system = nil
            kvmUnavailable = "KVM unavailable: \(error)"
            logger.warning("containers cannot run: KVM unavailable", metadata: ["error": "\(error)"])
        }
        metrics = EngineMetrics(factory: metricsFactory)
        imagePuller = try ImagePuller(datastore: stateFolder.appendingPathComponent("images", isDirectory: true), logger: logger)
        containerDisks = try layerDiskEngine.map {
            try ContainerDiskPool(folder: stateFolder.appendingPathComponent("images/containers", isDirectory: true), engine: $0, logger: logger)
        }
        workerSet = try options.workers.flatMap { $0.count > 0 ? try WorkerSet(settings: $0, stateFolder: stateFolder) : nil }
        let keepsLive = workerSet != nil
        let lostReason = options.workerShard != nil ? "stopped: its worker restarted" : "stopped: the daemon restarted"
        let containers = options.containersFolder ?? stateFolder.appendingPathComponent("containers", isDirectory: true)
        try FileManager.default.createDirectory(at: containers, withIntermediateDirectories: true)
        let runs = options.runsFolder.map { (folder: Optional($0), whyNot: String?.none) } ?? ContainerFolders.runsFolder(stateFolder: stateFolder)
        if let whyNot = runs.whyNot { logger.notice("runs' log folders go with the kept containers'", metadata: ["reason": "\(whyNot)"]) }
        if let folder = runs.folder { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        containerFolders = ContainerFolders(kept: containers, runs: runs.folder, owner: options.workerShard.map { "w\($0)" } ?? "d")
        // Measured in the background, now and every ten minutes, by the engine on its own or by
        // the daemon of workers, which passes the figures to its workers (`sendCostsToWorkers`):
        // a worker, confined, cannot write the probe's programs.
        if let system = self.system, options.pollsSystemCalls, options.workerShard == nil {
            let probe = MachineCostsProbe(system: system, poller: SyscallPoller.of(system), folder: stateFolder, logger: logger)
            probe.start()
            costsProbe = probe
        } else {
            costsProbe = nil
        }

        let snapshot = try store.engineSnapshot()
        let now = Date().timeIntervalSince1970
        var stopped: [ContainerInfo] = []
        registry.withLock { registry in
            for row in snapshot.images {
                var image = ImageRecord(row: row).withDefaultForkPoint()
                image.pulled = imagePuller.pulledImage(atRootfs: row.rootfs)
                registry.images[row.name] = image
            }
            for row in snapshot.policies {
                guard let policy = ParentPolicy(row: row) else { continue }
                registry.policies[policy.id] = policy
            }
            for row in snapshot.containers {
                guard var info = try? JSONDecoder().decode(ContainerInfo.self, from: Data(row.spec.utf8)) else { continue }
                var exit: ExitInfo?
                if info.state != .exited, keepsLive {
                    // Its worker may hold it still: `startWorkers` decides.
                    registry.unreconciled.insert(info.id)
                } else if info.state != .exited {
                    info.state = .exited
                    info.exitReason = lostReason
                    info.finishedAt = now
                    exit = ExitInfo(exitCode: 137, reason: lostReason)
                    info.exitCode = 137
                    stopped.append(info)
                } else {
                    exit = ExitInfo(exitCode: info.exitCode ?? 0, reason: info.exitReason ?? "exited")
                }
                let managed = ManagedContainer(info: info, logFolder: containerFolders.existingPath(of: info.id), vm: nil,
                                               stdinWriter: -1, family: nil, exit: exit)
                registry.containers[info.id] = managed
                registry.names[info.name] = info.id
            }
        }
        // Runs' folders an earlier engine left on tmpfs (it stopped while they ran). Not with
        // workers: a worker that outlived its daemon may still hold runs there.
        if !keepsLive, options.workerShard == nil {
            containerFolders.deleteLeftRuns(keeping: registry.withLock { Set($0.containers.keys) })
        }
        writer.event(EventRow(time: now, actor: "engine", type: "daemon.start", subject: stateFolder.path, result: "ok",
                              detail: "{\"version\":\"\(Self.version)\"}"))
        for row in stopped {
            writer.enqueue { writes in
                writes.containers.append(row)
                writes.events.append(EventRow(time: now, actor: "engine", type: "container.stopped", subject: row.id,
                                              result: "ok", detail: "{\"reason\":\"the daemon restarted while it was running\"}"))
            }
        }
        logger.info("engine opened", metadata: ["state": "\(stateFolder.path)", "images": "\(snapshot.images.count)",
                                                "policies": "\(snapshot.policies.count)", "containers": "\(snapshot.containers.count)"])
    }

    var containersFolder: URL { containerFolders.kept.folder }

    /// Where runs' log folders go (on tmpfs; the kept containers' folder when there is none).
    public var runsFolder: URL { containerFolders.runs.folder }

    /// Makes the warm parents of every recorded policy, and the kept container threads (a
    /// daemon calls it once it listens).
    public func warmUp() async {
        runners.prestart(options.containerThreadsKept)
        if workersMode { return await warmUpRemote() }
        let policies = registry.withLock { Array($0.policies.values) }
        for policy in policies {
            do { _ = try await family(for: policy) } catch {
                logger.error("warm parent not made", metadata: ["parent": "\(policy.id)", "error": "\(error)"])
            }
        }
    }

    // MARK: Threads

    /// Why containers cannot run here (no usable /dev/kvm), or nil.
    public var kvmMessage: String? { kvmUnavailable }

    /// Runs blocking work (placement's SQLite writes under its lock, file system walks) on
    /// the engine's queue of threads, off the caller's cooperative thread.
    public func onBlockingThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await onKVMThread(body)
    }

    /// Runs blocking KVM or VM work on the engine's KVM queue and resumes the caller with its result.
    func onKVMThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            kvmQueue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    // MARK: Events

    /// Appends an event to the log (written in the background, in call order).
    public func record(_ type: String, subject: String, actor: String, result: String = "ok", detail: String = "") {
        let row = EventRow(time: Date().timeIntervalSince1970, actor: actor, type: type, subject: subject, result: result, detail: detail)
        writer.event(row)
        observers.withLock { $0.event }?(row)
    }

    /// Runs `body` and records its outcome, ok or the error's message.
    public func audited<T: Sendable>(_ type: String, subject: String, actor: String, detail: String = "",
                              subjectOf: (T) -> String? = { _ in nil }, _ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            record(type, subject: subjectOf(result) ?? subject, actor: actor, detail: detail)
            return result
        } catch {
            record(type, subject: subject, actor: actor, result: "\(error)", detail: detail)
            throw error
        }
    }

    /// Events from the log, oldest first (everything queued before the call included).
    public func events(afterID: Int64 = 0, since: Double? = nil, until: Double? = nil, types: [String] = [],
                       limit: Int = 1000) async throws -> [EventRow] {
        await writer.flushAsync()
        let store = self.store
        return try await onKVMThread { try store.events(afterID: afterID, since: since, until: until, types: types, limit: limit) }
    }

    func ensureAccepting() throws {
        if !registry.withLock({ $0.accepting }) { throw EngineError(.unavailable, "the engine is shutting down") }
    }

    // MARK: Shutdown

    /// Stops and removes every container, releases the warm parents and flushes the state,
    /// in the order written at the top of this type.
    public func shutdown(grace: Duration = .seconds(10)) async {
        // 1. No new state-changing calls.
        let containers = registry.withLock { registry in
            registry.accepting = false
            return Array(registry.containers.values)
        }
        logger.info("shutting down", metadata: ["containers": "\(containers.count)"])
        // Nor on the callers' connections the workers hold: they close (a run going on there ends in 2).
        await endHandedOverConnections()
        // 2. Running containers: SIGTERM, then power off after the grace period.
        await withTaskGroup(of: Void.self) { group in
            for container in containers where container.isLive {
                group.addTask { _ = try? await self.stopContainer(container, grace: grace, actor: "engine") }
            }
        }
        // 3. Every VM back to its parent's pool queue, which closes its KVM descriptors and
        //    unmaps its memory (or restores it into the pool, which goes in 4); wait for them.
        for container in containers {
            let (vm, _) = container.takeForRemoval()
            vm?.remove()
            _ = container.family?.childRemoved(container.id)
        }
        // Workers mode: each worker stops (its containers are stopped already) and exits.
        await stopWorkers(grace: grace)
        let families = registry.withLock { registry in
            defer { registry.families = [:] }
            for build in registry.builds.values { build.cancel() }
            return Array(registry.families.values)
        }
        // (An evicted family's pool is waited for too: its last children's VMs went there.)
        var waited = Set<ObjectIdentifier>()
        let pools = (families + containers.compactMap(\.family)).filter { waited.insert(ObjectIdentifier($0)).inserted }
        _ = try? await onKVMThread { for family in pools { family.waitForTeardown() } }
        // 4. The warm parents: their pools and memfds go as their last references do; the
        //    machine-cost probe ends (and its VMs); no VM runs any more, so the system-call
        //    poller's thread ends.
        for family in families { family.release() }
        if let probe = costsProbe { _ = try? await onKVMThread { probe.stop() } }
        poller?.stop()
        // 5. The state: the stop event, every queued write, the WAL checkpoint; followers end.
        record("daemon.stop", subject: stateFolder.path, actor: "engine")
        await writer.flushAsync()
        writer.feed.close()
        let store = self.store
        do { try await onKVMThread { try store.checkpoint() } } catch {
            logger.warning("WAL checkpoint failed", metadata: ["error": "\(error)"])
        }
        //    Removed containers' folders finish being emptied; runs' ready ones (tmpfs) go.
        let (folders, allRuns) = (containerFolders, options.workerShard == nil)
        _ = try? await onKVMThread {
            folders.waitForRemovals()
            folders.discardRunFolders(all: allRuns)
        }
        //    The kept container threads end (no container runs any more).
        runners.release()
        logger.info("engine stopped")
    }

    // MARK: Metrics

    /// Updates the gauges the metrics page shows (called before each scrape).
    public func refreshMetrics() {
        let (families, containers, forks) = registry.withLock { (Array($0.families.values), Array($0.containers.values), $0.forks) }
        metrics.gauge("vmfork_containers_live").record(containers.filter { $0.isLive }.count)
        metrics.gauge("vmfork_containers_running").record(containers.filter { $0.info.state == .running }.count)
        var shared = 0, owned = 0, parentBytes = 0
        let pageMap = families.isEmpty ? nil : openPageMap()
        for family in families {
            let info = family.info(sharing: pageMap)
            let dimensions = [("parent", info.id)]
            metrics.gauge("vmfork_pool_ready_vms", dimensions).record(info.readyVMsNow)
            metrics.gauge("vmfork_pool_target_vms", dimensions).record(info.policy.readyVMs * info.parentsReady)
            metrics.gauge("vmfork_pool_empty", dimensions).record(info.readyVMsNow == 0 ? 1 : 0)
            metrics.gauge("vmfork_parent_live_children", dimensions).record(info.liveChildren)
            if let sharing = info.sharing {
                parentBytes += sharing.parentBytes
                owned += sharing.familyBytes - sharing.parentBytes
                shared += sharing.childSharedBytesMedian * sharing.children
            }
        }
        metrics.gauge("vmfork_memory_parent_bytes").record(parentBytes)
        metrics.gauge("vmfork_memory_private_bytes").record(owned)
        metrics.gauge("vmfork_memory_shared_bytes").record(shared)
        let now = ContinuousClock.now
        let rate = forkRate.withLock { last -> Double in
            let seconds = Double((now - last.time).components.attoseconds) / 1e18 + Double((now - last.time).components.seconds)
            defer { last = (forks, now) }
            return seconds > 0 ? Double(forks - last.count) / seconds : 0
        }
        metrics.gauge("vmfork_forks_per_second").record(rate)
        let poller = self.poller?.statistics ?? SystemCallPollerStatistics.zero
        let (callsDelta, backOffsDelta, unprofitableDelta) = pollerSeen.withLock { seen -> (Int, Int, Int) in
            defer { seen = poller }
            return (poller.callsServed - seen.callsServed, poller.backOffs - seen.backOffs, poller.unprofitableBackOffs - seen.unprofitableBackOffs)
        }
        if callsDelta > 0 { metrics.polledCalls.increment(by: callsDelta) }
        if backOffsDelta > 0 { metrics.pollerBackOffs.increment(by: backOffsDelta) }
        if unprofitableDelta > 0 { metrics.pollerUnprofitableBackOffs.increment(by: unprofitableDelta) }
        if let costs = costsProbe?.latest {
            metrics.gauge("vmfork_machine_exit_microseconds").record(costs.exitMicroseconds)
            metrics.gauge("vmfork_machine_polled_call_microseconds").record(costs.polledMicroseconds)
        }
        metrics.gauge("vmfork_poller_watched_vms").record(poller.watchedVMs)
        // The engine's own threads: the system-call poller and the layer disks' I/O thread.
        if let thread = self.poller?.kernelThreadID, let seconds = CPUTime.ofThread(thread) {
            metrics.gauge("vmfork_thread_cpu_seconds", [("thread", "poller")]).record(seconds)
        }
        if let io = layerDiskEngine {
            metrics.gauge("vmfork_io_requests_submitted").record(io.requestsSubmitted)
            if let thread = io.kernelThreadID, let seconds = CPUTime.ofThread(thread) {
                metrics.gauge("vmfork_thread_cpu_seconds", [("thread", "io")]).record(seconds)
            }
        }
    }
}
