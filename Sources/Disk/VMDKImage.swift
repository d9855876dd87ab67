import Foundation
import IOEngine
import Synchronization

/// One VMDK disk (one link of a chain): its descriptor and the extents that hold its data,
/// in any of the hosted subformats.
///
/// `@unchecked Sendable`: every field is a `let`, the descriptor kept in the `currentDescriptor` Mutex; the callers of
/// `updateDescriptor` (a read-modify-write) serialise it (`VirtualDisk`'s `changeLock`, a conversion's one task).
public final class VMDKImage: @unchecked Sendable {
    enum Backing {
        case sparse(SparseExtent)
        /// Data at `start` bytes into `file`.
        case flat(HostFile, start: UInt64)
        case zero
    }

    struct Extent {
        /// Where the extent begins in the disk's address space, in bytes.
        let start: UInt64
        let length: UInt64
        let backing: Backing
    }

    public let path: String
    public let writable: Bool
    let extents: [Extent]
    /// Set for monolithicSparse and streamOptimized disks, whose descriptor lives in the extent.
    let embeddingExtent: SparseExtent?
    private let currentDescriptor: Mutex<Descriptor>

    public var descriptor: Descriptor { currentDescriptor.withLock { $0 } }
    public var capacityBytes: UInt64 { extents.last.map { $0.start + $0.length } ?? 0 }
    public var folder: String { (path as NSString).deletingLastPathComponent }

    private init(path: String, writable: Bool, descriptor: Descriptor, extents: [Extent], embeddingExtent: SparseExtent?) {
        self.path = path
        self.writable = writable
        self.extents = extents
        self.embeddingExtent = embeddingExtent
        currentDescriptor = Mutex(descriptor)
    }

    /// Opens the disk at `path`: a sparse extent with its descriptor inside, or a descriptor
    /// file naming its extents (which must sit in the descriptor's folder).
    public static func open(path: String, writable: Bool, direct: Bool = true, engine: IOEngine) async throws(DiskError) -> VMDKImage {
        let first = try HostFile(path: path, writable: writable, direct: direct, engine: engine)
        let (leading, available) = try await first.readBytes(count: 4, at: 0)
        if available == 4, UInt32(leading[0]) | UInt32(leading[1]) << 8 | UInt32(leading[2]) << 16 | UInt32(leading[3]) << 24 == SparseExtentHeader.magic {
            return try await openMonolithic(first, writable: writable)
        }
        let size = try first.size()
        guard size <= UInt64(Descriptor.maximumBytes) else {
            throw .malformed(file: path, field: "header.magicNumber", problem: "the file is neither a sparse extent (no KDMV magic) nor a descriptor (\(size) bytes is too large for one)")
        }
        let text = try await first.readExactly(count: Int(size), at: 0, structure: "descriptor")
        let descriptor = try Descriptor.parse(text, file: path)
        let folder = (path as NSString).deletingLastPathComponent
        var extents: [Extent] = []
        var start: UInt64 = 0
        for (index, entry) in descriptor.extents.enumerated() {
            let length = entry.sectors * 512
            let backing = try await openExtent(entry, index: index, descriptorPath: path, folder: folder, writable: writable, direct: direct, engine: engine)
            extents.append(Extent(start: start, length: length, backing: backing))
            start += length
        }
        return VMDKImage(path: path, writable: writable, descriptor: descriptor, extents: extents, embeddingExtent: nil)
    }

