import Disk
import Foundation

extension ImagePuller {
    /// What a commit made besides the image: its new layer.
    public struct CommittedLayer: Sendable, Equatable {
        public var diffID: Digest
        public var tarBytes: Int64
        public var summary: LayerDiff.Summary
    }

    /// Makes a new image of `parent` (a pulled image of this datastore) plus one layer: the
    /// changes from `lower` (the parent's top layer disk) to `upper` (a container's disk, a
    /// child of it), as an uncompressed tarball. The parent's config, with what the container
    /// ran with (`containerConfig`) and the `changes` applied, gains the layer's diff_id and a history entry, a new OCI manifest lists the parent's layers and the new
    /// one, and the image is unpacked and its layer disks made as a pull does (the parent's
    /// disks reused), then `register` runs while collections are held off.
    public func commit<T: Sendable>(upper: Ext4Volume, lower: Ext4Volume, onto parent: PulledImage, reference: String, container: String,
                                    comment: String?, containerConfig: ContainerConfig = ContainerConfig(), changes: [ConfigChange] = [],
                                    register: (PulledImage, URL, CommittedLayer) async throws -> T) async throws -> T {
        try holdCollections(doing: "commit")
        defer { releaseCollections() }
        let started = ContinuousClock.now
        for digest in [parent.manifestDigest, parent.configDigest] + parent.layers where !store.contains(digest) {
            throw ImageError.io("the image's blob \(digest.short) is missing from the datastore (collected?); pull the image again")
        }
        let what = "config \(parent.configDigest.short) of \(parent.reference)"
        // The container's own config, then the changes; first, so that a refused change leaves
        // nothing behind (no layer blob).
        var document = try Self.configDocument(try store.read(parent.configDigest), what: what)
        containerConfig.apply(to: &document)
        try ConfigChange.apply(changes, to: &document)
        let temporary = store.temporaryPath("commit")
        let summary: LayerDiff.Summary
        let diffID: Digest
        let tarBytes: Int64
        do {
            let writer = try LayerTarWriter(path: temporary.path)
            summary = try await LayerDiff.write(upper: upper, lower: lower, to: writer)
            diffID = try writer.finish()
            tarBytes = Int64(writer.bytesWritten)
            if store.contains(diffID) { unlink(temporary.path) } else { try store.commit(temporary, as: diffID) }
        } catch {
            unlink(temporary.path)
            throw error
        }

        let configBytes = try Self.configWithLayer(document, diffID: diffID, container: container, comment: comment, changes: changes)
        let configDigest = Digest.of(configBytes)
        let config = try ImageConfig.parse(configBytes, what: "the committed image's config", layerCount: parent.layers.count + 1)
        let parentManifest = try Manifest.parse(try store.read(parent.manifestDigest), what: "manifest \(parent.manifestDigest.short) of \(parent.reference)",
                                                contentType: nil)
        let manifest = Manifest(schemaVersion: 2, mediaType: MediaType.ociManifest,
                                config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                layers: parentManifest.layers.map(Self.ociLayer) + [Descriptor(mediaType: MediaType.ociLayer, digest: diffID, size: tarBytes)])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let manifestBytes: [UInt8]
        do { manifestBytes = Array(try encoder.encode(manifest)) } catch { throw ImageError.io("cannot encode the committed image's manifest: \(error)") }
        let manifestDigest = Digest.of(manifestBytes)
        try store.write(configBytes, as: configDigest)
        try store.write(manifestBytes, as: manifestDigest)
        let (image, rootfs, created) = try await install(manifestDigest: manifestDigest, manifest: manifest, config: config, reference: reference,
                                                         committedFrom: container, progress: nil)
        logger.info("container committed", metadata: ["container": "\(container)", "manifest": "\(manifestDigest)", "layer": "\(diffID)",
                                                      "changed": "\(summary.changed)", "removed": "\(summary.removed)",
                                                      "took": "\(ContinuousClock.now - started)"])
        let layer = CommittedLayer(diffID: diffID, tarBytes: tarBytes, summary: summary)
        return try await registering(image, rootfs, created: created) { image, rootfs in try await register(image, rootfs, layer) }
    }

    /// A config as a JSON object (unknown fields kept), with rootfs.diff_ids.
    static func configDocument(_ bytes: [UInt8], what: String) throws(ImageError) -> [String: Any] {
        guard let config = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any],
              let rootfs = config["rootfs"] as? [String: Any], rootfs["diff_ids"] is [Any] else {
            throw .malformed(what: what, problem: "is not a JSON object with rootfs.diff_ids")
        }
        return config
    }

    /// The parent's config (kept as it is, unknown fields too, but for `changes`, already
    /// applied) with one more diff_id, a history entry and a new creation time.
    static func configWithLayer(_ document: [String: Any], diffID: Digest, container: String, comment: String?,
                                changes: [ConfigChange] = []) throws(ImageError) -> [UInt8] {
        var config = document
        var rootfs = config["rootfs"] as? [String: Any] ?? [:]
        var diffIDs = rootfs["diff_ids"] as? [Any] ?? []
        diffIDs.append(diffID.description)
        rootfs["diff_ids"] = diffIDs
        config["rootfs"] = rootfs
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let now = formatter.string(from: Date())
        config["created"] = now
        let createdBy = (["vmfork container commit \(container)"] + changes.map { "--change '\($0.text)'" }).joined(separator: " ")
        var entry: [String: Any] = ["created": now, "created_by": createdBy]
        if let comment, !comment.isEmpty { entry["comment"] = comment }
        var history = config["history"] as? [Any] ?? []
        history.append(entry)
        config["history"] = history
        do {
            return Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .withoutEscapingSlashes]))
        } catch { throw .io("cannot encode the committed image's config: \(error)") }
    }

    /// A layer descriptor in OCI's media types (an OCI manifest lists the parent's layers).
    static func ociLayer(_ layer: Descriptor) -> Descriptor {
        var layer = layer
        switch layer.mediaType {
        case "application/vnd.docker.image.rootfs.diff.tar.gzip": layer.mediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
        case "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": layer.mediaType = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        default: break
        }
        return layer
    }
}
