import Engine
import Foundation

/// A Docker container's environment from its agent image's.
enum DockerEnvironment {
    /// The image's environment with the container's entries put over it by name.
    static func environment(image: [String], overrides: [String]) -> [String] {
        func key(_ entry: String) -> Substring { entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0] }
        let replaced = Set(overrides.map(key))
        return image.filter { !replaced.contains(key($0)) } + overrides
    }
}

/// Options of containers/create this VCH cannot honour: refused by name, never ignored.
enum UnsupportedOptions {
    /// (JSON field, the docker option that sets it).
    static let config: [(String, String)] = [
        ("User", "--user"), ("WorkingDir", "--workdir"), ("ExposedPorts", "--expose/--publish"), ("Volumes", "--volume"),
        ("Healthcheck", "--health-cmd"), ("StopSignal", "--stop-signal"), ("MacAddress", "--mac-address"), ("Shell", "SHELL"),
        ("Domainname", "--domainname"),
    ]
    static let hostConfig: [(String, String)] = [
        ("Binds", "--volume"), ("PortBindings", "--publish"), ("PublishAllPorts", "--publish-all"), ("Privileged", "--privileged"),
        ("CapAdd", "--cap-add"), ("CapDrop", "--cap-drop"), ("Devices", "--device"), ("Mounts", "--mount"), ("VolumesFrom", "--volumes-from"),
        ("Links", "--link"), ("Dns", "--dns"), ("DnsSearch", "--dns-search"), ("DnsOptions", "--dns-option"), ("ExtraHosts", "--add-host"),
        ("PidMode", "--pid"), ("UTSMode", "--uts"), ("UsernsMode", "--userns"), ("NanoCpus", "--cpus"), ("CpuShares", "--cpu-shares"),
        ("CpuQuota", "--cpu-quota"), ("CpuPeriod", "--cpu-period"), ("CpusetCpus", "--cpuset-cpus"), ("CpusetMems", "--cpuset-mems"),
        ("MemoryReservation", "--memory-reservation"), ("KernelMemory", "--kernel-memory"), ("ReadonlyRootfs", "--read-only"),
        ("Tmpfs", "--tmpfs"), ("Ulimits", "--ulimit"), ("SecurityOpt", "--security-opt"), ("Sysctls", "--sysctl"), ("GroupAdd", "--group-add"),
        ("Runtime", "--runtime"), ("Init", "--init"), ("PidsLimit", "--pids-limit"), ("OomKillDisable", "--oom-kill-disable"),
        ("DeviceRequests", "--gpus"), ("BlkioWeight", "--blkio-weight"), ("VolumeDriver", "--volume-driver"),
    ]

    /// The JSON type the Docker API gives each refused field, so that its presence is read
    /// with one typed decode (a decode that fails throws, and trying each type in turn for
    /// the forty-odd fields the CLI sends as null, 0, "" or [] cost 0.4 ms a create).
    static let kinds: [String: JSONPresence.Kind] = [
        "User": .string, "WorkingDir": .string, "ExposedPorts": .object, "Volumes": .object, "Healthcheck": .object,
        "StopSignal": .string, "MacAddress": .string, "Shell": .array, "Domainname": .string,
        "Binds": .array, "PortBindings": .object, "PublishAllPorts": .bool, "Privileged": .bool, "CapAdd": .array, "CapDrop": .array,
        "Devices": .array, "Mounts": .array, "VolumesFrom": .array, "Links": .array, "Dns": .array, "DnsSearch": .array,
        "DnsOptions": .array, "ExtraHosts": .array, "PidMode": .string, "UTSMode": .string, "UsernsMode": .string,
        "NanoCpus": .number, "CpuShares": .number, "CpuQuota": .number, "CpuPeriod": .number, "CpusetCpus": .string,
        "CpusetMems": .string, "MemoryReservation": .number, "KernelMemory": .number, "ReadonlyRootfs": .bool, "Tmpfs": .object,
        "Ulimits": .array, "SecurityOpt": .array, "Sysctls": .object, "GroupAdd": .array, "Runtime": .string, "Init": .bool,
        "PidsLimit": .number, "OomKillDisable": .bool, "DeviceRequests": .array, "BlkioWeight": .number, "VolumeDriver": .string,
    ]
    static let configFields = Set(config.map(\.0))
    static let hostConfigFields = Set(hostConfig.map(\.0))

    /// Refuses the first option (in the lists' order) that `body` sets and the VCH cannot honour.
    static func check(_ body: CreateBody) throws {
        for (field, option) in config where body.refused.contains(field) {
            throw DockerError.badRequest("\(option) is not supported by this VCH (Config.\(field))")
        }
        guard let host = body.HostConfig else { return }
        for (field, option) in hostConfig where host.refused.contains(field) {
            throw DockerError.badRequest("\(option) is not supported by this VCH (HostConfig.\(field))")
        }
        if let mode = host.NetworkMode, !["", "default", "none", "bridge"].contains(mode) {
            throw DockerError.badRequest("--network \(mode) is not supported: this VCH has no networking")
        }
        if let name = host.RestartPolicy?.Name, !["", "no"].contains(name) {
            throw DockerError.badRequest("--restart \(name) is not supported by this VCH")
        }
        if let swap = host.MemorySwap, swap > 0, swap != (host.Memory ?? 0) {
            throw DockerError.badRequest("--memory-swap is not supported by this VCH (a process VM has no swap)")
        }
    }

    /// Whether a JSON value says anything: not null, "", 0, false, [] or {}.
    static func isSet(_ value: Any?) -> Bool {
        switch value {
        case nil, is NSNull: return false
        case let text as String: return !text.isEmpty
        case let number as NSNumber: return number != 0
        case let list as [Any]: return !list.isEmpty
        case let object as [String: Any]: return !object.isEmpty
        default: return true
        }
    }
}
