import CShims
import Fork
import Foundation
import Placement
import ProcessVM
import Store

extension Engine {
    // MARK: Create

    /// Forks a container from a warm parent of its image (made at the image's first use), with
    /// its own arguments, environment, hostname and labels; its standard output and error go
    /// to files in the state folder. It has not started yet.
    public func createContainer(_ spec: ContainerSpec, by actor: String) async throws -> ContainerInfo {
        try await audited("container.create", subject: spec.name ?? "", actor: actor, subjectOf: { $0.id }) {
            try await create(spec, startNow: false).info
        }
    }

    /// Forks the container (and with `startNow` runs it at once on its own thread). With
    /// `untilEnd` the call returns once the program has ended, so that the caller is woken
    /// once, not at the start and again at the exit (each wake-up a wait for a core on a busy
    /// host); `started` runs on the container's thread just before its program does.
    /// A worker is given the daemon's id for it (`id`). `removeAtEnd` (with `untilEnd`): the
    /// caller removes it at its end (a worker's daemon lets the worker remove a run that ended
    /// before it answered, its output sent along), so its row waits (`StateWriter.held`).
    /// `takeOver` (with `startNow`), asked on the thread that would hand the container to its
    /// own: true when that thread has handed its own work on and runs the container itself.
    /// `keepsVM` (with `untilEnd`): the VM is not given back to its pool at the end; the caller
    /// gives it back, or removes the container, once it has answered.
    /// `answerEnded`: a worker's run that comes back ended, with its output and removed there,
    /// is told to it at once (see `runContainer`'s `answer`). `handOff`: the worker writes
    /// that answer to the caller's connection itself (see `RunAnswerHandOff`).
    func create(_ spec: ContainerSpec, startNow: Bool, id givenID: String? = nil, untilEnd: Bool = false, removeAtEnd: Bool = false,
                takeOver: (@Sendable () -> Bool)? = nil, keepsVM: Bool = false, answerEnded: (@Sendable (RunResult) -> Void)? = nil,
                handOff: RunAnswerHandOff? = nil, started: (@Sendable (ManagedContainer) -> Void)? = nil) async throws -> ManagedContainer {
        try ensureAccepting()
        let image = try image(spec.image)
        let (forkPoint, memoryMiB, command, environment, labels) = try check(spec, image: image)

        let id = givenID ?? ContainerID.make()
        let name = spec.name ?? String(id.prefix(12))
        let nameTaken = registry.withLock { registry -> Bool in
            if registry.names[name] != nil { return true }
            registry.names[name] = id
            return false
        }
        if nameTaken { throw EngineError(.conflict, "container name \(name) is taken", field: "name") }
        var placementID: Int?
        let memoryKiB = spec.memoryReservationMiB.map { $0 << 10 }
        do {
            // A family that is ready (the usual case) takes the placement in the same hop to a
            // KVM thread as the fork, below; else placement first, so that an unknown or full
            // pool is refused before anything is made (a policy recorded, parents built).
            let readyFamily = workerSet == nil ? self.readyFamily(image: image.name, forkPoint: forkPoint, memoryMiB: memoryMiB) : nil
            if let pool = spec.pool, readyFamily == nil { placementID = try await place(pool: pool, image: image.name, memoryKiB: memoryKiB) }
            let (policy, recordedNow) = try await policy(image: image.name, forkPoint: forkPoint, memoryMiB: memoryMiB)
            if let workers = workerSet {
                return try await createInWorker(workers, id: id, name: name, spec: spec, image: image, policy: policy, recordedNow: recordedNow,
                                                labels: labels, placementID: placementID, startNow: startNow, untilEnd: untilEnd,
                                                removeAtEnd: removeAtEnd, answerEnded: answerEnded, handOff: handOff, registered: started)
            }
            let family: ParentFamily
            if let readyFamily {
                family = readyFamily
            } else {
                do {
                    family = try await self.family(for: policy)
                } catch {
                    if recordedNow { try? await forgetPolicy(policy.id) }
                    throw error
                }
            }
            let hostname = spec.hostname ?? name
            let run = startNow && untilEnd && removeAtEnd
            let stdin = spec.stdin
            let openStdin = spec.openStdin == true
            let tty = spec.tty == true
            let placementPool = spec.pool
            let placedBefore = placementID
            let placeHere = placedBefore == nil ? placementPool : nil
            let placement = self.placement
            // Placement (when not made above), files, pipe, fork and registration: a KVM
            // thread's work (the fork may build a VM when the pool is empty).
            let make: @Sendable () throws -> ManagedContainer = { [self] in
                makeSlots.wait()
                defer { makeSlots.signal() }
                let placed = try placeHere.map { try Self.placeNow(placement, pool: $0, image: image.name, memoryKiB: memoryKiB) } ?? placedBefore
                // Placed here: given back here when what follows fails (one placed before is
                // given back by the caller).
                let giveBackPlacement = { if placeHere != nil, let placed { _ = try? placement.release(placed) } }
                let streams: ContainerStreams
                do {
                    streams = try ContainerStreams(id: id, run: run, folders: containerFolders, stdin: stdin, openStdin: openStdin, tty: tty)
                } catch {
                    giveBackPlacement()
                    throw error
                }
                defer { streams.closeChildEnds() }
                let vm: Fork.Container
                var disk: ContainerDiskRoot?
                do {
                    disk = try containerDiskRoot(for: family, id: id)
                    vm = try family.fork(id: id, argv0: command.argv0, arguments: command.arguments, environment: environment, hostname: hostname,
                                         streams: streams.standard, rootFileSystem: disk)
                } catch {
                    streams.closeStdinWriter()
                    containerFolders.remove(streams.folder, files: streams.files, stdinFile: streams.stdinFile)
                    if let disk { containerDisks?.remove(id: id, root: disk) }
                    giveBackPlacement()
                    throw error
                }
                let info = ContainerInfo(id: id, name: name, image: image.name, state: .created, exitCode: nil, exitReason: nil,
                                         arguments: command.arguments, environment: environment, hostname: hostname, memoryMiB: memoryMiB,
                                         forkPoint: forkPoint, labels: labels, parent: policy.id, pool: placementPool, placementID: placed,
                                         createdAt: Date().timeIntervalSince1970, startedAt: nil, finishedAt: nil,
                                         forkMicroseconds: Self.microseconds(vm.forkLatency), reusedVM: vm.reusesVM,
                                         argv0: command.argv0, entrypoint: command.entrypoint, cmd: command.cmd, tty: tty ? true : nil)
                let managed = ManagedContainer(info: info, logFolder: streams.folder, vm: vm, stdinWriter: streams.stdinWriter, family: family, disk: disk,
                                               terminal: streams.terminal, logFiles: streams.files, stdinFile: streams.stdinFile)
                registry.withLock { registry in
                    registry.containers[id] = managed
                    registry.forks += 1
                }
                metrics.forkLatency.record(duration: vm.forkLatency)
                metrics.forks.increment()
                writer.enqueue { writes in
                    writes.containers.append(info)
                    writes.made.insert(info.id)
                    if untilEnd && removeAtEnd { writes.transient.insert(info.id) }
                }
                return managed
            }
            guard startNow else { return try await onKVMThread(make) }
            // Create and start: the fork and the run on the container's own thread, one hop;
            // none when the caller's thread may become it (`takeOver`).
            return try await withCheckedThrowingContinuation { continuation in
                let body: @Sendable () -> Void = { [self] in
                    let made: ManagedContainer
                    do { made = try make() } catch {
                        continuation.resume(throwing: error)
                        return
                    }
                    guard let vm = made.markRunning(at: Date().timeIntervalSince1970) else {
                        continuation.resume(returning: made)
                        return
                    }
                    writer.enqueue { $0.containers.append(made.info) }
                    started?(made)
                    if untilEnd {
                        runToEnd(made, vm, releasing: !keepsVM) { continuation.resume(returning: made) }
                    } else {
                        continuation.resume(returning: made)
                        runToEnd(made, vm)
                    }
                }
                if let takeOver, takeOver() {
                    metrics.runsOnCallersThread.increment()
                    body()
                } else {
                    runners.run(body)
                }
            }
        } catch {
            _ = registry.withLock { $0.names.removeValue(forKey: name) }
            if let placementID {
                let placement = self.placement
                _ = try? await onKVMThread { try placement.release(placementID) }
            }
            throw error
        }
    }

