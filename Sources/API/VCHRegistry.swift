import Engine
import Foundation
import Logging
import Placement

/// A Virtual Container Host the agent owns: recorded in the state folder (STATE/vchs.json),
/// its Docker-API endpoint started inside the daemon's process by a `VCHHosting` (the VCH
/// module, wired in by the vmfork executable so that the API does not depend on it), and
/// started again after a daemon restart.
public struct VCHRecord: Codable, Sendable, Equatable {
    public var name: String
    /// The placement resource pool its containers are charged to.
    public var pool: String
    /// "unix" (a socket at STATE/vch/NAME.sock) or "tcp://127.0.0.1:PORT" (with a bearer token).
    public var listen: String
    public var createdAt: Double
}

/// A VCH as the API shows it.
public struct VCHInfo: Codable, Sendable, Equatable {
    public var name: String
    public var pool: String
    public var listen: String
    public var createdAt: Double
    /// "running", "starting" (recorded, not yet started after a daemon start) or "failed".
    public var state: String
    public var failure: String?
    /// Where the docker CLI points: unix:///PATH or tcp://127.0.0.1:PORT.
    public var dockerHost: String
    /// The line to type: docker -H ADDRESS ps.
    public var dockerCommand: String
    /// For TCP: the file holding the bearer token the docker CLI sends (config.json HttpHeaders).
    public var tokenFile: String?
    /// Its containers now (any state).
    public var containers: Int
}

/// Starts and stops VCH endpoints in the daemon's process.
public protocol VCHHosting: Sendable {
    /// Starts serving `vch` on `dockerHost` (docker -H spelling), talking to the agent at
    /// `agentSocket`; `tokenFile` is set for TCP. Throws when it cannot (the pool is missing,
    /// the address is taken).
    func start(_ vch: VCHRecord, dockerHost: String, tokenFile: String?, agentSocket: String) async throws
    /// Stops its endpoint (closes the listener and its connections).
    func stop(_ name: String) async
}

