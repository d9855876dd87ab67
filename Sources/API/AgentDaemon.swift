import Engine
import Foundation
import Hummingbird
import HummingbirdCore
import KVM
import Logging
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import Store

/// `vmfork serve`: the engine behind the HTTP API, on the state folder's Unix socket (mode
/// 0600) and, when asked, on a TCP address where every request needs the bearer token.
///
/// SIGTERM or SIGINT: the engine refuses new work and stops the running containers (SIGTERM
/// to each program, power off after the grace period), then the listeners stop accepting and
/// finish the requests in flight, then the engine's shutdown completes (VMs released, state
/// flushed), the socket file goes, and `run` returns (the command exits 0). See `Engine` for
/// the engine's own order.
public struct AgentDaemon: Sendable {
    public struct Options: Sendable {
        public var stateFolder: URL
        /// "127.0.0.1:PORT" (or any host:port) to listen on TCP too.
        public var listen: String?
        /// Pages served on the TCP listener beside the API (the UI module's), signed in with the same tokens.
        public var webFrontEnd: (any AgentWebFrontEnd)?
        /// Runs the agent's VCHs in this process (the VCH module's); without it, creating one is refused.
        public var vchHosting: (any VCHHosting)?
        public var stopGrace: Duration
        /// When idle pools shrink and idle parents are evicted.
        public var memoryPressure: MemoryPressurePolicy
        /// The KVM system the engine's VMs use (and so their system-call poller): its own by
        /// default; benchmarks that run several engines in one process give them one.
        public var kvmSystem: KVMSystem?
        /// Containers of pulled images run from the image's layer disks (ext4 in VMDK) instead of its folder.
        public var rootfsFromLayerDisks = false
        /// Containers' non-blocking system calls served by the polling thread (`EngineOptions`).
        public var pollsSystemCalls = true
        /// Containers' programs have their system calls rewritten at load (`EngineOptions`).
        public var rewritesSystemCalls = true
        /// Containers' programs buffer their writes to their logs in the program (`EngineOptions`).
        public var buffersOutput = true
        /// Engine workers holding the VMs (nil or a count of 0: the daemon holds them itself).
        public var workers: WorkerSettings?
        /// Connections served at once on each listener; one more is answered 429 and closed.
        public var maxConnections = AgentLimits.defaultMaxConnections
        /// Unix-socket connections served on a thread of their own at most, where a run goes
        /// from fork to exit without leaving it (`ConnectionLoops`); beyond, connections share
        /// the event loops as on TCP. 0: all share. Not in workers mode (one loop reads the
        /// workers' replies and serves the socket).
        public var connectionThreads = AgentLimits.defaultConnectionThreads
        /// How much of the event log the database keeps (`EventRetention`).
        public var eventRetention = EventRetention.standard

        public init(stateFolder: URL, listen: String? = nil, stopGrace: Duration = .seconds(10),
                    memoryPressure: MemoryPressurePolicy = MemoryPressurePolicy(), kvmSystem: KVMSystem? = nil,
                    workers: WorkerSettings? = nil) {
            self.stateFolder = stateFolder
            self.kvmSystem = kvmSystem
            self.listen = listen
            self.stopGrace = stopGrace
            self.memoryPressure = memoryPressure
            self.workers = workers
        }
    }