    static func microseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
    }

    /// Reserves and commits a placement on this host's placement state for one fork.
    private func place(pool: String, image: String, memoryKiB: Int? = nil) async throws -> Int {
        let placement = self.placement
        return try await onKVMThread { try Self.placeNow(placement, pool: pool, image: image, memoryKiB: memoryKiB) }
    }

    /// `place` on the calling thread (a blocking one: it writes SQLite).
    private static func placeNow(_ placement: PlacementService, pool: String, image: String, memoryKiB: Int?) throws -> Int {
        do {
            return try placement.placeAndCommit(pool: pool, image: image, memoryKiB: memoryKiB).id
        } catch let error as PlacementError {
            switch error {
            case .unknownPool: throw EngineError(.notFound, error.description, field: "pool")
            case .unknownImage: throw EngineError(.notFound, "\(error.description) in the placement state (vmfork image add ... there)", field: "pool")
            default: throw EngineError(.conflict, "placement refused: \(error.description)", field: "pool")
            }
        }
    }

    /// The family of an image's policy when it is ready to fork now (none is made or waited for).
    /// What `create` checks of a spec before it makes anything, each refusal naming its field:
    /// its fork point, memory, command line, environment and labels as the container gets them.
    func check(_ spec: ContainerSpec, image: ImageRecord) throws
        -> (forkPoint: ForkPointName, memoryMiB: Int, command: ContainerCommand, environment: [String], labels: [String: String]) {
        let forkPoint = spec.forkPoint ?? image.defaultForkPoint ?? .entry
        let memoryMiB = spec.memoryMiB ?? ParentPolicy.defaultMemoryMiB
        guard ParentPolicy.memoryRange.contains(memoryMiB) else {
            throw EngineError.invalid("memoryMiB", "memoryMiB \(memoryMiB) is out of range (\(ParentPolicy.memoryRange))")
        }
        if let arguments = spec.arguments { try Self.validateArguments(arguments, field: "arguments") }
        if let environment = spec.environment { try Self.validateEnvironment(environment, field: "environment") }
        let environment = spec.environment ?? image.environment
        let command = try ContainerCommand.decide(spec, image: image, environment: environment)
        if forkPoint == .stdin, command.argv0 != image.argv0 || command.arguments != image.arguments {
            throw EngineError.invalid(spec.arguments != nil ? "arguments" : spec.cmd != nil ? "cmd" : "entrypoint",
                                      "a child of a stdin fork point runs the image's own command; it reads its own standard input instead")
        }
        if let hostname = spec.hostname {
            guard Self.validHostname(hostname) else {
                throw EngineError.invalid("hostname", "hostname \"\(hostname)\" must be 1-64 letters, digits, '-' or '.'")
            }
        }
        if let name = spec.name, !Self.validName(name) {
            throw EngineError.invalid("name", "container name \"\(name)\" must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        }
        let labels = spec.labels ?? [:]
        guard labels.count <= 64, labels.allSatisfy({ !$0.key.isEmpty && $0.key.utf8.count <= 128 && !$0.key.utf8.contains(UInt8(ascii: "=")) && $0.value.utf8.count <= 1024 }) else {
            throw EngineError.invalid("labels", "labels: at most 64, keys 1-128 bytes without '=', values up to 1024 bytes")
        }
        if spec.openStdin == true, spec.stdin != nil {
            throw EngineError.invalid("stdin", "give either openStdin (attach later) or stdin (all of it now), not both")
        }
        if let stdin = spec.stdin, stdin.utf8.count > 1 << 20 { throw EngineError.invalid("stdin", "stdin: over 1 MiB") }
        if let pool = spec.pool, pool.isEmpty || pool.utf8.count > 128 { throw EngineError.invalid("pool", "pool: 1-128 bytes") }
        if let reservation = spec.memoryReservationMiB {
            guard (1...ParentPolicy.memoryRange.upperBound).contains(reservation) else {
                throw EngineError.invalid("memoryReservationMiB", "memoryReservationMiB \(reservation) is out of range (1...\(ParentPolicy.memoryRange.upperBound))")
            }
            guard spec.pool != nil else { throw EngineError.invalid("memoryReservationMiB", "memoryReservationMiB needs a pool to charge") }
        }
        return (forkPoint, memoryMiB, command, environment, labels)
    }

    /// Whether this engine (a worker) can run `spec` for a caller on its own
    /// (`CallerConnections`): a run without a name (names are the daemon's to give out), a
    /// pool or reservation (placement is the daemon's), or a terminal, of a known image, one
    /// `create` takes, whose warm parent is ready here.
    /// Anything else goes to the daemon, whose answer is the API's (a refusal names its field).
    func canServeCallerRun(_ spec: ContainerSpec) -> Bool {
        guard spec.name == nil, spec.pool == nil, spec.memoryReservationMiB == nil, spec.tty != true,
              (try? ensureAccepting()) != nil, let image = try? image(spec.image), let checked = try? check(spec, image: image) else { return false }
        return readyFamily(image: image.name, forkPoint: checked.forkPoint, memoryMiB: checked.memoryMiB) != nil
    }

    private func readyFamily(image: String, forkPoint: ForkPointName, memoryMiB: Int) -> ParentFamily? {
        let id = ParentPolicy(image: image, forkPoint: forkPoint, memoryMiB: memoryMiB).id
        guard let family = registry.withLock({ $0.families[id] }), family.isReady else { return nil }
        return family
    }

    // MARK: Lookup

    func container(_ idOrName: String) throws -> ManagedContainer {
        let found = registry.withLock { registry -> ManagedContainer? in
            if let container = registry.containers[idOrName] { return container }
            if let id = registry.names[idOrName] { return registry.containers[id] }
            return nil
        }
        guard let found else { throw EngineError(.notFound, "unknown container \(idOrName)", field: "id") }
        return found
    }

    public func inspectContainer(_ idOrName: String) throws -> ContainerInfo { try container(idOrName).info }

    public func containers(_ filter: ContainerFilter = ContainerFilter()) -> [ContainerInfo] {
        let all = registry.withLock { Array($0.containers.values) }
        return all.map(\.info).filter(filter.matches).sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }

    // MARK: Start, wait

    /// Starts the container's program on a thread of its own (its vCPU's).
    public func startContainer(_ idOrName: String, by actor: String) async throws -> ContainerInfo {
        do {
            try ensureAccepting()
            let container = try container(idOrName)
            if let shard = container.liveShard {
                try await startInWorker(container, shard: shard, by: actor)
                return container.info
            }
            try start(container, by: actor)
            return container.info
        } catch {
            record("container.start", subject: idOrName, actor: actor, result: "\(error)")
            throw error
        }
    }

    /// Starts the container's program on a runner thread. Its start event is queued before
    /// the program runs, so that the log has it before the exit of a program that ends at once.
    func start(_ container: ManagedContainer, by actor: String) throws {
        guard let vm = container.markRunning(at: Date().timeIntervalSince1970) else {
            throw EngineError(.conflict, "container \(container.id) is \(container.info.state.rawValue), not created")
        }
        writer.enqueue { $0.containers.append(container.info) }
        record("container.start", subject: container.id, actor: actor)
        runners.run { [self] in runToEnd(container, vm) }
    }

    /// Runs the container's program on the calling thread (its vCPU's) until it ends;
    /// `woken` runs once its end is known, before its VM goes back to the pool.
    private func runToEnd(_ container: ManagedContainer, _ vm: Fork.Container, releasing: Bool = true, woken: (() -> Void)? = nil) {
        let exit: ExitInfo
        do {
            let status = try vm.run()
            exit = ExitInfo(exitCode: Int(status.code), reason: status.description)
        } catch {
            exit = ExitInfo(exitCode: 137, reason: "the VM failed: \(error)")
        }
        ended(container, exit, releasing: releasing, woken: woken)
    }

    /// Records an exit (from the container's thread, or a kill before it started): the exit
    /// is queued for the log, then whoever waits is woken (and `woken` runs), and only then
    /// does the VM go back to its pool — the waiter should not wait for that. Not `releasing`:
    /// the waiter runs on this very thread next, and gives it back after its answer.
    func ended(_ container: ManagedContainer, _ exit: ExitInfo, releasing: Bool = true, woken: (() -> Void)? = nil) {
        // Its changes reach its disk before anyone hears it ended.
        if let disk = container.disk {
            do { try disk.finish() } catch {
                logger.error("a container's changes could not be written to its disk", metadata: ["id": "\(container.id)", "error": "\(error)", "disk": "\(disk.diskPath ?? "none")"])
            }
        }
        let (info, wake) = container.finish(exit, at: Date().timeIntervalSince1970)
        let counters = container.vm?.processVM?.lastRunCounters
        // A worker's daemon hears of it before any waiter here wakes (a stop's reply follows it).
        observers.withLock { $0.exit }?(info, counters, container)
        let event = EventRow(time: info.finishedAt ?? 0, actor: "engine", type: "container.exit", subject: info.id, result: "ok",
                             detail: "{\"exitCode\":\(exit.exitCode)}")
        writer.enqueue { writes in
            writes.containers.append(info)
            writes.events.append(event)
        }
        // Counted before anyone hears it ended: a client that reads /metrics after its run's
        // answer finds the run in them (a count after the wake-up lagged on a loaded host).
        metrics.exits.increment()
        if let counters {
            metrics.vmExits.increment(by: Int(counters.exits))
            metrics.vmExitsPerContainer.record(Int(counters.exits))
            metrics.pageFaults.increment(by: Int(counters.pageFaults))
            metrics.emulatedInstructions.increment(by: Int(counters.emulatedInstructions))
        }
        wake()
        woken?()
        // The VM goes back to its parent's pool now, not at remove: restored while the caller
        // collects the output, it is ready for the next fork (and an exited container that is
        // never removed holds no guest memory).
        if releasing { container.vm?.release() }
    }

    /// Waits until the container ends and returns how.
    public func waitContainer(_ idOrName: String) async throws -> ExitInfo {
        let container = try container(idOrName)
        if container.info.state == .created, container.vm == nil, let exit = container.exit { return exit }
        return await container.waitForExit()
    }

    /// The most output a wait's answer carries (`outputUpTo`): stdout and stderr together.
    public static let waitOutputLimit = 1 << 20

    /// Waits until the container ends; with `outputUpTo`, the answer carries its whole stdout
    /// and stderr when they come to at most that many bytes together (else neither: read the
    /// logs); with `remove`, the container is then removed — when asked for its output, only if
    /// the output is in the answer, so nothing is lost. One call where a client would make
    /// four (wait, two log reads, remove), each a round trip to a daemon it finds idle.
    public func waitContainer(_ idOrName: String, outputUpTo limit: Int?, remove: Bool, by actor: String) async throws -> ExitInfo {
        if let limit, !(0...Self.waitOutputLimit).contains(limit) {
            throw EngineError.invalid("output", "output \(limit) is out of range: 0 to \(Self.waitOutputLimit) bytes")
        }
        let container = try container(idOrName)
        var exit = try await waitContainer(container.id)
        if let limit {
            if logSize(container, .stdout) + logSize(container, .stderr) <= limit {
                exit.stdout = Data(readLog(container, .stdout))
                exit.stderr = Data(readLog(container, .stderr))
            }
        }
        guard remove else { return exit }
        exit.removed = false
        guard limit == nil || exit.stdout != nil else { return exit }
        do {
            try await self.remove(container, awaitWorker: false)
            exit.removed = true
            record("container.remove", subject: container.id, actor: actor)
        } catch let error as EngineError where error.kind == .notFound {
            // Removed meanwhile by another call: it is gone all the same.
            exit.removed = true
        }
        return exit
    }

    // MARK: Stop, kill

    /// SIGTERM to the program (its handler runs if it has one), power off after `grace`.
    public func stopContainer(_ idOrName: String, grace: Duration = .seconds(10), by actor: String) async throws -> ExitInfo {
        try await audited("container.stop", subject: idOrName, actor: actor) {
            try await stopContainer(try container(idOrName), grace: grace, actor: actor)
        }
    }

    func stopContainer(_ container: ManagedContainer, grace: Duration, actor: String) async throws -> ExitInfo {
        if let exit = container.exit { return exit }
        if let shard = container.liveShard { return try await stopInWorker(container, shard: shard, grace: grace) }
        if try await killIfNotStarted(container) { return await container.waitForExit() }
        container.vm?.processVM?.sendSignal(15)
        if let exit = await container.waitForExit(timeout: grace) { return exit }
        try await powerOff(container)
        return await container.waitForExit()
    }

    /// Sends a signal: 9 powers the VM off at once (exit 137); others go to the program,
    /// whose handler runs or whose default action applies.
    public func killContainer(_ idOrName: String, signal: Int32 = 9, by actor: String) async throws -> ContainerInfo {
        try await audited("container.kill", subject: idOrName, actor: actor, detail: "{\"signal\":\(signal)}") {
            guard (1...64).contains(signal) else { throw EngineError.invalid("signal", "signal \(signal) is out of range (1...64)") }
            let container = try container(idOrName)
            guard container.exit == nil else { throw EngineError(.conflict, "container \(container.id) is not running") }
            if let shard = container.liveShard {
                let remote = try await workerSet!.connection(shard).call("kill", WorkerKill(id: container.id, signal: signal), as: ContainerInfo.self)
                _ = container.applyRemote(remote)
                return container.info
            }
            if try await killIfNotStarted(container) { return container.info }
            if signal == 9 {
                try await powerOff(container)
            } else {
                container.vm?.processVM?.sendSignal(signal)
            }
            return container.info
        }
    }

    /// A container that never started ends as killed; true when it was such a one.
    private func killIfNotStarted(_ container: ManagedContainer) async throws -> Bool {
        guard container.info.state == .created, let vm = container.markRunning(at: Date().timeIntervalSince1970) else { return false }
        _ = try await onKVMThread { vm.kill() }
        ended(container, ExitInfo(exitCode: 137, reason: "killed before it started"))
        return true
    }

    private func powerOff(_ container: ManagedContainer) async throws {
        guard let vm = container.vm else { return }
        container.closeStdin()
        // kill() waits for the vCPU thread to leave KVM_RUN: a KVM thread's wait.
        _ = try await onKVMThread { vm.kill() }
    }

    // MARK: Stdin

    /// Writes to the container's open standard input (created with openStdin).
    public func attachStdin(_ idOrName: String, data: Data, close: Bool, by actor: String) async throws {
        try await audited("container.attach", subject: idOrName, actor: actor, detail: "{\"bytes\":\(data.count),\"close\":\(close)}") {
            let container = try container(idOrName)
            if let shard = container.liveShard {
                _ = try await workerSet!.connection(shard).call("stdin", WorkerStdin(id: container.id, data: data, close: close), as: WorkerNothing.self)
                return
            }
            // A terminal's signal characters act as they arrive, not when the program reads.
            let input = container.terminal.map { Data($0.takeSignalCharacters(from: Array(data))) } ?? data
            // A pipe whose reader is slow blocks the writer: a KVM thread's wait.
            try await onKVMThread { try container.writeStdin(input, closing: close) }
        }
    }

    // MARK: Resize

    /// Sets the window size of a container's terminal (Docker's resize): its programs read
    /// it with TIOCGWINSZ, and the foreground process group gets SIGWINCH when it changed.
    /// 409 for a container without a terminal or one that has ended.
    public func resizeContainer(_ idOrName: String, rows: Int, columns: Int, by actor: String) async throws {
        try await audited("container.resize", subject: idOrName, actor: actor, detail: "{\"rows\":\(rows),\"columns\":\(columns)}") {
            for (name, value) in [("rows", rows), ("columns", columns)] where !Self.windowRange.contains(value) {
                throw EngineError.invalid(name, "\(name) \(value) is out of range (\(Self.windowRange))")
            }
            let container = try container(idOrName)
            guard container.info.tty == true else { throw EngineError(.conflict, "container \(container.id) has no terminal (create it with tty)") }
            guard container.exit == nil else { throw EngineError(.conflict, "container \(container.id) is not running") }
            if let shard = container.liveShard {
                _ = try await workerSet!.connection(shard).call("resize", WorkerResize(id: container.id, rows: rows, columns: columns), as: WorkerNothing.self)
                return
            }
            container.terminal?.resize(to: GuestTerminal.WindowSize(rows: UInt16(rows), columns: UInt16(columns)))
        }
    }

    /// The window sizes resize accepts (a terminal's are unsigned shorts).
    public static let windowRange = 1...Int(UInt16.max)

    // MARK: Remove

    /// Removes a container: its VM goes back to its parent's pool (or is torn down), its
    /// placement is released, its logs are deleted. A running one only with `force` (killed).
    public func removeContainer(_ idOrName: String, force: Bool = false, by actor: String) async throws {
        try await audited("container.remove", subject: idOrName, actor: actor) {
            let container = try container(idOrName)
            if container.exit == nil {
                // A created container never ran: it goes without force; a running one only with it.
                guard force || container.info.state == .created else {
                    throw EngineError(.conflict, "container \(container.id) is running; stop it or remove with force")
                }
                _ = try await stopContainer(container, grace: .zero, actor: actor)
            }
            try await remove(container)
        }
    }

    /// `awaitWorker` false (a run's own removal): a worker's half of the removal goes on after
    /// the call returns (the container has ended; its VM goes back to its pool meanwhile).
    /// `later`: runs what only wakes the engine's background threads (the VM's return to its
    /// pool, the log folder's recycling) after the caller's answer, on its thread.
    func remove(_ container: ManagedContainer, awaitWorker: Bool = true, later: (@Sendable (@escaping @Sendable () -> Void) -> Void)? = nil) async throws {
        let (vm, wasRemoved) = container.takeForRemoval()
        guard !wasRemoved else { throw EngineError(.notFound, "unknown container \(container.id)", field: "id") }
        let info = container.info
        registry.withLock { registry in
            registry.containers[container.id] = nil
            if registry.names[info.name] == container.id { registry.names[info.name] = nil }
        }
        if let later, let vm { later { vm.remove() } } else { vm?.remove() }
        // Also the disk of a container recorded before a restart (which no longer holds it open);
        // one made here without a disk has none to look for, nor has a worker's (its worker
        // removes its disk: an unlink of a path that is not there, on the event loop, per run).
        if container.shard == nil, container.family == nil || container.disk != nil {
            containerDisks?.remove(id: container.id, root: container.disk)
        }
        let folder = container.logFolder
        if container.removedInWorker {
            // Its worker removed it at its run's end, folder and all.
        } else if let shard = container.shard {
            // The worker that made its folder empties it (and keeps it for its next container);
            // the daemon does when the worker cannot (its folder and its disk).
            let removeThere = { [self] in
                guard await !removeInWorker(container, shard: shard) else { return }
                containerFolders.remove(folder)
                containerDisks?.remove(id: container.id)
            }
            if awaitWorker { await removeThere() } else { Task { await removeThere() } }
        } else if let later {
            let (folders, files, stdinFile) = (containerFolders, container.logFiles, container.stdinFile)
            later { folders.remove(folder, files: files, stdinFile: stdinFile) }
        } else {
            containerFolders.remove(folder, files: container.logFiles, stdinFile: container.stdinFile)
        }
        if let family = container.family, family.childRemoved(container.id) { evict(family, reason: "drained: its last child was removed") }
        if let placementID = info.placementID {
            // A SQLite write under placement's lock: on a blocking thread.
            let placement = self.placement
            _ = try? await onKVMThread { try placement.release(placementID) }
        }
        writer.enqueue { $0.deletedContainers.append(container.id) }
    }

    // MARK: Run

    /// Create, start, wait and collect the output in one call; removes the container
    /// afterwards unless `remove` is false.
    ///
    /// `answer`, when given, hears the result of a worker's run that came back ended (its
    /// output along, removed in the worker) as soon as the worker's answer is read, on the
    /// caller's executor: before this daemon's records of the run and its removal, which follow
    /// in the same turn without a wait (none is asked for a run charged to a pool, whose
    /// release waits for a thread). The daemon serves its Unix socket and its workers on one
    /// event loop, so a caller answered there finds the run recorded and removed by its next
    /// request; the answer does not wait for them. (In one process the loops are several and the
    /// removal short: a run is answered when it is done.)
    ///
    /// `callersThread`: the caller's thread is its own to block (a Unix-socket connection's
    /// own event loop, `ConnectionLoops`), so the container is forked and run on it to its end
    /// with no hop to a container thread and back (two cross-core wake-ups fewer), and what
    /// only wakes the engine's background threads is left to it for after its answer. In
    /// workers mode the worker runs it, as without. `started`: told the container's info on its
    /// thread just before its program runs. `recordsEvents` false: its create, start and remove
    /// go unrecorded here (a worker's run on a caller's connection: its daemon records them).
    public func runContainer(_ spec: ContainerSpec, remove: Bool = true, by actor: String,
                             answer: (@Sendable (RunResult) -> Void)? = nil, handOff: RunAnswerHandOff? = nil,
                             callersThread: CallersThread? = nil, started: (@Sendable (ContainerInfo) -> Void)? = nil,
                             recordsEvents: Bool = true) async throws -> RunResult {
        let answer = remove && spec.pool == nil ? answer : nil
        // Handed to a worker only where the answer goes early anyway; else let go at once.
        let handedOff = answer != nil && workerSet != nil ? handOff : nil
        if handedOff == nil { handOff?.resolved(.notAnswered) }
        // One hop to the container's thread and one back at its end. Its create and start
        // events are queued there before its program runs, so the log has them before its exit.
        // In workers mode one call to the worker creates and starts it; `started` then runs
        // once it is registered, before any exit the worker reported meanwhile is applied.
        let container: ManagedContainer
        do {
            let takeOver: (@Sendable () -> Bool)? = callersThread.map { $0.isCurrent }
            container = try await create(spec, startNow: true, untilEnd: true, removeAtEnd: remove, takeOver: takeOver,
                                         keepsVM: callersThread != nil, answerEnded: answer, handOff: handedOff, started: { [self] made in
                if recordsEvents {
                    record("container.create", subject: made.id, actor: actor)
                    record("container.start", subject: made.id, actor: actor)
                }
                started?(made.info)
            })
        } catch {
            if recordsEvents { record("container.create", subject: spec.name ?? "", actor: actor, result: "\(error)") }
            throw error
        }
        let info = container.info
        let exit = await container.waitForExit()
        let stdout = readLog(container, .stdout)
        let stderr = readLog(container, .stderr)
        if let callersThread, !remove { callersThread.later { container.vm?.release() } }
        if remove {
            try await self.remove(container, awaitWorker: false, later: callersThread?.later)
            if recordsEvents { record("container.remove", subject: info.id, actor: actor) }
        }
        let ended = container.info
        return RunResult(id: info.id, exitCode: exit.exitCode, reason: exit.reason, stdout: String(decoding: stdout, as: UTF8.self),
                         stderr: String(decoding: stderr, as: UTF8.self), forkMicroseconds: info.forkMicroseconds,
                         startedAt: ended.startedAt ?? info.startedAt, finishedAt: ended.finishedAt)
    }

    /// A container's log's bytes: through its open log files when this process made them,
    /// else read from its folder.
    private func readLog(_ container: ManagedContainer, _ stream: LogStream) -> [UInt8] {
        if let output = container.output { return stream == .stderr ? output.stderr : output.stdout }
        if let files = container.logFiles { return files.read(stream) }
        return readAll(stream == .stderr ? container.stderrPath : container.stdoutPath)
    }

    /// A container's log's size in bytes (0 when it cannot be read).
    private func logSize(_ container: ManagedContainer, _ stream: LogStream) -> Int {
        if let files = container.logFiles { return files.size(stream) }
        var info = stat()
        return stat(stream == .stderr ? container.stderrPath : container.stdoutPath, &info) == 0 ? Int(info.st_size) : 0
    }

    /// A log file's bytes, with one open, fstat and read (Foundation's Data(contentsOf:)
    /// took about 20 µs a file, a tenth of a fork). O_NOATIME: with relatime the first read
    /// after a write changes the inode, a journalled write (the engine owns its log files).
    private func readAll(_ path: String) -> [UInt8] {
        var fd = open(path, O_RDONLY | O_CLOEXEC | CSHIMS_O_NOATIME)
        if fd < 0, errno == EPERM { fd = open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        return ContainerLogFiles.readWhole(fd)
    }
}

/// A container's standard streams: stdout and stderr into its log files; stdin from
/// /dev/null, from a file holding what was given, or from a pipe kept open for attach.
private struct ContainerStreams {
    let input: Int32
    /// Whether `input` is this value's own (a stdin file or a pipe), closed once the child holds its duplicate.
    let ownsInput: Bool
    let stdinWriter: Int32
    /// Its log folder.
    let folder: String
    /// Its log files, open (kept with its folder from one container to the next).
    let files: ContainerLogFiles
    /// Whether its folder holds a standard input file.
    let stdinFile: Bool
    /// The container's terminal when it has one (its output goes to stdout.log).
    let terminal: GuestTerminal?
    /// Where each write to stdout.log and stderr.log lands in time (stdout.times, stderr.times).
    let outputTimes: LogTimeIndex
    let errorTimes: LogTimeIndex

    /// `run`: the container is removed at its end (see `ContainerFolders.make(id:run:)`).
    init(id: String, run: Bool, folders: ContainerFolders, stdin: String?, openStdin: Bool, tty: Bool) throws {
        let (folder, files) = try folders.make(id: id, run: run)
        self.folder = folder
        self.files = files
        let timeline = LogTimeline()
        outputTimes = LogTimeIndex(descriptor: files.stdoutTimes, keeper: files, stream: 1, timeline: timeline)
        errorTimes = LogTimeIndex(descriptor: files.stderrTimes, keeper: files, stream: 2, timeline: timeline)
        stdinFile = !openStdin && stdin != nil
        if openStdin {
            var ends: [Int32] = [-1, -1]
            guard pipe(&ends) == 0 else { throw EngineError(.failed, "pipe: \(String(cString: strerror(errno)))") }
            _ = fcntl(ends[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(ends[1], F_SETFD, FD_CLOEXEC)
            (input, ownsInput, stdinWriter) = (ends[0], true, ends[1])
        } else if let stdin {
            let path = ContainerFolder.path("stdin", in: folder)
            try Data(stdin.utf8).write(to: URL(fileURLWithPath: path))
            (input, ownsInput, stdinWriter) = (open(path, O_RDONLY | O_CLOEXEC), true, -1)
        } else {
            (input, ownsInput, stdinWriter) = (folders.devNull, false, -1)
        }
        guard input >= 0 else { throw EngineError(.failed, "cannot open the standard input: \(String(cString: strerror(errno)))") }
        do {
            terminal = tty ? try GuestTerminal(output: files.stdout, outputTimes: outputTimes) : nil
        } catch {
            throw EngineError(.failed, "cannot make the container's terminal: \(error)")
        }
    }

    var standard: StandardStreams {
        StandardStreams(input: input, output: files.stdout, error: files.stderr, outputTimes: outputTimes, errorTimes: errorTimes, terminal: terminal)
    }

    /// The child holds its own duplicates once forked (the log files stay open in `files`).
    func closeChildEnds() {
        if ownsInput { close(input) }
    }

    func closeStdinWriter() {
        if stdinWriter >= 0 { close(stdinWriter) }
    }
}