/// The daemon's VCHs: their records, and which of them run.
public actor VCHRegistry {
    public static let fileName = "vchs.json"
    public static let maximumCount = 16
    /// The label the VCH puts on its containers (VCH's VirtualContainerHost.Label.owner).
    public static let ownerLabel = "vmfork.vch"

    let engine: Engine
    let hosting: (any VCHHosting)?
    let agentSocket: String
    let logger: Logger
    private var records: [String: VCHRecord] = [:]
    private var failures: [String: String] = [:]
    /// The VCHs whose endpoints listen now.
    private var running: Set<String> = []
    /// Names and TCP addresses of creations in progress: the actor is reentrant at each await,
    /// so a second request for the same name or address is refused while the first starts.
    private var pending: Set<String> = []

    init(engine: Engine, hosting: (any VCHHosting)?, agentSocket: String, logger: Logger) throws {
        self.engine = engine
        self.hosting = hosting
        self.agentSocket = agentSocket
        self.logger = logger
        let url = engine.stateFolder.appendingPathComponent(Self.fileName)
        if FileManager.default.fileExists(atPath: url.path) {
            let list = try JSONDecoder().decode([VCHRecord].self, from: Data(contentsOf: url))
            for record in list { records[record.name] = record }
        }
    }

    var folder: URL { engine.stateFolder.appendingPathComponent("vch", isDirectory: true) }

    func dockerHost(_ record: VCHRecord) -> String {
        record.listen == "unix" ? "unix://" + folder.appendingPathComponent("\(record.name).sock").path : record.listen
    }

    func tokenFile(_ record: VCHRecord) -> String? {
        record.listen == "unix" ? nil : folder.appendingPathComponent("\(record.name).token").path
    }

    func info(_ record: VCHRecord) -> VCHInfo {
        let host = dockerHost(record)
        let count = engine.containers(ContainerFilter(labels: ["\(Self.ownerLabel)=\(record.name)"])).count
        let failure = hosting == nil ? "this daemon was started without VCH hosting" : failures[record.name]
        return VCHInfo(name: record.name, pool: record.pool, listen: record.listen, createdAt: record.createdAt,
                       state: failure != nil ? "failed" : running.contains(record.name) ? "running" : "starting", failure: failure, dockerHost: host,
                       dockerCommand: "docker -H \(host) ps", tokenFile: tokenFile(record), containers: count)
    }

    public func list() -> [VCHInfo] { records.values.sorted { $0.name < $1.name }.map(info) }

    public func get(_ name: String) throws -> VCHInfo {
        guard let record = records[name] else { throw EngineError(.notFound, "no VCH named \(name)", field: "name") }
        return info(record)
    }

    /// Checks the request, records the VCH and starts it; nothing is kept when it cannot start.
    public func create(name: String, pool: String, listen: String?, by actor: String) async throws -> VCHInfo {
        try Self.checkName(name)
        guard pool.utf8.count >= 1, pool.utf8.count <= 128 else { throw EngineError(.invalid, "pool must be 1-128 bytes", field: "pool") }
        let listen = try Self.checkListen(listen ?? "unix")
        guard let hosting else { throw EngineError(.unavailable, "this daemon was started without VCH hosting (vmfork serve wires it in)") }
        return try await audited("vch.create", subject: name, actor: actor, detail: "pool \(pool), \(listen)") {
            guard records[name] == nil, !pending.contains(name) else { throw EngineError(.conflict, "a VCH named \(name) exists already", field: "name") }
            guard records.count + pending.count / 2 < Self.maximumCount else {
                throw EngineError(.conflict, "this agent has \(Self.maximumCount) VCHs, the most it keeps")
            }
            if listen != "unix", let taken = records.values.first(where: { $0.listen == listen })?.name ?? (pending.contains(listen) ? "being created" : nil) {
                throw EngineError(.conflict, "a VCH (\(taken)) listens on \(listen) already", field: "listen")
            }
            // Held until this creation ends, either way (a name and an address: two entries).
            pending.formUnion([name, listen == "unix" ? "unix:\(name)" : listen])
            defer { pending.subtract([name, listen == "unix" ? "unix:\(name)" : listen]) }
            let placement = engine.placement
            let pools = try await engine.onBlockingThread { try placement.read { core in try core.capacityReport() } }.pools
            guard pools.contains(where: { $0.name == pool }) else {
                throw EngineError(.invalid, "pool \(pool) is not in the placement state (create it first: POST /v1/placement/pools)", field: "pool")
            }
            let record = VCHRecord(name: name, pool: pool, listen: listen, createdAt: Date().timeIntervalSince1970)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            do {
                try await hosting.start(record, dockerHost: dockerHost(record), tokenFile: tokenFile(record), agentSocket: agentSocket)
            } catch {
                throw EngineError(.invalid, "VCH \(name) cannot start: \(error)", field: "listen")
            }
            records[name] = record
            failures[name] = nil
            running.insert(name)
            do {
                try save()
            } catch {
                await hosting.stop(name)
                records[name] = nil
                running.remove(name)
                throw error
            }
            return info(record)
        }
    }

    /// Stops and forgets a VCH; refused while it has containers unless `force`, which removes them first.
    public func delete(_ name: String, force: Bool, by actor: String) async throws {
        try await audited("vch.delete", subject: name, actor: actor, detail: force ? "force" : "") {
            guard let record = records[name] else { throw EngineError(.notFound, "no VCH named \(name)", field: "name") }
            let containers = engine.containers(ContainerFilter(labels: ["\(Self.ownerLabel)=\(name)"]))
            if !containers.isEmpty && !force {
                throw EngineError(.conflict, "VCH \(name) has \(containers.count) container(s); remove them first, or delete with force=true")
            }
            for container in containers { try await engine.removeContainer(container.id, force: true, by: actor) }
            await hosting?.stop(name)
            records[name] = nil
            failures[name] = nil
            running.remove(name)
            try save()
            if record.listen == "unix" { unlink(folder.appendingPathComponent("\(name).sock").path) }
        }
    }

    /// Starts every recorded VCH (at daemon start); one that cannot start is shown as failed.
    public func startAll() async {
        guard let hosting else { return }
        for record in records.values.sorted(by: { $0.name < $1.name }) {
            do {
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                try await hosting.start(record, dockerHost: dockerHost(record), tokenFile: tokenFile(record), agentSocket: agentSocket)
                failures[record.name] = nil
                running.insert(record.name)
                engine.record("vch.start", subject: record.name, actor: "daemon")
            } catch {
                failures[record.name] = "\(error)"
                engine.record("vch.start", subject: record.name, actor: "daemon", result: "\(error)")
                logger.error("VCH cannot start", metadata: ["vch": "\(record.name)", "error": "\(error)"])
            }
        }
    }

    /// Stops every running VCH (at daemon shutdown); their records stay.
    public func stopAll() async {
        guard let hosting else { return }
        for name in running.sorted() {
            await hosting.stop(name)
            running.remove(name)
        }
    }

    /// Runs `body` and records its outcome in the event log, ok or the error's message.
    private func audited<T>(_ type: String, subject: String, actor: String, detail: String, _ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            engine.record(type, subject: subject, actor: actor, detail: detail)
            return result
        } catch {
            engine.record(type, subject: subject, actor: actor, result: "\(error)", detail: detail)
            throw error
        }
    }

    private func save() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let data = try encoder.encode(records.values.sorted { $0.name < $1.name })
        let url = engine.stateFolder.appendingPathComponent(Self.fileName)
        try data.write(to: url, options: .atomic)
    }

    /// VCH's own rule for names: 1-30 letters, digits, '_' or '-', starting with a letter or digit.
    static func checkName(_ name: String) throws {
        let scalars = name.unicodeScalars
        guard let first = scalars.first, name.utf8.count <= 30, first.isASCII, CharacterSet.alphanumerics.contains(first),
              scalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "-") }) else {
            throw EngineError(.invalid, "name must be 1-30 letters, digits, '_' or '-', starting with a letter or digit", field: "name")
        }
    }

    /// "unix", or "tcp://127.0.0.1:PORT" with PORT in 1024-65535 (loopback only: the token is sent in clear).
    static func checkListen(_ listen: String) throws -> String {
        if listen == "unix" { return listen }
        let prefix = "tcp://127.0.0.1:"
        guard listen.hasPrefix(prefix), let port = Int(listen.dropFirst(prefix.count)), (1024...65535).contains(port) else {
            throw EngineError(.invalid, "listen must be unix or tcp://127.0.0.1:PORT with PORT in 1024-65535", field: "listen")
        }
        return "\(prefix)\(port)"
    }
}
