import CShims
import Foundation
import ProcessVM
import Logging
import Store
import Synchronization

/// An engine worker's side of the worker protocol (see `WorkerWire`): it listens on
/// STATE/workers/N.sock (mode 0600), serves each connection on a thread of its own, runs the
/// requests on its engine (which holds this shard's warm parents and containers), and pushes
/// container exits and its own parent evictions to the connection that said hello last (the
/// daemon). No daemon connected: containers run on, their output goes to their log files,
/// their exits stay in the engine (and its SQLite state) until the next daemon asks.
public final class WorkerServer: Sendable {
    public let engine: Engine
    public let shard: Int
    let socketPath: String
    /// Its NUMA binding, and what a call outside its seccomp filter gets (reported by `status`).
    let confinement: WorkerConfinement
    let seccompMode: WorkerSeccomp.Mode
    private let listener: Int32
    /// Its system-call poller's thread, started with the server (see `SyscallPoller.startNow`).
    private let pollerThread: Int32?
    /// The answers of runs whose program still runs, by container id (see `WorkerCreate.untilEnd`),
    /// with when each goes without waiting longer for the end.
    private let heldAnswers = Mutex<[String: (answer: WorkerAnswer, deadline: ContinuousClock.Instant, removeAtEnd: Bool)]>([:])
    /// How long a run's answer waits for its program's end before it goes without it: long
    /// enough for a short program on a machine whose exits are dear (at 125-170 µs an exit,
    /// `busybox echo`'s runs under a loaded test suite all took over 2 ms, the limit before,
    /// and each cost the daemon a second call to remove it), short enough that a long run is
    /// listed while it runs.
    static let heldAnswerLimit = Duration.milliseconds(10)
    /// The connection events go to (the last to say hello).
    private let subscriber = WorkerSubscriber()
    /// Callers' connections the daemon handed over, served here (`CallerConnections`).
    private let callers: CallerConnections

    /// Binds the socket (the engine holds its folder's lock, so no other worker of this shard
    /// runs and a socket file left there is stale).
    public init(engine: Engine, shard: Int, socketPath: String, confinement: WorkerConfinement = WorkerConfinement(),
                seccompMode: WorkerSeccomp.Mode = .off) throws {
        self.confinement = confinement
        self.seccompMode = seccompMode
        self.engine = engine
        self.shard = shard
        self.socketPath = socketPath
        callers = CallerConnections(engine: engine, tell: { [subscriber] frame in
            guard let peer = subscriber.withLock({ $0 }) else { return false }
            peer.send(frame: frame)
            return true
        })
        pollerThread = engine.options.pollsSystemCalls ? engine.poller?.startNow() : nil
        unlink(socketPath)
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw EngineError(.failed, "socket: \(String(cString: strerror(errno)))") }
        var address = try WorkerWire.socketAddress(socketPath)
        // unsafe: the pointer to the local sockaddr_un is used only inside the closure, for bind's call.
        let bound = withUnsafePointer(to: &address) {
            // unsafe: sockaddr_un is a sockaddr of the size given.
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, chmod(socketPath, 0o600) == 0, listen(listener, 16) == 0 else {
            let message = String(cString: strerror(errno))
            close(listener)
            throw EngineError(.failed, "cannot listen on \(socketPath): \(message)")
        }
        engine.setObservers(EngineObservers(
            exit: { [weak self] info, counters, container in
                let exit = WorkerExit(info: info, vmExits: counters?.exits, pageFaults: counters?.pageFaults,
                                      emulatedInstructions: counters?.emulatedInstructions)
                guard let self else { return }
                // A run on a held connection: its end goes with the run's own message.
                if callers.ended(exit) { return }
                // A run's answer held until now goes first, in the same write when it can,
                // with the run's end (and the container removed here when the run asked).
                let subscriber = subscriber.withLock { $0 }
                var frames: [[UInt8]] = []
                // A run's removal here begins once its answer is written: the task's thread,
                // woken before, took the core the answer was waiting for (traced).
                var removing = false
                defer { if removing { Task { [engine] in try? await engine.removeContainer(info.id, force: true, by: "daemon") } } }
                if let held = heldAnswers.withLock({ $0.removeValue(forKey: info.id) }), let started = held.answer.takeHeldInfo() {
                    let (frame, withEnd, removed) = endedAnswer(held.answer, started: started, exit: exit, container: container,
                                                                removeAtEnd: held.removeAtEnd)
                    let toSubscriber = held.answer.peer === subscriber
                    if toSubscriber { frames.append(frame) } else { held.answer.peer.send(frame: frame) }
                    // The answer said so: the container goes as the daemon's remove would have made it go.
                    removing = removed
                    if withEnd && toSubscriber {
                        // No exit event: the answer carried the end to the daemon.
                        subscriber?.send(frames: frames)
                        return
                    }
                }
                guard let subscriber else { return }
                if let frame = WorkerQuick.exitEvent(exit) {
                    frames.append(frame)
                    subscriber.send(frames: frames)
                } else {
                    subscriber.send(frames: frames)
                    subscriber.send(WorkerEventMessage(event: "exit", body: exit))
                }
            },
            event: { [weak self] row in
                guard row.actor == "engine", row.type == "parent.evict" || row.type == "parent.shrink" else { return }
                self?.subscriber.withLock { $0 }?.send(WorkerEventMessage(event: "event", body: row))
            }))
    }

