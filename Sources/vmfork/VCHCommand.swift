import API
import ArgumentParser
import Foundation
import Logging
import Placement
import Synchronization
import VCH

/// `vmfork vch serve`: a Virtual Container Host, the Docker Engine API for one resource pool.
struct VCHCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vch",
        abstract: "Virtual Container Hosts: the Docker Engine API in front of the host agent, one resource pool each.",
        subcommands: [Serve.self, Create.self, List.self, Remove.self]
    )

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "Serve the Docker Engine API for one pool; the docker CLI points at it with -H or DOCKER_HOST.",
            discussion: """
                Example (the host agent runs with vmfork serve --state state; the pool exists in its placement state):
                  vmfork vch serve --name dev --pool dev --listen unix:///tmp/dev.sock --state state &
                  docker -H unix:///tmp/dev.sock run --rm busybox echo hi
                On TCP every request needs Authorization: Bearer TOKEN (the token file's first line); the docker CLI
                sends it from config.json: {"HttpHeaders": {"Authorization": "Bearer TOKEN"}}.
                """
        )

        @Option(help: "The VCH's name: its containers' label and name prefix.")
        var name: String

        @Option(help: "The placement resource pool its containers are charged to.")
        var pool: String

        @Option(help: "unix://PATH or tcp://HOST:PORT.")
        var listen: String

        @Option(help: "For tcp://: the file holding the bearer token (made with a random one when absent, mode 0600).")
        var tokenFile: String?

        @Option(help: "The host agent's state folder (default: $VMFORK_STATE, else ./state); its socket is vmfork.sock there.")
        var state: String?

        @Option(help: "The host agent's socket (instead of the state folder's).")
        var socket: String?

        @Option(help: "Connections served at once, attaches and followers included; one more is answered 429 Too Many Requests and closed.")
        var maxConnections = VCHServer.defaultMaxConnections

        @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
        var logLevel = "info"

        func validate() throws {
            guard (1...1_000_000).contains(maxConnections) else {
                throw ValidationError("--max-connections \(maxConnections) is out of range (1...1000000)")
            }
        }

        func run() async throws {
            var logger = Logger(label: "vmfork.vch") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            let folder = state.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? PlacementService.defaultFolder
            let agent = AgentClient(socketPath: socket ?? folder.appendingPathComponent(AgentDaemon.socketName).path)
            do {
                let listen = try VCHServer.Listen(parsing: listen)
                var token: String?
                if case .tcp = listen {
                    guard let tokenFile else { throw ValidationError("--listen \(listen) (TCP) needs --token-file") }
                    token = try VCHToken.loadOrCreate(path: tokenFile)
                }
                // Watched from here on: a SIGTERM while the VCH starts (its socket is listening
                // before the wait below) stops it too, instead of being lost.
                let termination = TerminationSignal()
                let host = try VirtualContainerHost(configuration: .init(name: name, pool: pool), agent: agent, logger: logger)
                try await host.checkBackend()
                try await host.resumeAutoRemoval()
                let server = try await VCHServer(host: host, listen: listen, token: token, maxConnections: maxConnections, logger: logger)
                await termination.wait()
                logger.info("VCH stopping", metadata: ["vch": "\(name)"])
                await server.close()
            } catch let error as ValidationError {
                throw error
            } catch {
                logger.critical("vmfork vch serve: \(error)")
                throw ExitCode(1)
            }
        }
    }
}

/// SIGTERM and SIGINT, watched from its creation on: `wait()` returns at the first one, at once
/// if it came already. Made before the VCH listens: a SIGTERM that came between "VCH
/// listening" and the wait was ignored before, and the VCH never stopped (a test's stop hung).
final class TerminationSignal: Sendable {
    private let fired: Fired
    private let queue = DispatchQueue(label: "vmfork.vch.signals")
    // nonisolated(unsafe): set once in init and never read; it only keeps the sources alive.
    nonisolated(unsafe) private let sources: [any DispatchSourceSignal]

    init() {
        let fired = Fired()
        self.fired = fired
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGTERM, SIGINT] {
            // The default action (ending the process at once) off, then libdispatch's source on.
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { fired.fire() }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func wait() async { await fired.wait() }

    /// Whether a signal came, and who waits for one.
    private final class Fired: Sendable {
        private struct State {
            var fired = false
            var waiters: [CheckedContinuation<Void, Never>] = []
        }
        private let state = Mutex(State())

        func wait() async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.fired { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        }

        func fire() {
            let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.fired = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }
}
