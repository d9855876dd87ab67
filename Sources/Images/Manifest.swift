import Foundation

/// The media types the puller understands.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    /// An uncompressed layer (what a commit writes).
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"

    static let manifests = [ociManifest, dockerManifest]
    static let indexes = [ociIndex, dockerList]
    static let configs = [ociConfig, dockerConfig]
    /// Layers: tar, gzip'ed and zstd'ed tar (OCI, Docker, and their non-distributable forms).
    static let layers = [
        "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ]
}

/// Bounds on what a registry may send: documents are small, blobs are not unbounded.
public enum DocumentLimits {
    public static let maxDocumentBytes = 4 << 20
    public static let maxLayers = 256
    public static let maxIndexEntries = 1024
    public static let maxBlobBytes: Int64 = 64 << 30
}

/// A content descriptor: what a manifest says a blob is.
public struct Descriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var platform: Platform?

    public struct Platform: Codable, Sendable, Equatable {
        public var architecture: String
        public var os: String
        public var variant: String?
    }
}

/// An image manifest (OCI or Docker schema 2): its config and its layers, bottom first.
public struct Manifest: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]

    /// Parses and checks a manifest: schema 2, a config and 1-256 layers of known types, sizes in range.
    public static func parse(_ bytes: [UInt8], what: String, contentType: String?) throws(ImageError) -> Manifest {
        let manifest: Manifest = try decodeDocument(bytes, what: what)
        guard manifest.schemaVersion == 2 else { throw .malformed(what: what, problem: "schemaVersion is \(manifest.schemaVersion), not 2") }
        let type = manifest.mediaType ?? contentType ?? MediaType.ociManifest
        guard MediaType.manifests.contains(type) else { throw .malformed(what: what, problem: "media type \(type.prefix(100)) is not an image manifest") }
        guard MediaType.configs.contains(manifest.config.mediaType) else {
            throw .unsupported("\(what): config media type \(manifest.config.mediaType.prefix(100)) is not an image config (an artifact, not an image?)")
        }
        try checkSize(manifest.config, what: "\(what): config", limit: Int64(DocumentLimits.maxDocumentBytes))
        guard !manifest.layers.isEmpty, manifest.layers.count <= DocumentLimits.maxLayers else {
            throw .malformed(what: what, problem: "\(manifest.layers.count) layers, expected 1-\(DocumentLimits.maxLayers)")
        }
        for (index, layer) in manifest.layers.enumerated() {
            guard MediaType.layers.contains(layer.mediaType) else {
                throw .unsupported("\(what): layer \(index) has media type \(layer.mediaType.prefix(100)), not a tar, gzip'ed or zstd'ed tar layer")
            }
            try checkSize(layer, what: "\(what): layer \(index)", limit: DocumentLimits.maxBlobBytes)
        }
        return manifest
    }

    static func checkSize(_ descriptor: Descriptor, what: String, limit: Int64) throws(ImageError) {
        guard descriptor.size >= 0, descriptor.size <= limit else {
            throw .malformed(what: what, problem: "size \(descriptor.size) is not within 0...\(limit)")
        }
    }
}

/// An image index (OCI) or manifest list (Docker): one manifest per platform.
public struct ImageIndex: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]

    public static func parse(_ bytes: [UInt8], what: String) throws(ImageError) -> ImageIndex {
        let index: ImageIndex = try decodeDocument(bytes, what: what)
        guard index.schemaVersion == 2 else { throw .malformed(what: what, problem: "schemaVersion is \(index.schemaVersion), not 2") }
        guard index.manifests.count <= DocumentLimits.maxIndexEntries else {
            throw .malformed(what: what, problem: "\(index.manifests.count) entries, at most \(DocumentLimits.maxIndexEntries)")
        }
        for entry in index.manifests { try Manifest.checkSize(entry, what: "\(what): entry \(entry.digest.short)", limit: Int64(DocumentLimits.maxDocumentBytes)) }
        return index
    }

    /// The manifest for `os`/`architecture` (linux/amd64 here), or an error listing what the index holds.
    public func select(os: String = "linux", architecture: String = "amd64", what: String) throws(ImageError) -> Descriptor {
        let candidates = manifests.filter { MediaType.manifests.contains($0.mediaType) }
        if let match = candidates.first(where: { $0.platform?.os == os && $0.platform?.architecture == architecture }) { return match }
        let offered = manifests.compactMap { $0.platform.map { "\($0.os)/\($0.architecture)" } }
        throw .unsupported("\(what): no \(os)/\(architecture) manifest in the index (it offers \(offered.isEmpty ? "none" : offered.prefix(20).joined(separator: ", ")))")
    }
}

/// What a manifest document is: a manifest or an index, from its mediaType field or the
/// registry's Content-Type.
enum ManifestKind {
    case manifest
    case index

    static func of(_ bytes: [UInt8], contentType: String?, what: String) throws(ImageError) -> ManifestKind {
        struct Probe: Decodable { var mediaType: String?; var manifests: [AnyDecodable]?; var layers: [AnyDecodable]? }
        struct AnyDecodable: Decodable {}
        let probe: Probe = try decodeDocument(bytes, what: what)
        let type = probe.mediaType ?? contentType.map { String($0.split(separator: ";")[0]).trimmingCharacters(in: .whitespaces) }
        if let type, MediaType.indexes.contains(type) { return .index }
        if let type, MediaType.manifests.contains(type) { return .manifest }
        if probe.manifests != nil { return .index }
        if probe.layers != nil { return .manifest }
        throw .unsupported("\(what): media type \(type?.prefix(100) ?? "(none)") is neither an image manifest nor an index")
    }
}

/// Decodes a JSON document of at most 4 MiB, naming `what` and the decoder's complaint.
func decodeDocument<T: Decodable>(_ bytes: [UInt8], what: String) throws(ImageError) -> T {
    guard bytes.count <= DocumentLimits.maxDocumentBytes else {
        throw .malformed(what: what, problem: "\(bytes.count) bytes, over the \(DocumentLimits.maxDocumentBytes)-byte limit for a document")
    }
    do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch let error as DecodingError {
        throw .malformed(what: what, problem: "not valid JSON of the expected shape: \(describe(error))")
    } catch {
        throw .malformed(what: what, problem: "not valid JSON: \(error)")
    }
}

private func describe(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        return path.isEmpty ? "" : " at \(path)"
    }
    switch error {
    case .keyNotFound(let key, let context): return "missing \(key.stringValue)\(path(context))"
    case .typeMismatch(_, let context): return "wrong type\(path(context)): \(context.debugDescription)"
    case .valueNotFound(_, let context): return "null value\(path(context))"
    case .dataCorrupted(let context): return "\(context.debugDescription)\(path(context))"
    @unknown default: return "\(error)"
    }
}
