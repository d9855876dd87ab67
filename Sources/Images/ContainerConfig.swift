import Foundation

/// What a container ran with that its commit carries into the new image's config, as Docker's
/// commit starts from the container's config rather than the image's: its command, its
/// environment and its labels. The `--change` instructions apply after it.
public struct ContainerConfig: Sendable, Equatable {
    /// Entrypoint and Cmd, when the container ran a command of its own (an empty one removes
    /// the field); nil keeps the image's.
    public var entrypoint: [String]?
    public var cmd: [String]?
    /// The whole environment, when it differs from the image's; nil keeps the image's.
    public var env: [String]?
    /// Put over the image's labels by key.
    public var labels: [String: String]

    public init(entrypoint: [String]? = nil, cmd: [String]? = nil, env: [String]? = nil, labels: [String: String] = [:]) {
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.env = env
        self.labels = labels
    }

    /// Sets these fields in an image config document (its `config` object, made when missing).
    public func apply(to document: inout [String: Any]) {
        var config = document["config"] as? [String: Any] ?? [:]
        for (field, value) in [("Entrypoint", entrypoint), ("Cmd", cmd)] {
            guard let value else { continue }
            if value.isEmpty { config.removeValue(forKey: field) } else { config[field] = value }
        }
        if let env { config["Env"] = env }
        if !labels.isEmpty {
            var merged = config["Labels"] as? [String: String] ?? [:]
            merged.merge(labels) { _, new in new }
            config["Labels"] = merged
        }
        document["config"] = config
    }
}