    public static let socketName = "vmfork.sock"
    let options: Options
    let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    /// The OpenAPI document this build serves (the repository's Sources/API/openapi.json).
    public static func openAPIDocument() throws -> Data {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json") else {
            throw EngineError(.failed, "openapi.json is missing from the API module's resources")
        }
        return try Data(contentsOf: url)
    }

    /// (METHOD, path) of every operation in the document.
    public static func documentedOperations(_ document: Data) throws -> Set<String> {
        guard let root = try JSONSerialization.jsonObject(with: document) as? [String: Any],
              let paths = root["paths"] as? [String: [String: Any]] else { throw EngineError(.failed, "openapi.json has no paths") }
        var operations = Set<String>()
        for (path, item) in paths {
            for method in item.keys where method != "parameters" { operations.insert("\(method.uppercased()) \(path)") }
        }
        return operations
    }

    /// Runs until SIGTERM or SIGINT; throws when the daemon cannot start (another daemon holds
    /// the folder, the socket cannot be bound).
    public func run() async throws {
        guard options.connectionThreads >= 0 else {
            throw EngineError(.invalid, "--connection-threads \(options.connectionThreads) must be 0 or more", field: "connectionThreads")
        }
        guard options.maxConnections > 0 else {
            throw EngineError(.invalid, "--max-connections \(options.maxConnections) must be at least 1", field: "maxConnections")
        }
        // The daemon owns its process: files it makes are private (token, logs, socket), and a
        // write to a container's standard input whose reader is gone gets EPIPE, not SIGPIPE.
        umask(0o077)
        signal(SIGPIPE, SIG_IGN)
        let folder = options.stateFolder
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["vmfork_fork_duration_seconds"] = [5, 10, 15, 20, 30, 50, 100, 200, 500, 1000, 5000, 20000].map { Duration.microseconds($0) }
        // Workers mode: the Unix socket's connections and the connections to the workers are
        // served on one event loop, so that a worker's reply wakes the very loop its request
        // waits on (the daemon routes; the workers, on the other cores, run the VMs).
        var workers = options.workers
        workers?.rewritesSystemCalls = options.rewritesSystemCalls
        workers?.buffersOutput = options.buffersOutput
        let serving: any EventLoopGroup = workers == nil ? MultiThreadedEventLoopGroup.singleton : MultiThreadedEventLoopGroup.singleton.next()
        if workers != nil, let loop = serving as? any EventLoop { workers?.reader = EventLoopWorkerReader(loop: loop) }
        var engineOptions = EngineOptions(workers: workers, pollsSystemCalls: options.pollsSystemCalls, rewritesSystemCalls: options.rewritesSystemCalls,
                                          buffersOutput: options.buffersOutput)
        engineOptions.containerThreadsKept = EngineOptions.daemonContainerThreads
        engineOptions.eventRetention = options.eventRetention
        let engine = try Engine(stateFolder: folder, logger: logger, metricsFactory: factory, options: engineOptions,
                                system: options.kvmSystem, rootfsFromLayerDisks: options.rootfsFromLayerDisks)
        // Workers mode: find the workers a previous daemon left running (or start them) and
        // take their containers into the view before serving.
        try await engine.startWorkers()
        let tokens = try TokenFile.loadOrCreate(in: folder)
        let documentData = try Self.openAPIDocument()
        let documented = try Self.documentedOperations(documentData)
        let socketPath = folder.appendingPathComponent(Self.socketName).path
        let vchs = try VCHRegistry(engine: engine, hosting: options.vchHosting, agentSocket: socketPath, logger: logger)
        let routes = AgentRoutes(engine: engine, registry: registry, document: ByteBuffer(bytes: documentData), vchs: vchs)
        let inFlight = InFlightCounter()

        /// tcp: the bearer token names the caller; otherwise the caller is named already (the
        /// Unix socket's server puts the peer's uid in the context, and calls inside the daemon
        /// name their own).
        func router(tcp: Bool) throws -> Router<AgentContext> {
            let router = Router(context: AgentContext.self)
            // Who calls comes first, so that every refusal after it is recorded under the caller.
            if tcp {
                router.add(middleware: BearerTokenMiddleware(tokens: tokens, engine: engine, frontEndPrefix: options.webFrontEnd?.pathPrefix))
            }
            router.add(middleware: ErrorMiddleware(inFlight: inFlight, engine: engine))
            let recorder = AgentRoutes.Recorder()
            routes.register(on: router, recorder: recorder)
            let served = Set(recorder.routes.map { "\($0.method) \($0.path)" })
            guard served == documented else {
                throw EngineError(.failed, "the routes differ from openapi.json: served only \(served.subtracting(documented).sorted()), documented only \(documented.subtracting(served).sorted())")
            }
            return router
        }

        unlink(socketPath)  // a stale socket of a daemon that died; the engine's lock says none runs now
        let logger = self.logger
        // Each listener counts its own connections, so that a flood on TCP leaves the Unix
        // socket (the CLI, the VCHs' calls and event follows) its own share.
        let maxConnections = options.maxConnections
        let connectionThreads = min(options.connectionThreads, maxConnections)
        func http(_ limit: ConnectionLimit) -> HTTPServerBuilder {
            HTTPServerBuilder { responder in
                OnTheEventLoop(inner: HTTP1Channel(responder: responder, configuration: .init(
                    additionalChannelHandlers: [ConnectionLimitHandler(limit: limit, logger: logger), AbandonedStreamHandler()],
                    idleTimeout: AgentLimits.idleTimeout)))
            }
        }
        let accepted = maxConnections.multipliedReportingOverflow(by: AgentLimits.acceptedPerServed)
        let acceptedAtOnce = accepted.overflow ? Int.max : accepted.partialValue
        var services: [any Service] = []
        let (unixReady, unixReadySignal) = AsyncStream.makeStream(of: Void.self)
        let (tcpReady, tcpReadySignal) = AsyncStream.makeStream(of: Void.self)
        let tcpListens = options.listen != nil
        let unixServer = AgentHTTPServer(
            socketPath: socketPath, group: serving,
            // In workers mode the one loop that reads the workers' replies serves the socket too,
            // its connections accepted here, so that a run's connection can go to its worker
            // (`RunAnswerHandOff`).
            connectionLoops: workers != nil ? ConnectionLoops(capacity: 0, shared: serving)
                : connectionThreads > 0 ? ConnectionLoops(capacity: connectionThreads, shared: serving) : nil,
            responder: try router(tcp: false).buildResponder(), limit: ConnectionLimit(maxConnections),
            acceptedAtOnce: acceptedAtOnce, logger: logger,
            // In workers mode a run's worker may keep its connection (`CallerConnections`).
            handsOverTo: workers != nil ? engine : nil,
            listenAfter: {
                guard tcpListens else { return }
                for await _ in tcpReady { break }
            },
            onListening: {
                chmod(socketPath, 0o600)
                logger.info("listening", metadata: ["socket": "\(socketPath)"])
                unixReadySignal.yield()
                unixReadySignal.finish()
            })
        services.append(unixServer)
        if let listen = options.listen {
            let parts = listen.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]), (0...65535).contains(port) else {
                throw EngineError(.invalid, "--listen \(listen) is not HOST:PORT", field: "listen")
            }
            let tcpRouter = try router(tcp: true)
            if let frontEnd = options.webFrontEnd {
                let local = LocalAgentAPI(responder: try router(tcp: false).buildResponder(), logger: logger)
                frontEnd.register(on: tcpRouter, api: local, tokens: tokens)
            }
            let tcpApp = Application(
                router: tcpRouter, server: http(ConnectionLimit(maxConnections)),
                configuration: ApplicationConfiguration(address: .hostname(String(parts[0]), port: port), serverName: "vmfork",
                                                        availableConnectionsDelegate: MaximumAvailableConnections(acceptedAtOnce)),
                onServerRunning: { channel in
                    logger.info("listening", metadata: ["tcp": "\(channel.localAddress.map { "\($0)" } ?? listen)"])
                    tcpReadySignal.yield()
                    tcpReadySignal.finish()
                },
                logger: logger)
            services.append(tcpApp)
        }
        // Last in the group, so first to be told to shut down: it stops the containers while
        // the listeners still answer the requests in flight (waits, followers end with them).
        services.append(EngineService(engine: engine, grace: options.stopGrace, memoryPressure: options.memoryPressure))
        // After the engine, so first to stop: the VCHs close before the containers stop.
        services.append(VCHService(vchs: vchs, ready: unixReady))
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        unlink(socketPath)
        logger.info("daemon stopped")
    }
}

/// The engine inside the daemon's service group: warms the recorded parents up at start; on
/// graceful shutdown runs the engine's shutdown (see `Engine`).
struct EngineService: Service {
    let engine: Engine
    let grace: Duration
    let memoryPressure: MemoryPressurePolicy

    func run() async throws {
        let warmUp = Task { await engine.warmUp() }
        let watcher = Task { [engine, memoryPressure] in await engine.watchMemoryPressure(policy: memoryPressure) }
        let measurer = Task { [engine] in await engine.watchMeasuredFigures() }
        try? await gracefulShutdown()
        warmUp.cancel()
        watcher.cancel()
        measurer.cancel()
        await engine.shutdown(grace: grace)
    }
}

/// The agent's VCHs inside the daemon's service group: started once the Unix socket (which
/// they call the agent on) listens; stopped first at shutdown.
struct VCHService: Service {
    let vchs: VCHRegistry
    let ready: AsyncStream<Void>

    func run() async throws {
        let start = Task { [vchs, ready] in
            for await _ in ready { break }
            await vchs.startAll()
        }
        try? await gracefulShutdown()
        start.cancel()  // a shutdown before the socket listened: nothing to start
        await start.value
        await vchs.stopAll()
    }
}
