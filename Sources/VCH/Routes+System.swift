import Foundation

/// _ping, version, info.
extension VirtualContainerHost {
    static var pingHeaders: [(String, String)] {
        [("API-Version", apiVersion), ("OSType", "linux"), ("Docker-Experimental", "false"), ("Cache-Control", "no-cache, no-store, must-revalidate"),
         ("Pragma", "no-cache"), ("Builder-Version", "1")]
    }

    func ping(head: Bool) -> DockerResponse {
        DockerResponse(headers: Self.pingHeaders + [("Content-Type", "text/plain; charset=utf-8")], body: head ? .empty : .full(Data("OK".utf8)))
    }

    func version() async throws -> DockerResponse {
        struct AgentVersion: Decodable {
            let version: String
            let api: String
            let kvm: Bool
        }
        let agentVersion = try await agent.get("/v1/version", as: AgentVersion.self)
        let kernel = Self.kernelRelease()
        let details: [String: String] = ["ApiVersion": Self.apiVersion, "MinAPIVersion": Self.minimumAPIVersion, "Os": "linux", "Arch": "amd64",
                                         "KernelVersion": kernel, "Agent": "vmfork \(agentVersion.version) (API \(agentVersion.api))",
                                         "KVM": agentVersion.kvm ? "yes" : "no", "Pool": configuration.pool]
        let body: [String: Any] = [
            "Platform": ["Name": "VMFork Virtual Container Host \(name)"],
            "Components": [["Name": "Engine", "Version": Self.version, "Details": details]],
            "Version": Self.version, "ApiVersion": Self.apiVersion, "MinAPIVersion": Self.minimumAPIVersion, "GitCommit": "",
            "GoVersion": "swift", "Os": "linux", "Arch": "amd64", "KernelVersion": kernel, "BuildTime": "",
        ]
        return DockerResponse(headers: [("Content-Type", "application/json")], body: .full(try JSONSerialization.data(withJSONObject: body)))
    }

    /// Docker's info, with this VCH's pool as the placement state reports it: capacity,
    /// reserved, used and free (memory and CPU) under the storage driver's status lines, and
    /// as labels; MemTotal is the pool's memory capacity.
    func info() async throws -> DockerResponse {
        let pools = try await agent.get("/v1/placement/pools", as: [PoolFigures].self)
        guard let pool = pools.first(where: { $0.name == configuration.pool }) else {
            throw DockerError(status: .serviceUnavailable, message: "pool \(configuration.pool) is not in the host agent's placement state")
        }
        let figures = PoolSummary(pool)
        let containers = try await containers()
        let images = try await imagesByName()
        let running = containers.filter { $0.state == .running }.count
        let status: [[String]] = [
            ["Pool", pool.name],
            ["Pool memory capacity", Self.mib(figures.memory.capacity)], ["Pool memory reserved", Self.mib(figures.memory.reserved)],
            ["Pool memory used", Self.mib(figures.memory.used)], ["Pool memory free", Self.mib(figures.memory.free)],
            ["Pool CPU capacity", "\(figures.cpu.capacity) MHz"], ["Pool CPU reserved", "\(figures.cpu.reserved) MHz"],
            ["Pool CPU used", "\(figures.cpu.used) MHz"], ["Pool CPU free", "\(figures.cpu.free) MHz"],
            ["Pool forks", "\(pool.forks)"],
        ]
        let labels = [
            "vmfork.vch=\(name)", "vmfork.pool=\(pool.name)",
            "vmfork.pool.memory.capacity.kib=\(figures.memory.capacity)", "vmfork.pool.memory.reserved.kib=\(figures.memory.reserved)",
            "vmfork.pool.memory.used.kib=\(figures.memory.used)", "vmfork.pool.memory.free.kib=\(figures.memory.free)",
            "vmfork.pool.cpu.capacity.mhz=\(figures.cpu.capacity)", "vmfork.pool.cpu.reserved.mhz=\(figures.cpu.reserved)",
            "vmfork.pool.cpu.used.mhz=\(figures.cpu.used)", "vmfork.pool.cpu.free.mhz=\(figures.cpu.free)",
        ]
        let body: [String: Any] = [
            "ID": "vmfork-vch-\(name)", "Name": name, "Containers": containers.count, "ContainersRunning": running, "ContainersPaused": 0,
            "ContainersStopped": containers.count - running, "Images": images.count, "Driver": "vmfork-cow", "DriverStatus": status,
            "Plugins": ["Volume": [String](), "Network": [String](), "Log": [String]()], "MemoryLimit": true, "SwapLimit": false,
            "CpuCfsPeriod": false, "CpuCfsQuota": false, "CPUShares": false, "CPUSet": false, "PidsLimit": false, "IPv4Forwarding": false,
            "Debug": false, "NFd": 0, "OomKillDisable": false, "NGoroutines": 0, "SystemTime": DockerTime.rfc3339(Date().timeIntervalSince1970),
            "LoggingDriver": "vmfork-agent", "CgroupDriver": "none", "NEventsListener": 0, "KernelVersion": Self.kernelRelease(),
            "OperatingSystem": "VMFork Virtual Container Host", "OSVersion": "", "OSType": "linux", "Architecture": "x86_64",
            "IndexServerAddress": "https://index.docker.io/v1/", "RegistryConfig": ["IndexConfigs": [String: String](), "InsecureRegistryCIDRs": [String]()],
            "NCPU": ProcessInfo.processInfo.activeProcessorCount, "MemTotal": figures.memory.capacity * 1024, "DockerRootDir": "",
            "Labels": labels, "ExperimentalBuild": false, "ServerVersion": Self.version, "Runtimes": ["vmfork": ["path": "vmfork"]],
            "DefaultRuntime": "vmfork", "Swarm": ["NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": ""],
            "LiveRestoreEnabled": false, "Isolation": "", "InitBinary": "", "SecurityOptions": [String](), "Warnings": [String](),
        ]
        return DockerResponse(headers: [("Content-Type", "application/json")], body: .full(try JSONSerialization.data(withJSONObject: body)))
    }

    static func mib(_ kib: Int) -> String { String(format: "%.1f MiB", Double(kib) / 1024) }

    static func kernelRelease() -> String {
        var names = utsname()
        uname(&names)
        // unsafe: the tuple's bytes are read only inside the closure, up to its NUL or its end.
        return withUnsafeBytes(of: &names.release) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
    }
}

/// A pool's figures as `docker info` shows them: capacity (its limit, else what it holds plus
/// what it could still take), reserved (its reservation), used (forks and warm parents) and free.
struct PoolSummary {
    struct Figures {
        let capacity: Int
        let reserved: Int
        let used: Int
        let free: Int
    }
    let memory: Figures
    let cpu: Figures

    init(_ pool: PoolFigures) {
        memory = Figures(capacity: pool.memoryLimitKiB ?? pool.held.memoryKiB + pool.free.memoryKiB, reserved: pool.reservation.memoryKiB,
                         used: pool.usedByForks.memoryKiB + pool.usedByWarmParents.memoryKiB, free: pool.free.memoryKiB)
        cpu = Figures(capacity: pool.cpuLimitMHz ?? pool.held.cpuMHz + pool.free.cpuMHz, reserved: pool.reservation.cpuMHz,
                      used: pool.usedByForks.cpuMHz + pool.usedByWarmParents.cpuMHz, free: pool.free.cpuMHz)
    }
}
