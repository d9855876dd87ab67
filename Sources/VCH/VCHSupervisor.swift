import API
import Foundation
import Logging
import Synchronization

/// Runs the host agent's VCHs inside the daemon's process (the agent's `VCHHosting`): each
/// VCH is the same `VirtualContainerHost` and `VCHServer` that `vmfork vch serve` runs, and
/// calls the agent through its client on the agent's own Unix socket, as a separate VCH would.
public final class VCHSupervisor: VCHHosting {
    private let running = Mutex<[String: VCHServer]>([:])
    private let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    public func start(_ vch: VCHRecord, dockerHost: String, tokenFile: String?, agentSocket: String) async throws {
        let listen = try VCHServer.Listen(parsing: dockerHost)
        let token = try tokenFile.map { try VCHToken.loadOrCreate(path: $0) }
        var logger = self.logger
        logger[metadataKey: "vch"] = "\(vch.name)"
        let host = try VirtualContainerHost(configuration: .init(name: vch.name, pool: vch.pool), agent: AgentClient(socketPath: agentSocket),
                                            logger: logger)
        try await host.checkBackend()
        try await host.resumeAutoRemoval()
        let server = try await VCHServer(host: host, listen: listen, token: token, logger: logger)
        let previous = running.withLock { $0.updateValue(server, forKey: vch.name) }
        await previous?.close()
    }

    public func stop(_ name: String) async {
        let server = running.withLock { $0.removeValue(forKey: name) }
        await server?.close()
        if server != nil { logger.info("VCH stopped", metadata: ["vch": "\(name)"]) }
    }
}
