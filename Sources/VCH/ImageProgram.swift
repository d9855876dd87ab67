import Engine
import Foundation

/// How Docker's Entrypoint and Cmd map onto an agent image, whose own program always runs
/// (a warm parent is that program, loaded): the program's arguments are what follows it.
enum ImageProgram {
    /// The agent's `arguments` for a container (nil: the image's own).
    static func arguments(entrypoint: [String]?, cmd: [String]?, image: ImageRecord) throws -> [String]? {
        guard let entrypoint, let program = entrypoint.first, !program.isEmpty else { return cmd.flatMap { $0.isEmpty ? nil : $0 } }
        let rest = Array(entrypoint.dropFirst()) + (cmd ?? [])
        if program == image.executable { return rest }
        // A link to the image's program (busybox's applets): the program runs with the link's
        // name first, which is how a multi-call program picks what to be.
        if resolvesToProgram(program, image: image) { return [(program as NSString).lastPathComponent] + rest }
        throw DockerError.badRequest("--entrypoint \(program) is not supported: this VCH runs the image's own program (\(image.executable)) or a link to it inside the image")
    }

    /// The image's environment with the container's entries put over it by name.
    static func environment(image: [String], overrides: [String]) -> [String] {
        func key(_ entry: String) -> Substring { entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0] }
        let replaced = Set(overrides.map(key))
        return image.filter { !replaced.contains(key($0)) } + overrides
    }

    /// Whether `program` (a path, or a name looked up on the image's PATH) is, after its
    /// symbolic links inside the image's root, the image's program.
    static func resolvesToProgram(_ program: String, image: ImageRecord) -> Bool {
        let root = URL(fileURLWithPath: image.rootfs).standardizedFileURL.path
        guard let target = resolve(image.executable, root: root) else { return false }
        let path = image.environment.first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        let candidates = program.contains("/") ? [program] : path.split(separator: ":").map { "\($0)/\(program)" }
        return candidates.contains { resolve($0, root: root) == target }
    }

    /// The host path `path` (inside the image) names after following its links within `root`;
    /// nil when it does not exist or a link leaves the root.
    static func resolve(_ path: String, root: String) -> String? {
        var current = (path.hasPrefix("/") ? path : "/" + path)
        for _ in 0..<16 {
            let host = (root + current as NSString).standardizingPath
            guard host == root || host.hasPrefix(root + "/") else { return nil }
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: host) else {
                return FileManager.default.fileExists(atPath: host) ? host : nil
            }
            current = target.hasPrefix("/") ? target : ((current as NSString).deletingLastPathComponent as NSString).appendingPathComponent(target)
        }
        return nil
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

    static func check(_ body: [String: Any]) throws {
        for (field, option) in config where isSet(body[field]) {
            throw DockerError.badRequest("\(option) is not supported by this VCH (Config.\(field))")
        }
        guard let host = body["HostConfig"] as? [String: Any] else { return }
        for (field, option) in hostConfig where isSet(host[field]) {
            throw DockerError.badRequest("\(option) is not supported by this VCH (HostConfig.\(field))")
        }
        if let mode = host["NetworkMode"] as? String, !["", "default", "none", "bridge"].contains(mode) {
            throw DockerError.badRequest("--network \(mode) is not supported: this VCH has no networking")
        }
        if let restart = host["RestartPolicy"] as? [String: Any], let name = restart["Name"] as? String, !["", "no"].contains(name) {
            throw DockerError.badRequest("--restart \(name) is not supported by this VCH")
        }
        if let swap = host["MemorySwap"] as? Int, swap > 0, swap != (host["Memory"] as? Int ?? 0) {
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