    /// A held run answer with its end: the output goes along when it is small, and then the
    /// container is removed here if the run asked (`removing`); else the daemon reads the log
    /// files and removes it, as for any container.
    private func endedAnswer(_ answer: WorkerAnswer, started: ContainerInfo, exit: WorkerExit, container: ManagedContainer,
                             removeAtEnd: Bool) -> (frame: [UInt8], withEnd: Bool, removing: Bool) {
        var end = WorkerRunEnd(exit: exit, stdout: nil, stderr: nil, removed: false)
        if let files = container.logFiles {
            // The program has ended: the sizes taken here are the logs' whole.
            let (stdoutSize, stderrSize) = (files.size(.stdout), files.size(.stderr))
            if stdoutSize + stderrSize <= WorkerRunEnd.inlineLimit {
                end.stdout = files.read(.stdout, size: stdoutSize)
                end.stderr = files.read(.stderr, size: stderrSize)
                end.removed = removeAtEnd
            }
        }
        guard var frame = WorkerQuick.reply(id: answer.id, info: started, end: end) else {
            if let handOff = answer.takeHandOff() { close(handOff.connection) }
            return (answer.frame(started), false, false)
        }
        // The caller's answer first, straight to its connection, then this reply to the daemon
        // (which writes nothing there before it has the reply), saying what went.
        if let handOff = answer.takeHandOff() {
            if end.removed, let stdout = end.stdout, let stderr = end.stderr {
                let ended = exit.info
                let result = RunResult(id: started.id, exitCode: ended.exitCode ?? 137, reason: ended.exitReason ?? "exited",
                                       stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self),
                                       forkMicroseconds: started.forkMicroseconds, startedAt: started.startedAt ?? ended.startedAt,
                                       finishedAt: ended.finishedAt)
                if let body = result.quickBytes() {
                    let written = Self.writeAnswer(to: handOff.connection, head: handOff.head, body: body)
                    frame = WorkerQuick.withAnswered(frame, written: written.count, rest: written.rest)
                }
            }
            close(handOff.connection)
        }
        return (frame, true, end.removed)
    }

    /// Writes a run's HTTP answer to the caller's connection without waiting for room: what
    /// went, and the rest (all of it when the caller has gone or holds a full buffer).
    private static func writeAnswer(to connection: Int32, head: String, body: [UInt8]) -> (count: Int, rest: [UInt8]) {
        let bytes = CallerSocket.answer(head: head, body: body)
        let sent = CallerSocket.send(bytes, to: connection, waiting: false).sent
        return (sent, Array(bytes[sent...]))
    }

    /// Accepts connections until the process ends (call from a thread that may block).
    public func serve() -> Never {
        engine.logger.info("worker listening", metadata: ["shard": "\(shard)", "socket": "\(socketPath)", "pid": "\(getpid())"])
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                engine.logger.error("accept failed", metadata: ["error": "\(String(cString: strerror(errno)))"])
                usleep(100_000)
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let peer = WorkerPeer(fd: fd)
            engine.runners.run { [self] in read(peer) }
        }
    }

    /// Reads a connection's requests on a container runner thread until one of them, a create
    /// that starts its container, makes this thread that container's (see `ReaderBaton`).
    private func read(_ peer: WorkerPeer) {
        var ready = [pollfd(fd: peer.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: peer.timer, events: Int16(POLLIN), revents: 0)]
        while true {
            ready[0].revents = 0
            ready[1].revents = 0
            let count = poll(&ready, peer.timer >= 0 ? 2 : 1, -1)
            if count < 0 {
                if errno == EINTR { continue }
                break
            }
            if ready[1].revents != 0 { sendExpiredAnswers(of: peer) }
            guard ready[0].revents != 0 else { continue }
            guard let bytes = try? WorkerWire.readFrame(peer.fd, received: peer.received) else { break }
            let frame = WorkerFrame(bytes)
            guard let header = frame.header, let op = header.op else { break }
            if op == "takeConnection" || op == "sync" || op == "endConnections" {
                // On the reader's thread: the descriptors come in the order of the frames that
                // carry them, and a sync's reply follows everything written before it.
                takeConnectionOrSync(op, id: header.id, frame: frame, peer: peer)
            } else if op == "create" {
                // Begun on this thread, up to its first wait: no hop to another thread on the
                // way to the fork, and none to the container's thread, which this one becomes
                // when the create gets that far here (the reading goes on on another; `Task.immediate`
                // then returns at the container's end). (Not a remove: it empties the container's
                // folder, file system work this thread would then do before it reads the next request.)
                let baton = ReaderBaton { [self] in engine.runners.run { [self] in read(peer) } }
                Task.immediate { await handle(op, id: header.id, frame: frame, peer: peer, baton: baton) }
                if baton.passed { return }
            } else {
                Task { await handle(op, id: header.id, frame: frame, peer: peer) }
            }
        }
        let wasSubscriber = subscriber.withLock { subscriber -> Bool in
            guard subscriber === peer else { return false }
            subscriber = nil
            return true
        }
        // The daemon is gone: the callers' connections it handed over close (no run is served
        // here that no daemon would record; its callers connect again, to the next daemon).
        if wasSubscriber { callers.endAll() }
        peer.close()
    }

    /// A caller's connection handed over (`CallerConnections`); a sync, whose reply says that
    /// everything this worker wrote before (a held connection's run, told as its answer went,
    /// and the runs going on) is ahead of it on the stream; or the end of every connection
    /// held (the daemon shuts down).
    private func takeConnectionOrSync(_ op: String, id: UInt64, frame: WorkerFrame, peer: WorkerPeer) {
        if op == "endConnections" {
            callers.endAll()
            return peer.send(frame: WorkerQuick.done(id: id))
        }
        guard op == "takeConnection" else { return callers.announceRunning { peer.send(frame: WorkerQuick.done(id: id)) } }
        let connection = peer.takeReceived()
        do {
            let request = try body(WorkerTakeConnection.self, frame)
            guard let connection else { throw EngineError(.invalid, "takeConnection came without its connection") }
            guard callers.count < CallerConnections.limit else {
                throw EngineError(.unavailable, "this worker holds \(CallerConnections.limit) callers' connections already")
            }
            callers.take(connection, key: request.key, actor: request.actor, leftover: Array(request.leftover))
            peer.send(frame: WorkerQuick.done(id: id))
        } catch {
            if let connection { close(connection) }
            peer.send(WorkerReply<WorkerNothing>(id: id, result: nil, error: WorkerFault(error)))
        }
    }

    /// Sends the held answers of `peer`'s runs whose limit has passed (on its reader thread,
    /// when its timer fires), and sets the timer again for the next one.
    private func sendExpiredAnswers(of peer: WorkerPeer) {
        peer.drainTimer()
        let now = ContinuousClock.now
        let (due, next) = heldAnswers.withLock { held -> ([WorkerAnswer], ContinuousClock.Instant?) in
            var due: [WorkerAnswer] = []
            var next: ContinuousClock.Instant?
            for (id, entry) in held where entry.answer.peer === peer {
                if entry.deadline <= now {
                    due.append(entry.answer)
                    held[id] = nil
                } else {
                    next = min(next ?? entry.deadline, entry.deadline)
                }
            }
            return (due, next)
        }
        for answer in due { if let frame = answer.takeHeldWithoutEnd() { peer.send(frame: frame) } }
        if let next { peer.armTimer(after: next - now) }
    }

    private func body<Body: Codable>(_ type: Body.Type, _ frame: WorkerFrame) throws -> Body {
        do { return try JSONDecoder().decode(WorkerRequest<Body>.self, from: frame.data).body } catch {
            throw EngineError(.invalid, "malformed worker request: \(error)")
        }
    }

    private func handle(_ op: String, id: UInt64, frame: WorkerFrame, peer: WorkerPeer, baton: ReaderBaton? = nil) async {
        let actor = "daemon"
        switch op {
        case "hello":
            await peer.reply(id) { [self] in
                // Events go to this connection from now on; anything that ends after the
                // snapshot below arrives as an event (the daemon ignores a second exit).
                // A new daemon holds none of the callers' connections the last one handed over.
                let previous = subscriber.withLock { subscriber in
                    defer { subscriber = peer }
                    return subscriber
                }
                if previous !== peer { callers.endAll() }
                return WorkerHello(shard: shard, pid: getpid(), version: Engine.version, containers: engine.containers(),
                                   parents: try await engine.parents(withSharing: false), pollerThread: pollerThread)
            }
        case "create":
            // Created and started: answered from the container's own thread just before its
            // program runs (no hop back to this task first), so the reply always precedes its exit.
            let answer = WorkerAnswer(id: id, peer: peer)
            do {
                let request = try WorkerQuick.create(frame.member("body")) ?? body(WorkerCreate.self, frame)
                // Taken here, on the reader's thread before any wait: the descriptors come in
                // the order of the frames that carry them.
                if let head = request.answerHead, let connection = peer.takeReceived() {
                    answer.handOff(connection: connection, head: head)
                }
                if let image = request.image { try await engine.adopt(image: image) }
                let untilEnd = request.start && request.untilEnd == true
                let removeAtEnd = untilEnd && request.removeAtEnd == true
                var started: (@Sendable (ManagedContainer) -> Void)?
                if untilEnd {
                    // A run: answered with its exit (the exit observer above), or after the limit.
                    started = { [self] (made: ManagedContainer) -> Void in
                        answer.hold(made.info)
                        heldAnswers.withLock { $0[made.id] = (answer, .now + Self.heldAnswerLimit, removeAtEnd) }
                        // The connection's reader sends it when the limit passes first; no
                        // thread is woken for it meanwhile (a timer thread woken as the
                        // program started took the core its system-call poller then needed).
                        peer.armTimer(after: Self.heldAnswerLimit)
                    }
                } else if request.start {
                    started = { (made: ManagedContainer) -> Void in
                        let info: ContainerInfo = made.info
                        answer.send(info)
                    }
                }
                var takeOver: (@Sendable () -> Bool)?
                if let baton { takeOver = { baton.pass() } }
                let made = try await engine.create(request.spec, startNow: request.start, id: request.id, untilEnd: untilEnd,
                                                   removeAtEnd: removeAtEnd, takeOver: takeOver, started: started)
                answer.send(made.info)
            } catch {
                answer.fail(error)
            }
        case "start":
            await peer.reply(id) { [self] in try await engine.startContainer(try body(WorkerContainerRef.self, frame).id, by: actor) }
        case "stop":
            await peer.reply(id) { [self] in
                let request = try body(WorkerStop.self, frame)
                return try await engine.stopContainer(request.id, grace: .milliseconds(max(0, request.graceMilliseconds)), by: actor)
            }
        case "kill":
            await peer.reply(id) { [self] in
                let request = try body(WorkerKill.self, frame)
                return try await engine.killContainer(request.id, signal: request.signal, by: actor)
            }
        case "stdin":
            await peer.reply(id) { [self] in
                let request = try body(WorkerStdin.self, frame)
                try await engine.attachStdin(request.id, data: request.data, close: request.close, by: actor)
                return WorkerNothing()
            }
        case "resize":
            await peer.reply(id) { [self] in
                let request = try body(WorkerResize.self, frame)
                try await engine.resizeContainer(request.id, rows: request.rows, columns: request.columns, by: actor)
                return WorkerNothing()
            }
        case "remove":
            do {
                let request = try WorkerQuick.remove(frame.member("body")) ?? body(WorkerRemove.self, frame)
                try await engine.removeContainer(request.id, force: request.force, by: actor)
                peer.send(frame: WorkerQuick.done(id: id))
            } catch {
                peer.send(WorkerReply<WorkerNothing>(id: id, result: nil, error: WorkerFault(error)))
            }
        case "processes":
            await peer.reply(id) { [self] in try await engine.containerProcesses(try body(WorkerContainerRef.self, frame).id) }
        case "stats":
            await peer.reply(id) { [self] in try await engine.containerStats(try body(WorkerContainerRef.self, frame).id) }
        case "memory":
            await peer.reply(id) { [self] in
                let wanted = Set(try body(WorkerMemoryRequest.self, frame).ids)
                let running = engine.containers().filter { wanted.contains($0.id) }
                var figures: [String: ContainerMemory] = [:]
                for info in await engine.withMemory(running) { if let memory = info.memory { figures[info.id] = memory } }
                return figures
            }
        case "parents":
            await peer.reply(id) { [self] in
                let request = try body(WorkerParents.self, frame)
                guard let policy = request.id else { return try await engine.parents(withSharing: request.sharing) }
                do { return [try await engine.parent(policy, withSharing: request.sharing)] } catch let error as EngineError where error.kind == .notFound {
                    return [ParentInfo]()
                }
            }
        case "ensureParents":
            await peer.reply(id) { [self] in
                let request = try body(WorkerEnsureParents.self, frame)
                return try await engine.ensureParents(request.policy, image: request.image)
            }
        case "drainParents":
            await peer.reply(id) { [self] in try await engine.drainParents(try body(WorkerParentRef.self, frame).id, by: actor) }
        case "removeParents":
            await peer.reply(id) { [self] in
                do { try await engine.removeParents(try body(WorkerParentRef.self, frame).id, by: actor) } catch let error as EngineError where error.kind == .notFound {
                    // Never made here: nothing to remove.
                }
                return WorkerNothing()
            }
        case "pressure":
            await peer.reply(id) { [self] in
                let request = try body(WorkerPressure.self, frame)
                let reading = MemoryReading(availableKiB: request.availableKiB, totalKiB: request.totalKiB, stalledPercent: request.stalledPercent)
                let policy = MemoryPressurePolicy(minimumAvailableMiB: request.minimumAvailableMiB, maximumStalledPercent: request.maximumStalledPercent)
                return try await engine.onBlockingThread { [engine] in engine.relieveMemoryPressure(reading, policy: policy) }
            }
        case "costs":
            await peer.reply(id) { [self] in
                let costs = try body(MachineCosts.self, frame)
                engine.poller?.setCosts(costs)
                engine.logger.info("machine costs from the daemon", metadata: ["costs": "\(costs.summary)"])
                return WorkerNothing()
            }
        case "status":
            await peer.reply(id) { [self] in try await status(sharing: (try? body(WorkerStatusRequest.self, frame).sharing) ?? false) }
        #if DEBUG
        case "debug.tryCreate":
            // The proof that the Landlock domain is live (debug builds only): the errno of
            // creating a file at the path given (0: made, and removed again).
            await peer.reply(id) { Int(cshims_try_create(try body(WorkerTryCreate.self, frame).path)) }
        case "debug.forbiddenCall", "debug.x32Call":
            // The proof that the seccomp filter is live (debug builds only): a fork, or an x32
            // call, which the filter answers by ending this process with SIGSYS.
            await peer.reply(id) { Int(cshims_seccomp_forbidden_call(op == "debug.x32Call" ? 1 : 0)) }
        case "debug.connect":
            // A connect, which the filter refuses (EACCES) rather than ending the worker.
            await peer.reply(id) { Int(cshims_seccomp_forbidden_call(2)) }
        #endif
        case "shutdown":
            let grace = (try? body(WorkerShutdown.self, frame).graceMilliseconds) ?? 10_000
            await engine.shutdown(grace: .milliseconds(grace))
            await peer.reply(id) { WorkerNothing() }
            engine.logger.info("worker stopped", metadata: ["shard": "\(shard)"])
            unlink(socketPath)
            exit(0)
        default:
            await peer.reply(id) { () throws -> WorkerNothing in throw EngineError(.invalid, "unknown worker op \(op)") }
        }
    }
}

