/// What one image may unpack to: a tarball claiming a 1 TB file or holding a bomb of tiny
/// files is refused before it fills the datastore.
public struct UnpackLimits: Sendable, Equatable {
    /// Largest single file.
    public var maxFileBytes: Int64
    /// All the image's file content together.
    public var maxTotalBytes: Int64
    /// Entries across all the image's layers.
    public var maxEntries: Int

    public init(maxFileBytes: Int64 = 8 << 30, maxTotalBytes: Int64 = 32 << 30, maxEntries: Int = 500_000) {
        self.maxFileBytes = maxFileBytes
        self.maxTotalBytes = maxTotalBytes
        self.maxEntries = maxEntries
    }

    /// Uncompressed bytes a layer stream may yield: its content plus a header per entry and slack.
    var maxStreamBytes: Int64 { maxTotalBytes + Int64(maxEntries) * 2048 + (16 << 20) }
}
