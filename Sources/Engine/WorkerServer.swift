import CShims
import Foundation
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
    /// The connection events go to (the last to say hello).
    private let subscriber = Mutex<WorkerPeer?>(nil)

    /// Binds the socket (the engine holds its folder's lock, so no other worker of this shard
    /// runs and a socket file left there is stale).
    public init(engine: Engine, shard: Int, socketPath: String, confinement: WorkerConfinement = WorkerConfinement(),
                seccompMode: WorkerSeccomp.Mode = .off) throws {
        self.confinement = confinement
        self.seccompMode = seccompMode
        self.engine = engine
        self.shard = shard
        self.socketPath = socketPath
        unlink(socketPath)
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw EngineError(.failed, "socket: \(String(cString: strerror(errno)))") }
        var address = try WorkerWire.socketAddress(socketPath)
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
            exit: { [weak self] info, counters in
                let exit = WorkerExit(info: info, vmExits: counters?.exits, pageFaults: counters?.pageFaults,
                                      emulatedInstructions: counters?.emulatedInstructions)
                self?.subscriber.withLock { $0 }?.send(WorkerEventMessage(event: "exit", body: exit))
            },
            event: { [weak self] row in
                guard row.actor == "engine", row.type == "parent.evict" || row.type == "parent.shrink" else { return }
                self?.subscriber.withLock { $0 }?.send(WorkerEventMessage(event: "event", body: row))
            }))
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
            let thread = Thread { [self] in read(peer) }
            thread.name = "vmfork-worker-peer"
            thread.start()
        }
    }

    private func read(_ peer: WorkerPeer) {
        let decoder = JSONDecoder()
        while true {
            guard let frame = try? WorkerWire.readFrame(peer.fd), let header = try? decoder.decode(WorkerHeader.self, from: frame),
                  let op = header.op else { break }
            Task { await handle(op, id: header.id, frame: frame, peer: peer) }
        }
        subscriber.withLock { if $0 === peer { $0 = nil } }
        peer.close()
    }

    private func body<Body: Codable>(_ type: Body.Type, _ frame: Data) throws -> Body {
        do { return try JSONDecoder().decode(WorkerRequest<Body>.self, from: frame).body } catch {
            throw EngineError(.invalid, "malformed worker request: \(error)")
        }
    }

    private func handle(_ op: String, id: UInt64, frame: Data, peer: WorkerPeer) async {
        let actor = "daemon"
        switch op {
        case "hello":
            await peer.reply(id) { [self] in
                // Events go to this connection from now on; anything that ends after the
                // snapshot below arrives as an event (the daemon ignores a second exit).
                subscriber.withLock { $0 = peer }
                return WorkerHello(shard: shard, pid: getpid(), version: Engine.version, containers: engine.containers(),
                                   parents: try await engine.parents(withSharing: false))
            }
        case "create":
            await peer.reply(id) { [self] in
                let request = try body(WorkerCreate.self, frame)
                try await engine.adopt(image: request.image)
                return try await engine.create(request.spec, startNow: request.start, id: request.id).info
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
            await peer.reply(id) { [self] in
                let request = try body(WorkerRemove.self, frame)
                try await engine.removeContainer(request.id, force: request.force, by: actor)
                return WorkerNothing()
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
    private let writeLock = Mutex(false)

    init(fd: Int32) { self.fd = fd }

    func send<Message: Encodable>(_ message: Message) {
        guard let payload = try? JSONEncoder().encode(message) else { return }
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

    func close() {
        writeLock.withLock { closed in
            if !closed { Glibc.close(fd) }
            closed = true
        }
    }
}
