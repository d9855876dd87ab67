import Foundation

/// The datastore's content-addressed blobs: blobs/sha256/HEX, each written to a temporary
/// file in tmp/, verified, then renamed into place, so a blob under its name is always whole
/// and correct and an interrupted pull leaves only temporary files (removed by the next
/// collection) and finished blobs (reused by the next pull).
public struct BlobStore: Sendable {
    public let folder: URL

    public init(folder: URL) throws(ImageError) {
        self.folder = folder
        do { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) } catch {
            throw .io("cannot create the datastore \(folder.path): \(error.localizedDescription)")
        }
        // Images keep their files' owners and modes (setuid ones too): only root reaches them.
        guard chmod(folder.path, 0o700) == 0 else { throw .io("cannot make \(folder.path) private: \(String(cString: strerror(errno)))") }
        for sub in ["blobs/sha256", "tmp"] {
            do { try FileManager.default.createDirectory(at: folder.appendingPathComponent(sub), withIntermediateDirectories: true) } catch {
                throw .io("cannot create the datastore folder \(folder.appendingPathComponent(sub).path): \(error.localizedDescription)")
            }
        }
    }

    public func path(_ digest: Digest) -> URL { folder.appendingPathComponent("blobs/sha256/" + digest.hex) }
    public var temporaryFolder: URL { folder.appendingPathComponent("tmp") }

    public func contains(_ digest: Digest) -> Bool { FileManager.default.fileExists(atPath: path(digest).path) }

    /// A fresh temporary path in tmp/ for a download or an unpack.
    public func temporaryPath(_ label: String) -> URL {
        temporaryFolder.appendingPathComponent("\(label).\(UUID().uuidString.prefix(8).lowercased())")
    }

    /// Moves a verified temporary file into place under its digest.
    public func commit(_ temporary: URL, as digest: Digest) throws(ImageError) {
        guard rename(temporary.path, path(digest).path) == 0 else {
            throw .io("cannot move \(temporary.path) to \(path(digest).path): \(String(cString: strerror(errno)))")
        }
    }

    /// Stores bytes already in memory (a manifest, a config) under their digest.
    public func write(_ bytes: [UInt8], as digest: Digest) throws(ImageError) {
        guard !contains(digest) else { return }
        let temporary = temporaryPath(digest.hex)
        do { try Data(bytes).write(to: temporary) } catch { throw .io("cannot write \(temporary.path): \(error.localizedDescription)") }
        try commit(temporary, as: digest)
    }

    public func read(_ digest: Digest) throws(ImageError) -> [UInt8] {
        do { return Array(try Data(contentsOf: path(digest))) } catch { throw .io("cannot read blob \(digest): \(error.localizedDescription)") }
    }

    public func allDigests() -> [Digest] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("blobs/sha256").path)) ?? []
        return names.compactMap { try? Digest(hex: $0) }
    }
}