/// One connection to a worker, as the worker sees it: replies and events, one writer at a time.
final class WorkerPeer: Sendable {
    let fd: Int32
    /// A one-shot timer its reader thread polls with the socket (held run answers); -1 when
    /// none could be made (a run's answer then waits for its end).
    let timer: Int32
    private let writeLock = Mutex(false)
    /// Descriptors the daemon passed with its frames (a run's caller's connection), in order.
    private let descriptors = Mutex<[Int32]>([])

    init(fd: Int32) {
        self.fd = fd
        timer = cshims_timerfd_create(CLOCK_MONOTONIC)
    }

    /// Sets the timer to fire once after `delay` (a system call; no thread is woken).
    func armTimer(after delay: Duration) {
        guard timer >= 0 else { return }
        let nanoseconds = max(Int64(1), Int64(delay.components.seconds) * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000)
        let setting: [Int64] = [0, 0, nanoseconds / 1_000_000_000, nanoseconds % 1_000_000_000]
        _ = cshims_timerfd_settime(timer, 0, setting, nil)
    }

    func drainTimer() {
        var expirations: UInt64 = 0
        // unsafe: reads at most the 8 bytes of the local it points to.
        _ = Glibc.read(timer, &expirations, 8)
    }

    func send<Message: Encodable>(_ message: Message) {
        guard let payload = try? JSONEncoder().encode(message) else { return }
        send(frame: payload)
    }

