import API
import Engine
import ArgumentParser
import Foundation
import Logging
import Placement
import Store
import UI
import VCH

/// `vmfork serve`: the host agent in the foreground.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the host agent: the engine behind its HTTP API on STATE/vmfork.sock (and TCP with --listen).",
        discussion: """
            The API is described by Sources/API/openapi.json, also served at /v1/openapi.json. Example:
              vmfork serve --state state &
              curl --unix-socket state/vmfork.sock http://localhost/v1/version
            SIGTERM or SIGINT stops the running containers (SIGTERM, then power off after --stop-grace), \
            flushes the state and exits 0.
            """
    )

    @Option(help: "The state folder (default: $VMFORK_STATE, else ./state).")
    var state: String?

    @Option(help: "Also listen on TCP at HOST:PORT (e.g. 127.0.0.1:8080); every request there needs the bearer token in STATE/api-token.")
    var listen: String?

    @Option(help: "Seconds a running container gets between SIGTERM and power-off when the daemon stops.")
    var stopGrace = 10

    @Option(help: "Memory pressure below this much MemAvailable (MiB): idle pools shrink, then idle parents are evicted.")
    var pressureAvailableMib = 1024

    @Option(help: "Memory pressure above this share of time stalled on memory (/proc/pressure/memory some avg10, %).")
    var pressureStalledPercent = 10.0

    @Flag(inversion: .prefixedNo, help: "Run pulled images' containers from their layer disks (ext4 in the VMDK chain, served over io_uring), each writing into a child disk of its own; --no-rootfs-from-disks runs them from their unpacked folders, read-only.")
    var rootfsFromDisks = true

    @Flag(inversion: .prefixedNo, help: "Serve containers' system calls that cannot block from the engine's polling thread, without a VM exit (it spins while they make calls; it takes a core); with --no-poll-syscalls every call is a VM exit. Engine workers always poll.")
    var pollSyscalls = true

    @Flag(inversion: .prefixedNo, help: "Rewrite containers' `mov eax, N; syscall` pairs as their programs are loaded, so that those calls skip PVM's SYSCALL switch (one exit fewer each; none when polled). Passed on to engine workers.")
    var rewriteSyscalls = true

    @Flag(inversion: .prefixedNo, help: "Let containers' programs buffer their writes to their logs in the program, with no VM exit; the engine writes them out before the program's next call, at its end, and within ~100 ms while it computes. Passed on to engine workers.")
    var bufferOutput = true

    @Option(help: "Connections served at once on each listener (the socket, the TCP address), followers and waits included; one more is answered 429 Too Many Requests and closed.")
    var maxConnections = AgentLimits.defaultMaxConnections

    @Option(help: "Socket connections served on a thread of their own at most (default: as many as the cores), where a container run goes from fork to exit without a hand-off (two thread wake-ups fewer); beyond, connections share the event loops. 0: all share.")
    var connectionThreads = AgentLimits.defaultConnectionThreads

    @Option(help: "Events the database keeps at most; older ones are purged, in recorded purges (0: no cap).")
    var eventsKept = EventRetention.standard.keptEvents ?? 0

    @Option(help: "Days an event stays in the database at most (0: no age limit).")
    var eventsMaxDays = (EventRetention.standard.maxAge ?? 0) / 86_400

    @Option(help: "A folder where purged events are written first, as JSON Lines (events-FIRSTID.jsonl); without it they are dropped and only the purge is recorded.")
    var eventsArchive: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "Engine worker processes holding the VMs (0: the daemon holds them; default $VMFORK_WORKERS, else 0). See README, \"Engine workers\".")
    var workers: Int?

    static let maxConnectionsRange = 1...1_000_000

    var workerCount: Int { workers ?? ProcessInfo.processInfo.environment["VMFORK_WORKERS"].flatMap(Int.init) ?? 0 }

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel) is not a log level") }
        guard (0...3600).contains(stopGrace) else { throw ValidationError("--stop-grace \(stopGrace) is out of range (0...3600)") }
        guard Self.maxConnectionsRange.contains(maxConnections) else {
            throw ValidationError("--max-connections \(maxConnections) is out of range (\(Self.maxConnectionsRange))")
        }
        guard (0...Self.maxConnectionsRange.upperBound).contains(connectionThreads) else {
            throw ValidationError("--connection-threads \(connectionThreads) is out of range (0...\(Self.maxConnectionsRange.upperBound))")
        }
        guard eventsKept >= 0 else { throw ValidationError("--events-kept \(eventsKept) is negative (0: no cap)") }
        guard eventsMaxDays >= 0, eventsMaxDays.isFinite else { throw ValidationError("--events-max-days \(eventsMaxDays) is not a number of days (0: no age limit)") }
        guard WorkerSettings.range.contains(workerCount) else {
            throw ValidationError("--workers \(workerCount) is out of range (\(WorkerSettings.range)); check VMFORK_WORKERS too")
        }
    }

    func run() async throws {
        var logger = Logger(label: "vmfork") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let folder = state.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? PlacementService.defaultFolder
        let pressure = MemoryPressurePolicy(minimumAvailableMiB: pressureAvailableMib, maximumStalledPercent: pressureStalledPercent)
        var options = AgentDaemon.Options(stateFolder: folder, listen: listen, stopGrace: .seconds(stopGrace), memoryPressure: pressure,
                                          workers: workerCount > 0 ? WorkerSettings(count: workerCount, logLevel: logLevel) : nil)
        options.rootfsFromLayerDisks = rootfsFromDisks
        options.pollsSystemCalls = pollSyscalls
        options.rewritesSystemCalls = rewriteSyscalls
        options.buffersOutput = bufferOutput
        options.maxConnections = maxConnections
        options.connectionThreads = connectionThreads
        options.eventRetention = EventRetention(keptEvents: eventsKept > 0 ? eventsKept : nil, maxAge: eventsMaxDays > 0 ? eventsMaxDays * 86_400 : nil,
                                                archiveFolder: eventsArchive.map { URL(fileURLWithPath: $0, isDirectory: true) })
        // Wired here, not in the API module, so that neither the API nor the UI depends on the VCH.
        options.webFrontEnd = try WebUI(logger: logger)
        options.vchHosting = VCHSupervisor(logger: logger)
        let daemon = AgentDaemon(options: options, logger: logger)
        do {
            try await daemon.run()
        } catch {
            logger.critical("vmfork serve: \(error)")
            throw ExitCode(1)
        }
    }
}
