/// The parts of an image config (OCI or Docker) the engine uses: the program to run, its
/// environment, working folder and user, and the layers' uncompressed digests.
public struct ImageConfig: Codable, Sendable, Equatable {
    public var architecture: String?
    public var os: String?
    public var config: Settings?
    public var rootfs: RootFS

    public struct Settings: Codable, Sendable, Equatable {
        public var Entrypoint: [String]?
        public var Cmd: [String]?
        public var Env: [String]?
        public var WorkingDir: String?
        public var User: String?
        public var Labels: [String: String]?
        /// "PORT/PROTOCOL" keys; their values are empty objects.
        public var ExposedPorts: [String: Empty]?
        public var StopSignal: String?
    }

    /// A JSON value whose content does not matter (ExposedPorts' `{}`).
    public struct Empty: Codable, Sendable, Equatable {
        public init() {}
        public init(from decoder: Decoder) throws {}
        public func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode([String: String]())
        }
    }

    public struct RootFS: Codable, Sendable, Equatable {
        public var type: String
        public var diff_ids: [Digest]
    }

    /// Parses and checks a config against its manifest: linux/amd64, one diff_id per layer,
    /// strings free of NULs and of bounded size.
    public static func parse(_ bytes: [UInt8], what: String, layerCount: Int) throws(ImageError) -> ImageConfig {
        let config: ImageConfig = try decodeDocument(bytes, what: what)
        if let os = config.os, os != "linux" { throw .unsupported("\(what): os is \(os.prefix(40)), not linux") }
        if let architecture = config.architecture, architecture != "amd64" { throw .unsupported("\(what): architecture is \(architecture.prefix(40)), not amd64") }
        guard config.rootfs.type == "layers" else { throw .malformed(what: what, problem: "rootfs.type is \(config.rootfs.type.prefix(40)), not layers") }
        guard config.rootfs.diff_ids.count == layerCount else {
            throw .malformed(what: what, problem: "lists \(config.rootfs.diff_ids.count) diff_ids for the manifest's \(layerCount) layers")
        }
        let settings = config.config
        let labels = (settings?.Labels ?? [:]).flatMap { [$0.key, $0.value] }
        let strings = (settings?.Entrypoint ?? []) + (settings?.Cmd ?? []) + (settings?.Env ?? []) + [settings?.WorkingDir ?? "", settings?.User ?? ""]
            + labels + (settings?.ExposedPorts ?? [:]).keys + [settings?.StopSignal ?? ""]
        guard strings.count <= 4096, strings.reduce(0, { $0 + $1.utf8.count }) <= 256 * 1024 else {
            throw .malformed(what: what, problem: "entrypoint, cmd, env, labels and exposed ports are over 4096 entries or 256 KiB")
        }
        if strings.contains(where: { $0.contains("\0") }) { throw .malformed(what: what, problem: "a string in config holds a NUL character") }
        if let bad = settings?.Env?.first(where: { !$0.contains("=") || $0.hasPrefix("=") }) {
            throw .malformed(what: what, problem: "env entry \"\(bad.prefix(80))\" is not NAME=value")
        }
        return config
    }

    /// The command line the image runs by default: entrypoint then cmd.
    public var commandLine: [String] { (config?.Entrypoint ?? []) + (config?.Cmd ?? []) }
}
