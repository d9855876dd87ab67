import Engine
import Foundation

/// The agent's view of containers and images in Docker's words.
extension VirtualContainerHost {
    func summary(_ info: ContainerInfo, image: ImageRecord?) -> ContainerSummary {
        ContainerSummary(
            Id: info.id, Names: ["/" + dockerName(info)], Image: info.image, ImageID: image.map(DockerNames.imageID) ?? "",
            Command: ([info.argv0 ?? image?.executable ?? info.image] + info.arguments).joined(separator: " "), Created: Int(info.createdAt),
            Ports: [], Labels: Self.userLabels(info), State: info.state.rawValue, Status: DockerTime.status(info),
            HostConfig: .init(NetworkMode: "none"), NetworkSettings: .init(Networks: [:]), Mounts: [])
    }

    func inspect(_ info: ContainerInfo, image: ImageRecord?) -> ContainerInspect {
        let labels = info.labels
        // Docker's Path and Args: argv[0] as the command names it, then the rest; its config's
        // Entrypoint and Cmd as the container merged them, else the image's (with `arguments`
        // of the agent's own: after the image's argv[0]).
        let entrypoint = info.entrypoint ?? image.map(\.dockerEntrypoint) ?? []
        let cmd = info.cmd ?? (info.entrypoint == nil && image?.pulled?.entrypoint.isEmpty == true ? [info.argv0 ?? ""] + info.arguments : info.arguments)
        return ContainerInspect(
            Id: info.id, Created: DockerTime.rfc3339(info.createdAt), Path: info.argv0 ?? image?.executable ?? "", Args: info.arguments,
            State: .init(Status: info.state.rawValue, Running: info.state == .running, Paused: false, Restarting: false,
                         OOMKilled: false, Dead: false, Pid: 0, ExitCode: info.exitCode ?? 0, Error: "",
                         StartedAt: DockerTime.rfc3339(info.startedAt), FinishedAt: DockerTime.rfc3339(info.finishedAt)),
            Image: image.map(DockerNames.imageID) ?? info.image, Name: "/" + dockerName(info), RestartCount: 0, Driver: "vmfork-cow",
            Platform: "linux",
            HostConfig: .init(Memory: info.memoryMiB << 20, AutoRemove: labels[Label.autoRemove] == "1", NetworkMode: "none",
                              RestartPolicy: ["Name": "no"]),
            Config: .init(Hostname: info.hostname, Domainname: "", User: "", AttachStdin: labels[Label.openStdin] == "1",
                          AttachStdout: true, AttachStderr: true, Tty: labels[Label.tty] == "1", OpenStdin: labels[Label.openStdin] == "1",
                          StdinOnce: labels[Label.stdinOnce] == "1", Env: info.environment, Cmd: cmd.isEmpty ? nil : cmd, Image: info.image,
                          WorkingDir: "", Entrypoint: entrypoint.isEmpty ? nil : entrypoint, Labels: Self.userLabels(info)),
            NetworkSettings: .init(Networks: [:]), Mounts: [],
            VMFork: .init(Pool: info.pool, PlacementID: info.placementID, Parent: info.parent, ForkMicroseconds: info.forkMicroseconds,
                          ExitReason: info.exitReason, MemoryPrivateBytes: info.memory?.privateBytes, MemorySharedBytes: info.memory?.sharedBytes))
    }
}

enum DockerNames {
    /// Docker's container names: [a-zA-Z0-9][a-zA-Z0-9_.-]+.
    static func validContainerName(_ name: String) -> Bool {
        guard name.utf8.count >= 2, let first = name.unicodeScalars.first, first.isASCII, CharacterSet.alphanumerics.contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_.-".unicodeScalars.contains($0)) }
    }

    /// The agent image names a Docker reference may mean, most specific first: as given, then
    /// without the default registry and "library/", then without the ":latest" tag.
    static func imageCandidates(_ reference: String) -> [String] {
        var names = [reference]
        let short = shortReference(reference)
        names.append(short)
        if short.hasSuffix(":latest") { names.append(String(short.dropLast(7))) }
        // The agent's pull names an image by its repository's last part, without tag or digest.
        let last = String(short.split(separator: "/").last ?? Substring(short))
        names.append(String(last.split(separator: "@")[0].split(separator: ":")[0]))
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }

    /// A reference without Docker Hub's registry and "library/" ("docker.io/library/busybox:1" is "busybox:1").
    static func shortReference(_ reference: String) -> String {
        var short = reference
        for prefix in ["docker.io/library/", "index.docker.io/library/", "docker.io/", "library/"] where short.hasPrefix(prefix) {
            short = String(short.dropFirst(prefix.count))
        }
        return short
    }

    /// An image's Docker tag: its name, with ":latest" when it has no tag.
    static func tag(_ name: String) -> String {
        let last = name.split(separator: "/").last.map(String.init) ?? name
        return last.contains(":") || name.contains("@") ? name : name + ":latest"
    }

    /// A stable 64-hex-digit id for an image record (from its name and registration time; not
    /// a content digest: the agent's images are folders, not layers).
    static func imageID(_ image: ImageRecord) -> String {
        let key = Array("\(image.name)\u{0}\(image.createdAt)".utf8)
        var hex = ""
        for seed in 0..<4 as Range<UInt64> {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ (seed &* 0x9E37_79B9_7F4A_7C15)
            for byte in key {
                hash ^= UInt64(byte)
                hash = hash &* 0x100_0000_01b3
            }
            hex += String(format: "%016llx", hash)
        }
        return "sha256:" + hex
    }

    /// A signal by Docker's spelling: "9", "KILL", "SIGKILL".
    static func signal(_ text: String) -> Int32? {
        if let number = Int32(text) { return (1...64).contains(number) ? number : nil }
        let name = text.uppercased().hasPrefix("SIG") ? String(text.uppercased().dropFirst(3)) : text.uppercased()
        let names: [String: Int32] = ["HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
                                      "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "CHLD": 17, "CONT": 18,
                                      "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "WINCH": 28]
        return names[name]
    }
}

enum DockerTime {
    /// RFC 3339 with nanoseconds, UTC; Docker's zero time when absent.
    static func rfc3339(_ time: Double?) -> String {
        guard let time, time > 0 else { return "0001-01-01T00:00:00Z" }
        let seconds = floor(time)
        let nanos = Int((time - seconds) * 1e9)
        var value = time_t(seconds)
        var parts = tm()
        gmtime_r(&value, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%09dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), nanos)
    }

    /// `docker ps`'s STATUS column: "Created", "Up 3 seconds", "Exited (0) 2 minutes ago".
    static func status(_ info: ContainerInfo, now: Double = Date().timeIntervalSince1970) -> String {
        switch info.state {
        case .created: return "Created"
        case .running: return "Up " + human(now - (info.startedAt ?? now))
        case .exited: return "Exited (\(info.exitCode ?? 0)) \(human(now - (info.finishedAt ?? now))) ago"
        }
    }

    /// Docker's (go-units) rough durations.
    static func human(_ seconds: Double) -> String {
        let s = Int(seconds)
        switch s {
        case ..<1: return "Less than a second"
        case 1: return "1 second"
        case ..<60: return "\(s) seconds"
        case ..<120: return "About a minute"
        case ..<3600: return "\(s / 60) minutes"
        case ..<7200: return "About an hour"
        case ..<(48 * 3600): return "\(s / 3600) hours"
        default: return "\(s / 86400) days"
        }
    }
}