    /// Messages already written (`WorkerQuick`), in one write.
    func send(frames payloads: [[UInt8]]) {
        guard !payloads.isEmpty else { return }
        writeLock.withLock { closed in
            guard !closed else { return }
            if (try? WorkerWire.writeFrames(fd, payloads)) == nil { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    /// A message already written (`WorkerQuick`).
    func send<Bytes: Collection<UInt8>>(frame payload: Bytes) {
        writeLock.withLock { closed in
            guard !closed else { return }
            // A daemon gone (or stalled past its socket buffer) costs the worker nothing it
            // needs: the exit is kept in the engine for the next daemon's hello.
            if (try? WorkerWire.writeFrame(fd, payload)) == nil { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    func reply<Result: Codable & Sendable>(_ id: UInt64, _ body: () async throws -> Result) async {
        do {
            send(WorkerReply(id: id, result: try await body(), error: nil))
        } catch {
            send(WorkerReply<Result>(id: id, result: nil, error: WorkerFault(error)))
        }
    }

    /// Keeps a descriptor that came with a frame (its reader's thread).
    @Sendable func received(_ descriptor: Int32) {
        descriptors.withLock { $0.append(descriptor) }
    }

    /// The first descriptor not yet taken, for the frame that said it carried one.
    func takeReceived() -> Int32? {
        descriptors.withLock { $0.isEmpty ? nil : $0.removeFirst() }
    }

    func close() {
        writeLock.withLock { closed in
            if !closed {
                Glibc.close(fd)
                if timer >= 0 { Glibc.close(timer) }
            }
            closed = true
        }
        for descriptor in descriptors.withLock({ let taken = $0; $0 = []; return taken }) { Glibc.close(descriptor) }
    }
}

/// The one reply to a request that may be answered from more than one place (a create: from
/// the container's thread as it starts, else when the call returns; a run's: with its exit, or
/// when it has run a while): the first answer is sent, or held (`hold`) for `takeHeld`.
final class WorkerAnswer: Sendable {
    private enum State {
        case open
        case held(ContainerInfo)
        case done
    }

    let id: UInt64
    let peer: WorkerPeer
    private let state = Mutex(State.open)
    /// The caller's connection and the head of its HTTP answer, when the daemon handed the
    /// answer over (`WorkerCreate.answerHead`); closed by whichever answer goes without it.
    private let handedOff = Mutex<(connection: Int32, head: String)?>(nil)

    init(id: UInt64, peer: WorkerPeer) { (self.id, self.peer) = (id, peer) }

    func handOff(connection: Int32, head: String) { handedOff.withLock { $0 = (connection, head) } }

    /// The handed-over connection, once.
    func takeHandOff() -> (connection: Int32, head: String)? { handedOff.withLock { let taken = $0; $0 = nil; return taken } }

    /// Whether the answer is still open (and now taken); an answer taken here goes without
    /// the caller's HTTP answer, which the daemon then writes.
    private func claim() -> Bool {
        let claimed = state.withLock { state in
            guard case .open = state else { return false }
            state = .done
            return true
        }
        if claimed, let handOff = takeHandOff() { close(handOff.connection) }
        return claimed
    }

    func send(_ info: ContainerInfo) {
        guard claim() else { return }
        peer.send(frame: Self.frame(id, info))
    }

    func fail(_ error: Error) {
        guard claim() else { return }
        peer.send(WorkerReply<ContainerInfo>(id: id, result: nil, error: WorkerFault(error)))
    }

    /// Keeps the answer (unless one went already) for `takeHeld`.
    func hold(_ info: ContainerInfo) {
        state.withLock { state in
            if case .open = state { state = .held(info) }
        }
    }

    /// The held answer as a frame, once; nil when none is held.
    func takeHeld() -> [UInt8]? { takeHeldInfo().map { frame($0) } }

    /// The held answer as a frame, once, without the caller's HTTP answer (its limit passed
    /// before the run's end); nil when none is held.
    func takeHeldWithoutEnd() -> [UInt8]? {
        guard let frame = takeHeld() else { return nil }
        if let handOff = takeHandOff() { close(handOff.connection) }
        return frame
    }

    /// The held answer's info, once; nil when none is held.
    func takeHeldInfo() -> ContainerInfo? {
        state.withLock { state -> ContainerInfo? in
            guard case .held(let info) = state else { return nil }
            state = .done
            return info
        }
    }

    /// The answer with `info` as its result.
    func frame(_ info: ContainerInfo) -> [UInt8] { Self.frame(id, info) }

    private static func frame(_ id: UInt64, _ info: ContainerInfo) -> [UInt8] {
        if let frame = WorkerQuick.reply(id: id, info: info) { return frame }
        return (try? Array(JSONEncoder().encode(WorkerReply(id: id, result: info, error: nil)))) ?? []
    }
}

/// The reading of a worker connection, passed from the thread that read a create to another
/// runner thread so that the reader can run the container itself: without, the reader woke a
/// runner thread for it, one more wake-up (and a core to find) between a run's request and its
/// fork. The wake-up of the next reader happens beside the container's run instead.
final class ReaderBaton: Sendable {
    /// The thread that read the create (a task begun with `Task.immediate` may go on on
    /// another after a wait: that one must not run a container, nor pass the reading on).
    private let reader = pthread_self()
    private let handedOn = Atomic<Bool>(false)
    private let startNextReader: @Sendable () -> Void

    init(startNextReader: @escaping @Sendable () -> Void) { self.startNextReader = startNextReader }

    /// On the reader's thread, once: starts the next reader and returns true (this thread is
    /// then the container's); elsewhere false.
    func pass() -> Bool {
        guard pthread_equal(pthread_self(), reader) != 0, !handedOn.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        startNextReader()
        return true
    }

    var passed: Bool { handedOn.load(ordering: .acquiring) }
}

/// The daemon's connection as the worker's events' destination (the last to say hello).
final class WorkerSubscriber: Sendable {
    private let peer = Mutex<WorkerPeer?>(nil)

    func withLock<Result>(_ body: (inout WorkerPeer?) -> Result) -> Result { peer.withLock { body(&$0) } }
}
