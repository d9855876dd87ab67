import Disk
import Foundation
import IOEngine
import Logging

/// An image's layers as a chain of VMDK disks holding ext4, as vSphere Integrated Containers
/// keeps them: layer 1's disk holds the file system after layer 1; layer N's disk is a child
/// of layer N-1's, on which the builder applied layer N (whiteouts and opaque folders
/// honoured), so it holds only the grains layer N changed and reads the rest through its
/// parent. Disks are named by the layer's chain ID (OCI: the diff_ids of the layer and all
/// below it), so images sharing their lower layers share their disks:
///   layers/CHAINHEX.vmdk    the disk
///   layers/CHAINHEX.json    written once the disk is complete (a disk without it is redone)
public struct LayerDisks: Sendable {
    public let folder: URL
    /// The capacity of a chain's disks, fixed by its first layer (sparse: unused space costs nothing).
    public let capacityBytes: UInt64

    public init(folder: URL, capacityBytes: UInt64 = 8 << 30) {
        self.folder = folder
        self.capacityBytes = capacityBytes
    }

    /// What a complete layer disk records beside itself.
    public struct Record: Codable, Sendable, Equatable {
        public var chainID: Digest
        public var diffID: Digest
        /// The disk below, by file name in the same folder; nil for a first layer.
        public var parent: String?
    }

    /// The chain IDs of layers with these diff_ids, bottom first.
    public static func chainIDs(_ diffIDs: [Digest]) -> [Digest] {
        var result: [Digest] = []
        for diffID in diffIDs {
            guard let below = result.last else { result.append(diffID); continue }
            result.append(Digest.of(Array("\(below) \(diffID)".utf8)))
        }
        return result
    }

    public func diskName(_ chainID: Digest) -> String { chainID.hex + ".vmdk" }
    public func diskPath(_ chainID: Digest) -> String { folder.appendingPathComponent(diskName(chainID)).path }
    private func recordPath(_ chainID: Digest) -> String { folder.appendingPathComponent(chainID.hex + ".json").path }

    private func lockPath(_ chainID: Digest) -> String { folder.appendingPathComponent(chainID.hex + ".lock").path }

