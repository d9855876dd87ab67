import Foundation

/// What a pull recorded about an image: where it came from, its content digests, and its
/// config's defaults. Kept as JSON next to its unpacked root folder in the datastore.
public struct PulledImage: Codable, Sendable, Equatable {
    /// The reference pulled, e.g. "127.0.0.1:5000/busybox:latest".
    public var reference: String
    public var manifestDigest: Digest
    public var configDigest: Digest
    /// The layer blobs (compressed), bottom first.
    public var layers: [Digest]
    /// The uncompressed layers' digests (config rootfs.diff_ids), each checked on unpack.
    public var diffIDs: [Digest]
    /// Compressed bytes of the layers.
    public var layerBytes: Int64
    /// Bytes of file content unpacked.
    public var unpackedBytes: Int64
    public var entrypoint: [String]
    public var cmd: [String]
    public var env: [String]
    public var workingDir: String
    public var user: String
    public var pulledAt: Double
    /// The layers as ext4 VMDK disks in the datastore's layers/ folder, bottom first, each
    /// a child of the one before (nil when they were not written). A container's disk is a
    /// child of the last.
    public var layerDisks: [String]?
    /// The container this image was committed from (`vmfork container commit`): its top
    /// layer holds that container's changes. Nil for a pulled image.
    public var committedFrom: String? = nil
    /// The config's Labels, ExposedPorts ("PORT/PROTOCOL") and StopSignal, when it has them.
    public var labels: [String: String]? = nil
    public var exposedPorts: [String]? = nil
    public var stopSignal: String? = nil
}
