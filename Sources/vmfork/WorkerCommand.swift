import Engine
import ArgumentParser
import Foundation
import Logging

/// `vmfork worker`: one engine worker, the process that holds a shard's VMs. The daemon
/// (`vmfork serve --workers N`) starts it in a session of its own and talks to it over
/// STATE/workers/N.sock; it outlives the daemon, which finds it again when it restarts.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run one engine worker (started by `vmfork serve --workers N`; not for direct use).",
        discussion: """
            Holds the warm parents and containers placed on shard N; its own state (images and \
            policies it serves, its containers and their exit statuses) is in STATE/workers/N/, the \
            containers' logs in STATE/containers/. Protocol: see Sources/Engine/WorkerProtocol.swift.
            """
    )

    @Option(help: "The daemon's state folder.")
    var state: String

    @Option(help: "This worker's shard number.")
    var shard: Int

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Flag(inversion: .prefixedNo, help: "Rewrite containers' system calls at load (the daemon's --rewrite-syscalls).")
    var rewriteSyscalls = true

    @Flag(inversion: .prefixedNo, help: "Let containers' programs buffer their writes to their logs (the daemon's --buffer-output).")
    var bufferOutput = true

    func validate() throws {
        guard WorkerSettings.range.contains(shard) else { throw ValidationError("--shard \(shard) is out of range (\(WorkerSettings.range))") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel) is not a log level") }
    }

    func run() async throws {
        // Files it makes are private (logs, socket); a write to a pipe whose reader is gone gets EPIPE.
        umask(0o077)
        signal(SIGPIPE, SIG_IGN)
        // The NUMA binding and the capabilities go first (the worker execs itself once bound
        // and without them; see WorkerConfinement.confine): nothing below needs a capability.
        guard let seccompMode = WorkerSeccomp.mode(from: ProcessInfo.processInfo.environment) else {
            FileHandle.standardError.write(Data("vmfork worker: \(WorkerSeccomp.environmentVariable) is not one of kill, log, off\n".utf8))
            throw ExitCode(1)
        }
        let confinement: WorkerConfinement
        do { confinement = try WorkerConfinement.confine(shard: shard, stateFolder: URL(fileURLWithPath: state, isDirectory: true)) } catch {
            FileHandle.standardError.write(Data("vmfork worker: \(error)\n".utf8))
            throw ExitCode(1)
        }
        var logger = Logger(label: "vmfork.worker.\(shard)") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let root = URL(fileURLWithPath: state, isDirectory: true)
        let workers = root.appendingPathComponent("workers", isDirectory: true)
        do {
            let engine = try Engine.worker(stateFolder: root, shard: shard, logger: logger, rewritesSystemCalls: rewriteSyscalls,
                                           buffersOutput: bufferOutput)
            let server = try WorkerServer(engine: engine, shard: shard, socketPath: workers.appendingPathComponent("\(shard).sock").path,
                                          confinement: confinement, seccompMode: seccompMode)
            if let failure = confinement.numaFailure { logger.warning("worker not bound to its NUMA node", metadata: ["error": "\(failure)"]) }
            if let failure = confinement.landlockFailure { logger.warning("worker without its Landlock domain", metadata: ["error": "\(failure)"]) }
            // Its engine, state and socket made: from here on only the engine's system calls.
            try WorkerSeccomp.install(seccompMode)
            logger.info("worker confined", metadata: ["seccomp": "\(seccompMode.rawValue)", "numaNode": "\(confinement.numaNode.map(String.init) ?? "none")",
                                                      "landlockABI": "\(confinement.landlockABI.map(String.init) ?? "none")"])
            Task { await engine.warmUp() }
            let thread = Thread { server.serve() }
            thread.name = "vmfork-worker-accept"
            thread.start()
            // A worker whose socket file is gone (its state folder removed) can never be found
            // by a daemon again: it stops rather than hold its VMs for nobody.
            let socketPath = workers.appendingPathComponent("\(shard).sock").path
            while true {
                try await Task.sleep(for: .seconds(2))
                if !FileManager.default.fileExists(atPath: socketPath) {
                    logger.warning("socket file removed: the worker stops", metadata: ["socket": "\(socketPath)"])
                    Foundation.exit(0)
                }
            }
        } catch {
            logger.critical("vmfork worker: \(error)")
            throw ExitCode(1)
        }
    }
}