    /// Takes the lock of `chainID`'s disk (a file made with O_EXCL, holding this process's
    /// id): true once taken, false when the disk was completed by its holder meanwhile. A
    /// lock whose process is gone (a crash) is broken.
    private func lock(_ chainID: Digest) async throws -> Bool {
        let path = lockPath(chainID)
        while true {
            let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
            if fd >= 0 {
                let pid = Array("\(getpid())\n".utf8)
                // unsafe: write reads at most the pid line's count bytes from its storage, during the closure.
                _ = pid.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
                // Its holder may have completed the disk just before letting go.
                if isComplete(chainID) {
                    unlink(path)
                    return false
                }
                return true
            }
            guard errno == EEXIST else { throw ImageError.io("cannot make the lock \(path): \(String(cString: strerror(errno)))") }
            if isComplete(chainID) { return false }
            if let text = try? String(contentsOfFile: path, encoding: .utf8), let holder = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
               kill(holder, 0) != 0, errno == ESRCH {
                unlink(path)
                continue
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    public func isComplete(_ chainID: Digest) -> Bool {
        FileManager.default.fileExists(atPath: recordPath(chainID)) && FileManager.default.fileExists(atPath: diskPath(chainID))
    }

    /// Makes the disks of an image whose layer blobs are `blobs` (bottom first, as in the
    /// blob store) and uncompressed digests `diffIDs`, reusing complete ones; a layer whose
    /// tar `inflated` yields is read from there. Returns the disks' file names, bottom first.
    public func make(blobs: [URL], diffIDs: [Digest], limits: UnpackLimits, engine: IOEngine) async throws -> [String] {
        try await make(blobs: blobs, diffIDs: diffIDs, limits: limits, engine: engine, inflated: nil, logger: nil)
    }

    func make(blobs: [URL], diffIDs: [Digest], limits: UnpackLimits, engine: IOEngine, inflated: Task<[InflatedLayer?], Never>?,
              logger: Logger?) async throws -> [String] {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let chain = Self.chainIDs(diffIDs)
        for (index, chainID) in chain.enumerated() where !isComplete(chainID) {
            // Another pull of an image sharing this layer may be writing its disk: one writes, the other waits and reuses it.
            guard try await lock(chainID) else { continue }
            defer { unlink(lockPath(chainID)) }
            let path = diskPath(chainID)
            unlink(path)
            unlink(recordPath(chainID))
            let name = "\(index) (\(chainID.short))"
            let started = ContinuousClock.now
            do {
                // One flush at the builder's finish, not at the disk's creation, its new content
                // ID and each grain: the record below, written after it, is what makes the disk
                // count; a disk without one is written again.
                if index == 0 {
                    try await VMDKImage.create(at: path, capacityBytes: capacityBytes, syncs: false, engine: engine)
                } else {
                    try await VMDKImage.createChild(at: path, parent: diskPath(chain[index - 1]), syncs: false, engine: engine)
                }
                let disk = try await VirtualDisk.open(path: path, writable: true, engine: engine)
                disk.deferAllocationSyncs()
                let builder = index == 0 ? try Ext4Builder.create(on: disk) : try await Ext4Builder.open(on: disk)
                let opened = ContinuousClock.now
                // The layers in memory, once decoded (meanwhile the disk was made and opened).
                let tar = await inflated?.value[index]
                let stream = try tar.map { LayerStream(inflated: $0, layer: name) }
                    ?? LayerStream(file: blobs[index], layer: name, maxBytes: limits.maxStreamBytes)
                try await Self.apply(TarReader(source: stream, layer: name), to: builder, layer: name)
                let applied = ContinuousClock.now
                try await builder.finish()
                logger?.debug("layer disk written", metadata: ["layer": "\(name)", "open_ms": "\(ImagePuller.milliseconds(opened - started))",
                                                              "apply_ms": "\(ImagePuller.milliseconds(applied - opened))",
                                                              "finish_ms": "\(ImagePuller.milliseconds(ContinuousClock.now - applied))"])
                let diffID = stream.finishDigest()
                guard diffID == diffIDs[index] else {
                    throw ImageError.digestMismatch(what: "layer \(name), uncompressed, while writing its disk", expected: diffIDs[index].description,
                                                    actual: diffID.description)
                }
                let record = Record(chainID: chainID, diffID: diffIDs[index], parent: index == 0 ? nil : diskName(chain[index - 1]))
                try JSONEncoder().encode(record).write(to: URL(fileURLWithPath: recordPath(chainID)), options: .atomic)
            } catch let error as Ext4Error {
                unlink(path)
                throw ImageError.io("layer \(name): cannot write its disk \(path): \(error)")
            } catch let error as DiskError {
                unlink(path)
                throw ImageError.io("layer \(name): cannot write its disk \(path): \(error)")
            } catch {
                unlink(path)
                throw error
            }
        }
        return chain.map(diskName)
    }

    static let opaqueMarker = ".wh..wh..opq"
    static let whiteoutPrefix = ".wh."

    /// Applies one layer tarball to the file system `builder` holds: entries in order,
    /// `.wh.NAME` removing NAME of the layers below, `.wh..wh..opq` emptying its folder of
    /// what they put there.
    static func apply(_ reader: TarReader, to builder: Ext4Builder, layer: String) async throws {
        builder.beginLayer()
        while let entry = try reader.next() {
            do {
                try await apply(entry, reader, to: builder)
            } catch let error as Ext4Error {
                throw ImageError.unsafeLayer(layer: layer, entry: entry.path, problem: "\(error)")
            }
        }
        try reader.drain()
    }

    private static func apply(_ entry: TarEntry, _ reader: TarReader, to builder: Ext4Builder) async throws {
        let parts = entry.path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        let attributes = Ext4Attributes(permissions: UInt16(entry.mode & 0o7777), uid: UInt32(clamping: entry.uid), gid: UInt32(clamping: entry.gid),
                                        modificationTime: Ext4Time(seconds: entry.modificationTime))
        guard let last = parts.last else {
            if entry.kind == .directory { try builder.makeDirectory("/", attributes) }
            return
        }
        let parent = "/" + parts.dropLast().joined(separator: "/")
        if last == opaqueMarker {
            try builder.makeOpaque(parent)
            return
        }
        if last.hasPrefix(whiteoutPrefix) {
            try builder.remove(parent + "/" + last.dropFirst(whiteoutPrefix.count))
            return
        }
        let path = "/" + parts.joined(separator: "/")
        switch entry.kind {
        case .directory:
            try builder.makeDirectory(path, attributes)
        case .file:
            var content = TarContent(reader: reader)
            try await builder.addFile(path, attributes, size: UInt64(entry.size), content: &content)
        case .symlink:
            try await builder.addSymlink(path, target: entry.linkName, attributes)
        case .hardLink:
            try builder.addHardLink(path, target: entry.linkName)
        case .fifo:
            try builder.addSpecial(path, kind: .fifo, attributes)
        case .characterDevice, .blockDevice:
            throw Ext4Error.invalidChange(path: path, problem: "device nodes in layers are refused")
        }
    }

    /// Removes every disk (and record) whose chain ID is not in `keep`, and disks left
    /// without a record; returns how many disks went and the bytes freed.
    func collect(keeping keep: Set<String>) -> (removed: Int, bytes: Int64) {
        var removed = 0
        var bytes: Int64 = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] {
            let stem = (name as NSString).deletingPathExtension
            guard !keep.contains(stem + ".vmdk") else { continue }
            let path = folder.appendingPathComponent(name).path
            var info = stat()
            if lstat(path, &info) == 0 { bytes += Int64(info.st_blocks) * 512 }
            if name.hasSuffix(".vmdk") { removed += 1 }
            unlink(path)
        }
        return (removed, bytes)
    }
}

/// A tar entry's content as the ext4 builder pulls it.
struct TarContent: Ext4ContentSource {
    let reader: TarReader
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try reader.readSome(into: buffer)
    }
}
