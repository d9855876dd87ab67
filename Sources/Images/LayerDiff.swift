import Disk
import Foundation

/// The changes a container made to its root filesystem, as an OCI layer tarball: its disk
/// (`upper`) is a child of its image's top layer disk (`lower`), so an inode the container
/// did not touch has the same number and the same fields on both, and one it changed has a
/// new ctime or new extents. Walks both trees by name: what `upper` added or changed goes
/// into the tarball whole (a file's content, a folder's mode and owner, a symlink's target;
/// a second name of a hard-linked inode as a link to the first), what only `lower` has
/// becomes a `.wh.NAME` whiteout, and a name whose type changed gets both. Names are sorted,
/// so the same changes give the same tarball (and diff_id).
public struct LayerDiff {
    /// What the walk found.
    public struct Summary: Codable, Sendable, Equatable {
        /// Entries written whole (new or changed files, folders, links).
        public var changed: Int = 0
        /// Whiteouts written (names removed).
        public var removed: Int = 0
        /// Bytes of file content in the tarball.
        public var contentBytes: UInt64 = 0
    }

    let upper: Ext4Volume
    let lower: Ext4Volume
    let writer: LayerTarWriter
    private var summary = Summary()
    /// The path each hard-linked inode was first written at.
    private var firstPath: [UInt32: [UInt8]] = [:]
    private let chunk: UnsafeMutableRawBufferPointer
    /// Deeper than this is refused (a path of 4,096 bytes holds at most 2,048 levels).
    static let maximumDepth = 2048

    /// Writes the changes from `lower` to `upper` into `writer` (which the caller finishes).
    public static func write(upper: Ext4Volume, lower: Ext4Volume, to writer: LayerTarWriter) async throws -> Summary {
        var diff = LayerDiff(upper: upper, lower: lower, writer: writer)
        defer { diff.chunk.deallocate() }
        try await diff.walk(upper.root(), lower.root(), path: [], depth: 0)
        return diff.summary
    }

    private init(upper: Ext4Volume, lower: Ext4Volume, writer: LayerTarWriter) {
        self.upper = upper
        self.lower = lower
        self.writer = writer
        chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    }

    /// Compares folder `directory` of the upper tree (at `path`, "a/b/" or empty for the
    /// root) with its counterpart below, when there is one.
    private mutating func walk(_ directory: Ext4Inode, _ below: Ext4Inode?, path: [UInt8], depth: Int) async throws {
        guard depth < Self.maximumDepth else { throw ImageError.io("the container's disk nests folders over \(Self.maximumDepth) deep at /\(String(decoding: path, as: UTF8.self))") }
        let entries = try await Self.children(of: directory, in: upper)
        var lowerEntries: [[UInt8]: UInt32] = [:]
        if let below {
            for entry in try await Self.children(of: below, in: lower) { lowerEntries[entry.name] = entry.inode }
        }
        let names = Set(entries.map(\.name))
        for name in lowerEntries.keys.filter({ !names.contains($0) }).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            try whiteout(path + name)
        }
        for entry in entries {
            let inode = try await upper.inode(entry.inode)
            var previous: Ext4Inode? = nil
            if let number = lowerEntries[entry.name] {
                let old = try await lower.inode(number)
                if old.mode & Self.typeMask == inode.mode & Self.typeMask {
                    previous = old
                } else {
                    try whiteout(path + entry.name)
                }
            }
            let entryPath = path + entry.name
            if previous.map({ inode.isUnchanged(from: $0) }) != true {
                try await emit(inode, at: entryPath)
            }
            if inode.isDirectory {
                try await walk(inode, previous, path: entryPath + [UInt8(ascii: "/")], depth: depth + 1)
            }
        }
    }

    static let typeMask: UInt16 = 0o170000

    /// A folder's entries but "." and "..", sorted by name.
    private static func children(of directory: Ext4Inode, in volume: Ext4Volume) async throws -> [Ext4DirectoryEntry] {
        try await volume.entries(of: directory)
            .filter { $0.name != [UInt8(ascii: ".")] && $0.name != [UInt8(ascii: "."), UInt8(ascii: ".")] && $0.inode != 0 }
            .sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    private mutating func whiteout(_ path: [UInt8]) throws {
        var parts = path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        let name = parts.removeLast()
        let folder = parts.map { Array($0) + [UInt8(ascii: "/")] }.joined()
        try writer.begin(LayerTarWriter.Header(path: Array(folder) + Array(".wh.".utf8) + Array(name), kind: .file, mode: 0o644))
        summary.removed += 1
    }

    /// Writes `inode` whole at `path`.
    private mutating func emit(_ inode: Ext4Inode, at path: [UInt8]) async throws {
        let shown = String(decoding: path, as: UTF8.self)
        var header = LayerTarWriter.Header(path: path, kind: .file, mode: UInt32(inode.mode & 0o7777), uid: inode.uid, gid: inode.gid,
                                           modified: (inode.modificationTime.seconds, inode.modificationTime.nanoseconds),
                                           xattrs: inode.xattrs.compactMap(Self.portable))
        switch inode.mode & Self.typeMask {
        case 0o040000:
            header.kind = .directory
            header.path += [UInt8(ascii: "/")]
        case 0o100000:
            if inode.links > 1 {
                if let first = firstPath[inode.number] {
                    header.kind = .hardLink
                    header.linkName = first
                    header.xattrs = []
                    try writer.begin(header)
                    summary.changed += 1
                    return
                }
                firstPath[inode.number] = path
            }
            header.size = inode.size
            try writer.begin(header)
            var offset: UInt64 = 0
            while offset < inode.size {
                let got = try await upper.read(inode, at: offset, into: UnsafeMutableRawBufferPointer(rebasing: chunk[0..<Int(min(UInt64(chunk.count), inode.size - offset))]))
                guard got > 0 else { throw ImageError.io("/\(shown) on the container's disk ends before its size (\(offset) of \(inode.size) bytes)") }
                // unsafe: read filled `got` bytes of the chunk.
                try writer.append(UnsafeRawBufferPointer(rebasing: chunk[0..<got]))
                offset += UInt64(got)
            }
            summary.contentBytes += inode.size
            summary.changed += 1
            return
        case 0o120000:
            header.kind = .symlink
            header.linkName = try await upper.symlinkTarget(inode)
        case 0o010000:
            header.kind = .fifo
        default:
            throw ImageError.unsupported("/\(shown) on the container's disk is a device node or socket (mode \(String(inode.mode, radix: 8))), which an image layer cannot hold")
        }
        try writer.begin(header)
        summary.changed += 1
    }

    /// The attributes a layer carries (those the unpacker sets: user., trusted. and
    /// security.capability); POSIX ACLs are in ext4's own form on the disk and stay out.
    static func portable(_ xattr: Ext4XAttr) -> TarXAttr? {
        let name = xattr.fullName
        guard name.hasPrefix("user.") || name.hasPrefix("trusted.") || name == "security.capability" else { return nil }
        return TarXAttr(name: name, value: xattr.value)
    }
}
