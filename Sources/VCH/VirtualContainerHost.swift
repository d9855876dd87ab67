import API
import Engine
import Foundation
import Logging
import Synchronization

/// One Virtual Container Host: the Docker Engine API for one resource pool, over the host
/// agent's API. Its containers carry the label `vmfork.vch=NAME` and are charged to its pool;
/// it never shows or touches a container without that label, so VCHs side by side cannot
/// see each other's. Names are kept apart in the agent by a "NAME." prefix.
public final class VirtualContainerHost: Sendable {
    public struct Configuration: Sendable {
        /// The VCH's name (its containers' label, its names' prefix).
        public var name: String
        /// The placement resource pool its containers are charged to.
        public var pool: String

        public init(name: String, pool: String) {
            self.name = name
            self.pool = pool
        }
    }

    /// The Docker Engine API version this VCH implements and announces in /_ping and /version;
    /// newer clients (the docker CLI 28 speaks 1.50) negotiate down to it.
    public static let apiVersion = "1.43"
    public static let minimumAPIVersion = "1.24"
    public static let version = "0.1.0-vmfork-vch"

    /// Labels the VCH keeps on its containers (never shown as the user's labels).
    enum Label {
        static let owner = "vmfork.vch"
        static let autoRemove = "vmfork.vch.autoremove"
        static let tty = "vmfork.vch.tty"
        static let openStdin = "vmfork.vch.stdin"
        static let stdinOnce = "vmfork.vch.stdinonce"
        static func isInternal(_ key: String) -> Bool { key == owner || key.hasPrefix(owner + ".") }
    }

    let configuration: Configuration
    let agent: AgentBackend
    let logger: Logger
    let watch = ContainerWatch()
    let events: EventTranslator
    let auditLog: AuditLog
    let feed: AgentFeed
    /// Containers this VCH just created, as the agent answered the create: the docker CLI's
    /// attach, wait and start that follow name them by id, and are answered from here
    /// instead of asking the agent again (until the start, or `createdLifetime`).
    private let created = Mutex<[String: (info: ContainerInfo, at: ContinuousClock.Instant)]>([:])
    static let createdLifetime = Duration.seconds(5)
    /// False with VMFORK_VCH_CACHES=0 in the environment: every image and container lookup
    /// asks the agent (how scripts/vch-bench.sh measures what the caches save).
    let caches = ProcessInfo.processInfo.environment["VMFORK_VCH_CACHES"] != "0"

    public init(configuration: Configuration, agent: AgentClient, logger: Logger) throws {
        guard Self.validName(configuration.name) else {
            throw DockerError.badRequest("VCH name \"\(configuration.name)\" must be 1-30 letters, digits, '_' or '-', starting with a letter or digit")
        }
        self.configuration = configuration
        self.agent = AgentBackend(client: agent, logger: logger.logLevel <= .debug ? logger : nil)
        self.logger = logger
        self.events = EventTranslator(owner: configuration.name)
        self.feed = AgentFeed(client: agent, logger: logger)
        self.auditLog = AuditLog(agent: self.agent, vch: configuration.name, pool: configuration.pool, logger: logger)
    }

    var name: String { configuration.name }

    /// Whether the debug log traces each request's times (see `Timeline`).
    var tracing: Bool { logger.logLevel <= .debug }

    static func validName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 30, CharacterSet.alphanumerics.contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_-".unicodeScalars.contains($0)) }
    }

    /// Checks the agent answers and the pool exists in its placement state.
    public func checkBackend() async throws {
        let pools = try await agent.get("/v1/placement/pools", as: [PoolFigures].self)
        guard pools.contains(where: { $0.name == configuration.pool }) else {
            throw DockerError.notFound("pool \(configuration.pool) is not in the host agent's placement state (add it with POST /v1/placement/pools)")
        }
    }

    // MARK: Containers of this VCH

    /// This VCH's containers, as the agent reports them.
    func containers() async throws -> [ContainerInfo] {
        let label = AgentBackend.escape("\(Label.owner)=\(name)")
        let all = try await agent.get("/v1/containers?label=\(label)", as: [ContainerInfo].self)
        for info in all { events.remember(info) }
        return all
    }

    /// The container a Docker reference names: its full id, its name (with or without the
    /// leading "/"), or a unique id prefix, among this VCH's containers only.
    /// `justCreated`: a container this VCH created a moment ago and has not started is
    /// taken as the create left it (the steps of a `docker run`).
    func resolve(_ reference: String, justCreated: Bool = false) async throws -> ContainerInfo {
        let wanted = reference.hasPrefix("/") ? String(reference.dropFirst()) : reference
        guard !wanted.isEmpty else { throw DockerError.noSuchContainer(reference) }
        if justCreated, caches, let recent = created.withLock({ $0[wanted] }), ContinuousClock.now - recent.at < Self.createdLifetime {
            return recent.info
        }
        // A full id (what the CLI sends after create): one lookup, not the whole list.
        if wanted.utf8.count == 32, wanted.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) {
            if let info = try? await agent.get("/v1/containers/\(wanted)", as: ContainerInfo.self) {
                events.remember(info)
                guard info.labels[Label.owner] == name else { throw DockerError.noSuchContainer(reference) }
                return info
            }
        }
        let all = try await containers()
        if let exact = all.first(where: { $0.id == wanted || dockerName($0) == wanted }) { return exact }
        let prefixed = all.filter { $0.id.hasPrefix(wanted) }
        if prefixed.count > 1 { throw DockerError.badRequest("multiple IDs found with provided prefix: \(wanted)") }
        guard let found = prefixed.first else { throw DockerError.noSuchContainer(reference) }
        return found
    }

    /// Remembers a container this VCH created (see `created`).
    func rememberCreated(_ info: ContainerInfo) {
        let now = ContinuousClock.now
        created.withLock { table in
            if table.count > 100 { table = table.filter { now - $0.value.at < Self.createdLifetime } }
            table[info.id] = (info, now)
        }
    }

    /// Forgets one: it was started, stopped, killed or removed.
    func forgetCreated(_ id: String) { _ = created.withLock { $0.removeValue(forKey: id) } }

    /// The agent's name of a Docker name in this VCH.
    func agentName(_ dockerName: String) -> String { "\(name).\(dockerName)" }

    /// The Docker name of one of this VCH's containers.
    func dockerName(_ info: ContainerInfo) -> String { dockerName(agentName: info.name) }

    func dockerName(agentName: String) -> String {
        agentName.hasPrefix(name + ".") ? String(agentName.dropFirst(name.count + 1)) : agentName
    }

    static func userLabels(_ info: ContainerInfo) -> [String: String] { info.labels.filter { !Label.isInternal($0.key) } }
}

/// The part of the agent's pool report (CapacityReport.Pool) the VCH reads.
struct PoolFigures: Decodable {
    struct Amount: Decodable {
        let memoryKiB: Int
        let cpuMHz: Int
    }
    let name: String
    let reservation: Amount
    let memoryLimitKiB: Int?
    let cpuLimitMHz: Int?
    let held: Amount
    let usedByForks: Amount
    let usedByWarmParents: Amount
    let free: Amount
    let forks: Int
}
