import Disk
import Foundation
import Images
import Placement

/// What `commitContainer` made: the new image and its new layer.
public struct CommitResult: Codable, Sendable, Equatable {
    public var image: ImageRecord
    /// The new layer's digest (uncompressed, so also its diff_id).
    public var layer: Digest
    /// Bytes of the new layer's tarball.
    public var layerBytes: Int64
    /// Files, folders and links it writes whole (added or changed).
    public var changed: Int
    /// Names it removes (whiteouts).
    public var removed: Int
}

extension Engine {
    /// Commits a container's changes into a new image `name`: its own disk (a child of its
    /// image's top layer disk) is compared with that layer, the differences become one more
    /// layer (an uncompressed OCI tarball, whiteouts for removed names) on top of the image's,
    /// and the new image is registered as a pull would register it — its own root folder,
    /// its layer disks (the parent's reused, one new), the parent's config with the layer in
    /// its diff_ids and history. The container must have ended (its changes are all on its
    /// disk then) and must run from a pulled image's layer disks in this engine (not in a worker).
    /// The new image's config starts from what the container ran with (`committedConfig`), as
    /// Docker's starts from the container's config; `changes` are Dockerfile instructions
    /// applied to it, as `docker commit --change` applies them (see `ConfigChange`); a refused
    /// one makes nothing.
    public func commitContainer(_ idOrName: String, as name: String, comment: String? = nil, changes: [String] = [],
                                by actor: String) async throws -> CommitResult {
        try await audited("container.commit", subject: idOrName, actor: actor, detail: "{\"image\":\(Self.jsonString(name))}",
                          subjectOf: { $0.image.pulled?.committedFrom }) {
            try ensureAccepting()
            let container = try container(idOrName)
            guard Self.validName(name) else {
                throw EngineError.invalid("name", "image name \"\(name.prefix(100))\" must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
            }
            if let comment { try Self.validateArguments([comment], field: "comment") }
            try Self.validateArguments(changes, field: "changes")
            guard changes.count <= 64 else { throw EngineError.invalid("changes", "changes: \(changes.count) entries, at most 64") }
            let parsedChanges: [ConfigChange]
            do { parsedChanges = try ConfigChange.parse(changes) } catch { throw EngineError.invalid("changes", "\(error)") }
            if registry.withLock({ $0.images[name] != nil }) {
                throw EngineError(.conflict, "image \(name) already exists (remove it first or commit under another name)", field: "name")
            }
            guard container.exit != nil else {
                throw EngineError(.conflict, "container \(container.id) has not ended: stop it first (its files reach its disk when it ends)")
            }
            guard container.shard == nil else {
                throw EngineError(.conflict, "container \(container.id) ran in an engine worker, which serves images from folders: it has no disk of its own to commit")
            }
            let parent = try image(container.info.image)
            guard let engine = layerDiskEngine, let pulled = parent.pulled, let top = pulled.layerDisks?.last else {
                throw EngineError(.conflict, "container \(container.id) has no disk of its own to commit: its image \(parent.name) runs from a folder (only pulled images run from layer disks, and only with rootfs from disks on)")
            }
            let lowerPath = imagePuller.layerDisks.folder.appendingPathComponent(top).path
            // A container that changed nothing has no disk (it is made at the first change):
            // its layer is empty, the diff of the top layer with itself.
            let ownDisk = container.disk?.diskPath ?? containerDisks?.path(for: container.id)
            let upperPath = ownDisk.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil } ?? lowerPath
            let upper: Ext4Volume, lower: Ext4Volume
            do {
                upper = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: upperPath, writable: false, engine: engine))
                lower = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: lowerPath, writable: false, engine: engine))
            } catch {
                throw EngineError(.failed, "container \(container.id): its disk or its image's top layer disk cannot be read: \(error)")
            }
            do {
                return try await imagePuller.commit(upper: upper, lower: lower, onto: pulled, reference: name, container: container.id,
                                                    comment: comment, containerConfig: Self.committedConfig(of: container.info, image: parent),
                                                    changes: parsedChanges) { committed, rootfs, layer in
                    let added = try await register(committed, rootfs: rootfs, as: name, source: "image \(parent.name)", field: "id", by: actor)
                    await inheritPlacementCost(of: parent.name, as: name, by: actor)
                    return CommitResult(image: added, layer: layer.diffID, layerBytes: layer.tarBytes, changed: layer.summary.changed,
                                        removed: layer.summary.removed)
                }
            } catch let error as ImageError {
                throw Self.engineError(error)
            } catch let error as ConfigChangeError {
                throw EngineError.invalid("changes", error.description)
            }
        }
    }

    /// Labels whose keys start with this are the tools' own bookkeeping (a VCH's `vmfork.vch`
    /// marks): a commit does not carry them into the image.
    static let toolLabelPrefix = "vmfork."

    /// What of a container's own config its commit carries, as Docker's commit starts from the
    /// container's config: the command it ran when it named one (Docker's Entrypoint and Cmd
    /// as it merged them; agent `arguments` as the Cmd after the image's Entrypoint, or as
    /// both when they do not follow it), its environment when not the image's, and its
    /// labels (but the tools' own).
    static func committedConfig(of info: ContainerInfo, image: ImageRecord) -> ContainerConfig {
        var config = ContainerConfig(labels: info.labels.filter { !$0.key.hasPrefix(toolLabelPrefix) })
        if info.entrypoint != nil || info.cmd != nil {
            config.entrypoint = info.entrypoint ?? []
            config.cmd = info.cmd ?? []
        } else if case let argv0 = info.argv0 ?? image.argv0, argv0 != image.argv0 || info.arguments != image.arguments {
            let line = [argv0] + info.arguments
            let entrypoint = image.dockerEntrypoint
            if line.starts(with: entrypoint) {
                config.cmd = Array(line.dropFirst(entrypoint.count))
            } else {
                config.entrypoint = [argv0]
                config.cmd = info.arguments
            }
        }
        if info.environment != image.environment { config.env = info.environment }
        return config
    }

    /// A committed image runs the program of the image it came from: placement takes that
    /// image's cost for it (when placement knows it), so its containers can be placed in a
    /// pool — a VCH's `docker run` of it — without an `image add` to the placement state.
    private func inheritPlacementCost(of source: String, as name: String, by actor: String) async {
        let placement = self.placement
        let added = try? await onBlockingThread { () throws -> ImageCost? in
            guard var cost = try? placement.read({ core in try core.image(source) }), (try? placement.read({ core in try core.image(name) })) == nil else { return nil }
            cost.name = name
            try placement.addImage(cost)
            return cost
        }
        guard let added = added ?? nil else { return }
        record("placement.image.add", subject: name, actor: actor,
               detail: "{\"from\":\(Self.jsonString(source)),\"parentMemoryKiB\":\(added.parentMemoryKiB),\"growthPerChildKiB\":\(added.growthPerChildKiB)}")
    }
}