    private static func openMonolithic(_ file: HostFile, writable: Bool) async throws(DiskError) -> VMDKImage {
        let extent = try await SparseExtent.open(file)
        let header = extent.header
        guard header.descriptorSectors > 0 else {
            throw .malformed(file: file.path, field: "header.descriptorSize", problem: "is 0: this is one extent of a split disk; open its descriptor file instead")
        }
        let text = try await file.readExactly(count: Int(header.descriptorSectors) * 512, at: header.descriptorOffset * 512, structure: "embedded descriptor")
        let descriptor = try Descriptor.parse(text, file: file.path)
        guard descriptor.extents.count == 1, descriptor.extents[0].kind == .sparse else {
            throw .malformed(file: file.path, field: "descriptor extents", problem: "an embedded descriptor must name exactly one SPARSE extent (its own file)")
        }
        guard descriptor.extents[0].sectors == header.capacitySectors else {
            throw .malformed(file: file.path, field: "descriptor extent 1 size", problem: "\(descriptor.extents[0].sectors) sectors differs from the header's capacity of \(header.capacitySectors)")
        }
        let only = Extent(start: 0, length: header.capacitySectors * 512, backing: .sparse(extent))
        return VMDKImage(path: file.path, writable: writable, descriptor: descriptor, extents: [only], embeddingExtent: extent)
    }

    private static func openExtent(_ entry: Descriptor.Extent, index: Int, descriptorPath: String, folder: String, writable: Bool, direct: Bool, engine: IOEngine) async throws(DiskError) -> Backing {
        let field = "descriptor extent \(index + 1)"
        if entry.kind == .zero { return .zero }
        guard !entry.fileName.hasPrefix("/"), !entry.fileName.split(separator: "/").contains("..") else {
            throw .malformed(file: descriptorPath, field: "\(field) file name", problem: "\"\(entry.fileName)\" leaves the descriptor's folder")
        }
        let path = (folder as NSString).appendingPathComponent(entry.fileName)
        let file = try HostFile(path: path, writable: writable && entry.access == "RW", direct: direct, engine: engine)
        switch entry.kind {
        case .flat:
            let needed = (entry.offsetSectors + entry.sectors) * 512
            let size = try file.size()
            guard size >= needed else {
                throw .malformed(file: descriptorPath, field: "\(field) size", problem: "\(entry.fileName) has \(size) bytes but the extent needs \(needed)")
            }
            return .flat(file, start: entry.offsetSectors * 512)
        case .sparse:
            let extent = try await SparseExtent.open(file)
            guard extent.header.capacitySectors == entry.sectors else {
                throw .malformed(file: descriptorPath, field: "\(field) size", problem: "\(entry.sectors) sectors differs from the \(extent.header.capacitySectors) in \(entry.fileName)'s header")
            }
            return .sparse(extent)
        case .zero:
            return .zero
        }
    }

    /// The extent holding `offset`.
    func extentIndex(containing offset: UInt64) -> Int? {
        var low = 0, high = extents.count
        while low < high {
            let middle = (low + high) / 2
            if extents[middle].start + extents[middle].length <= offset { low = middle + 1 } else { high = middle }
        }
        return low < extents.count ? low : nil
    }

    /// Where `offset` of this disk reads from, for up to `limit` bytes.
    nonisolated(nonsending) func map(_ offset: UInt64, limit: UInt64) async throws(DiskError) -> (GrainMapping, UInt64) {
        guard let index = extentIndex(containing: offset) else { return (.unallocated, limit) }
        let extent = extents[index]
        let local = offset - extent.start
        let bounded = min(limit, extent.length - local)
        switch extent.backing {
        case .sparse(let sparse): return try await sparse.map(local, limit: bounded)
        case .flat(let file, let start): return (.data(file: file, offset: start + local), bounded)
        case .zero: return (.zero, bounded)
        }
    }

    /// Replaces the descriptor, where the disk keeps it: inside the extent, or in the
    /// descriptor file (written to a temporary file and renamed over the old one).
    func updateDescriptor(_ change: (inout Descriptor) -> Void) async throws(DiskError) {
        var updated = descriptor
        change(&updated)
        let text = updated.rendered()
        if let embeddingExtent {
            try await SparseExtent.writeEmbeddedDescriptor(text, to: embeddingExtent.file, header: embeddingExtent.header)
            // A disk written with deferred syncs is flushed once, by its writer, at its end.
            if embeddingExtent.syncsEachAllocation { try await embeddingExtent.file.flush() }
        } else {
            do {
                try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            } catch {
                throw .invalidArgument("\(path): cannot rewrite the descriptor: \(error.localizedDescription)")
            }
        }
        currentDescriptor.withLock { $0 = updated }
    }
}
