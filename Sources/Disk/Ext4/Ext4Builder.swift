import Foundation
import IOEngine

/// What the writer sets on every file it makes: permission bits (07777), owner, time and xattrs.
public struct Ext4Attributes: Sendable, Equatable {
    public var permissions: UInt16
    public var uid: UInt32
    public var gid: UInt32
    public var modificationTime: Ext4Time
    public var xattrs: [Ext4XAttr]

    public init(permissions: UInt16, uid: UInt32 = 0, gid: UInt32 = 0, modificationTime: Ext4Time, xattrs: [Ext4XAttr] = []) {
        self.permissions = permissions & 0o7777
        self.uid = uid
        self.gid = gid
        self.modificationTime = modificationTime
        self.xattrs = xattrs
    }
}

/// Where a regular file's bytes come from: `read` fills the buffer from the start and returns
/// the count, 0 at the end. Tar entries and host files both read synchronously.
public protocol Ext4ContentSource {
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// What a special file is.
public enum Ext4SpecialKind: Sendable, Equatable {
    case characterDevice(major: UInt32, minor: UInt32)
    case blockDevice(major: UInt32, minor: UInt32)
    case fifo
    case socket
}

/// Lays out and changes an ext4 file system on a virtual disk: 4 KiB blocks, extents, linear
/// directories; a jbd2 journal on container disks only (`addJournal`). The whole metadata (inodes, directories, bitmaps) lives in memory
/// while it works; file contents go to the disk as they are added, and `finish` writes the
/// metadata, each block only where it differs from what the disk holds already.
///
/// That last rule makes image layers chains: opened on a child disk of the layer below
/// (`open(on:)` reads the parent's file system through the child), the builder applies the
/// next layer and the child receives only the blocks this layer changed; every other read
/// falls through to the parent.
///
/// Not `Sendable`: one task drives a builder from start to `finish`.
public final class Ext4Builder {
    let disk: VirtualDisk
    let name: String
    let geometry: Ext4Geometry
    var blockBitmap: [UInt64]
    var inodeBitmap: [UInt64]
    var inodes: [UInt32: Ext4InodeRecord]
    /// Entries of each directory (without "." and ".."), and the parent for "..".
    var directories: [UInt32: DirectoryModel]
    /// Inodes whose on-disk bytes must be written (changed, made, or freed).
    var dirtyInodes: Set<UInt32> = []
    var uuid: [UInt8]
    var hashSeed: [UInt8]
    /// uninit_bg: group descriptors with checksums and `Ext4.GroupFlag`s, so that the groups
    /// nothing uses cost no writes (their bitmaps are computed by readers, their inode tables
    /// read as the sparse disk's zeros). Set for file systems made here; one opened keeps what
    /// it had (disks written before the feature have none).
    var groupChecksums = true
    var createdAt: UInt32
    private var blockCursor: UInt64 = 0
    private var inodeCursor: UInt32 = Ext4.firstNonReservedInode
    /// (directory, name) pairs this layer made, which its opaque markers keep.
    private var madeThisLayer: Set<EntryKey> = []
    var writer: DataWriter
    /// The time changes are stamped with: fixed for a layer, moved on by each change of a live
    /// container disk (`touchClock`).
    var now: Ext4Time
    /// Set for a container's live disk (`enableDeferredFrees`): blocks and inodes freed since
    /// the last `finish` stay marked used until the next one has written the metadata that no
    /// longer points at them, so a crash in between never finds them holding something else.
    var defersFrees = false
    var deferredBlocks: [UInt64] = []
    var deferredInodes: [UInt32] = []
    /// The internal journal (container disks: `addJournal`), and whether it is on the disk,
    /// recorded by a finished superblock, so that `finish` may commit through it.
    var journal: Ext4JournalArea?
    var journalReady = false
    /// Groups whose bitmaps changed since the last `finish` (nil: not tracked, every group's
    /// bitmaps are laid out). Set once the bitmaps read at `open(on:)` are in.
    var changedGroups: Set<Int>?
    /// The superblock and descriptor blocks as the last `finish` left them on the disk.
    var writtenSuperblocks: [UInt64: [UInt8]] = [:]
    /// Targets of the slow symlinks (60 bytes or more: one data block) a running container
    /// made, by inode: read from here (not the disk) while the container runs.
    var liveSymlinkTargets: [UInt32: [UInt8]] = [:]
    /// Which of those have their block still to be written (at the next `finish`).
    var unwrittenSymlinks: Set<UInt32> = []
    /// For crash tests only: the journaled commit step after which `finish` stops.
    var stopsCommitAfter: JournalCommitStep?

    struct EntryKey: Hashable {
        let directory: UInt32
        let name: [UInt8]
    }

    /// A directory's entries in the order they were made. A removed entry leaves a hole
    /// until holes are half the slots, then the slots are compacted: removing every entry of
    /// a large directory (rm -r, unlinking many links) costs linear time, not quadratic.
    final class DirectoryModel {
        var parent: UInt32
        private var slots: [Ext4DirectoryEntry?] = []
        private var holes = 0
        private var index: [[UInt8]: Int] = [:]
        var dirty = true

        init(parent: UInt32) { self.parent = parent }

        /// The entries, in order.
        var entries: [Ext4DirectoryEntry] { slots.compactMap { $0 } }

        var isEmpty: Bool { index.isEmpty }

        func find(_ name: [UInt8]) -> Ext4DirectoryEntry? { index[name].flatMap { slots[$0] } }

        func add(_ entry: Ext4DirectoryEntry) {
            index[entry.name] = slots.count
            slots.append(entry)
            dirty = true
        }

        func remove(_ name: [UInt8]) {
            guard let position = index.removeValue(forKey: name) else { return }
            dirty = true
            if position == slots.count - 1 {
                slots.removeLast()
                while slots.last.map({ $0 == nil }) == true {
                    slots.removeLast()
                    holes -= 1
                }
                return
            }
            slots[position] = nil
            holes += 1
            guard holes > 16, holes * 2 > slots.count else { return }
            slots = slots.filter { $0 != nil }
            holes = 0
            for (position, entry) in slots.enumerated() { index[entry!.name] = position }
        }
    }

    init(disk: VirtualDisk, geometry: Ext4Geometry, now: Ext4Time) {
        self.disk = disk
        name = disk.layers[0].path
        self.geometry = geometry
        blockBitmap = [UInt64](repeating: 0, count: Int((geometry.blocksCount + 63) / 64))
        inodeBitmap = [UInt64](repeating: 0, count: Int((UInt64(geometry.inodesCount) + 63) / 64))
        inodes = [:]
        directories = [:]
        uuid = (0..<16).map { _ in UInt8.random(in: 0...255) }
        uuid[6] = uuid[6] & 0x0F | 0x40
        uuid[8] = uuid[8] & 0x3F | 0x80
        hashSeed = (0..<16).map { _ in UInt8.random(in: 0...255) }
        createdAt = UInt32(truncatingIfNeeded: now.seconds)
        self.now = now
        writer = DataWriter(disk: disk, blockSize: geometry.blockSize)
    }

    /// A new, empty file system over the whole of `disk`: its root folder only. There is no
    /// /lost+found (e2fsck makes one when it needs it), so the file system holds exactly the
    /// files of the layers applied to it.
    public static func create(on disk: VirtualDisk, bytesPerInode: Int = 16384, rootAttributes: Ext4Attributes? = nil) throws(Ext4Error) -> Ext4Builder {
        let now = Ext4Time(seconds: Int64(Date().timeIntervalSince1970))
        let geometry = try Ext4Geometry.forWriting(capacityBytes: disk.capacityBytes, bytesPerInode: bytesPerInode)
        let builder = Ext4Builder(disk: disk, geometry: geometry, now: now)
        for group in 0..<geometry.groupCount {
            for block in geometry.metadataBlocks(group) { builder.markBlock(block, used: true) }
        }
        for inode in 1..<Ext4.firstNonReservedInode { builder.markInode(inode, used: true) }
        let root = rootAttributes ?? Ext4Attributes(permissions: 0o755, modificationTime: now)
        builder.inodes[Ext4.rootInode] = builder.record(mode: Ext4.Mode.directory, root, links: 2)
        builder.directories[Ext4.rootInode] = DirectoryModel(parent: Ext4.rootInode)
        builder.dirtyInodes.insert(Ext4.rootInode)
        return builder
    }

    func record(mode type: UInt16, _ attributes: Ext4Attributes, links: UInt16) -> Ext4InodeRecord {
        var record = Ext4InodeRecord()
        record.mode = type | attributes.permissions
        record.uid = attributes.uid
        record.gid = attributes.gid
        record.modificationTime = attributes.modificationTime
        record.accessTime = attributes.modificationTime
        record.changeTime = now
        record.creationTime = now
        record.links = links
        record.xattrs = attributes.xattrs
        if type == Ext4.Mode.directory || type == Ext4.Mode.regular { record.flags = Ext4.InodeFlag.extents }
        return record
    }

    // MARK: - Bitmaps and allocation

    func isBlockUsed(_ block: UInt64) -> Bool { blockBitmap[Int(block / 64)] & (1 << (block % 64)) != 0 }

    func markBlock(_ block: UInt64, used: Bool) {
        if used { blockBitmap[Int(block / 64)] |= 1 << (block % 64) } else { blockBitmap[Int(block / 64)] &= ~(1 << (block % 64)) }
        changedGroups?.insert(Int((block - UInt64(geometry.firstDataBlock)) / UInt64(geometry.blocksPerGroup)))
    }

    func isInodeUsed(_ inode: UInt32) -> Bool { inodeBitmap[Int((inode - 1) / 64)] & (1 << UInt64((inode - 1) % 64)) != 0 }

    func markInode(_ inode: UInt32, used: Bool) {
        let bit: UInt64 = 1 << UInt64((inode - 1) % 64)
        if used { inodeBitmap[Int((inode - 1) / 64)] |= bit } else { inodeBitmap[Int((inode - 1) / 64)] &= ~bit }
        changedGroups?.insert(Int((inode - 1) / geometry.inodesPerGroup))
    }

    /// `count` free blocks as extents (first free from a moving cursor, runs of at most 32,768).
    func allocateBlocks(_ count: UInt64, logicalStart: UInt32 = 0) throws(Ext4Error) -> [Ext4Extent] {
        var extents: [Ext4Extent] = []
        var remaining = count
        var scanned: UInt64 = 0
        var block = blockCursor
        let total = geometry.blocksCount
        while remaining > 0 {
            guard scanned < total else {
                for extent in extents { for b in extent.physical..<extent.physical + UInt64(extent.length) { markBlock(b, used: false) } }
                throw .full(disk: name, what: "blocks (\(count) wanted)")
            }
            if block >= total { block = 0 }
            if blockBitmap[Int(block / 64)] == UInt64.max, block % 64 == 0 {
                block += 64
                scanned += 64
                continue
            }
            if !isBlockUsed(block) {
                markBlock(block, used: true)
                if var last = extents.last, last.physical + UInt64(last.length) == block, last.length < UInt32(Ext4.maximumExtentLength) {
                    last.length += 1
                    extents[extents.count - 1] = last
                } else {
                    let logical = logicalStart + UInt32(count - remaining)
                    extents.append(Ext4Extent(logical: logical, length: 1, physical: block))
                }
                remaining -= 1
            }
            block += 1
            scanned += 1
        }
        blockCursor = block
        return extents
    }

    func freeBlocks(_ extents: [Ext4Extent]) {
        for extent in extents {
            for block in extent.physical..<extent.physical + UInt64(extent.length) { releaseBlock(block) }
        }
    }

    /// Frees one block now, or at the next `finish` when frees are deferred.
    func releaseBlock(_ block: UInt64) {
        if defersFrees { deferredBlocks.append(block) } else { markBlock(block, used: false) }
    }

    /// Frees what was deferred: called by `writeMetadata` before it lays out the bitmaps.
    func applyDeferredFrees() {
        for block in deferredBlocks { markBlock(block, used: false) }
        for inode in deferredInodes { markInode(inode, used: false) }
        deferredBlocks = []
        deferredInodes = []
    }

    func allocateInode() throws(Ext4Error) -> UInt32 {
        let total = geometry.inodesCount
        var candidate = inodeCursor
        for _ in 0..<total {
            if candidate > total { candidate = Ext4.firstNonReservedInode }
            if !isInodeUsed(candidate) {
                markInode(candidate, used: true)
                inodeCursor = candidate + 1
                return candidate
            }
            candidate += 1
        }
        throw .full(disk: name, what: "inodes (all \(total) are in use)")
    }

    // MARK: - Paths

    /// The path's components, each checked: no empty, ".", ".." or over-long names.
    static func components(_ path: String) throws(Ext4Error) -> [[UInt8]] {
        var parts: [[UInt8]] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            guard part != ".." else { throw .invalidChange(path: path, problem: "contains '..'") }
            let bytes = Array(part.utf8)
            guard bytes.count <= Ext4.maximumNameLength, !bytes.contains(0) else {
                throw .invalidChange(path: path, problem: "has a component over 255 bytes or with a NUL")
            }
            parts.append(bytes)
        }
        return parts
    }

    /// The directory holding the last component of `parts`, made (0755, root) where missing.
    private func parentDirectory(of parts: [[UInt8]], path: String) throws(Ext4Error) -> UInt32 {
        var current = Ext4.rootInode
        for part in parts.dropLast() {
            if let entry = directories[current]!.find(part) {
                guard directories[entry.inode] != nil else {
                    throw .invalidChange(path: path, problem: "\"\(String(decoding: part, as: UTF8.self))\" on the way is not a directory")
                }
                current = entry.inode
            } else {
                current = try addDirectoryInode(in: current, name: part, Ext4Attributes(permissions: 0o755, modificationTime: now))
            }
        }
        return current
    }

    func addDirectoryInode(in parent: UInt32, name: [UInt8], _ attributes: Ext4Attributes) throws(Ext4Error) -> UInt32 {
        let inode = try allocateInode()
        inodes[inode] = record(mode: Ext4.Mode.directory, attributes, links: 2)
        directories[inode] = DirectoryModel(parent: parent)
        try link(inode, in: parent, name: name, fileType: Ext4.FileType.directory)
        inodes[parent]!.links = Self.linkAdded(inodes[parent]!.links)
        dirtyInodes.insert(inode)
        dirtyInodes.insert(parent)
        return inode
    }

    func link(_ inode: UInt32, in directory: UInt32, name: [UInt8], fileType: UInt8) throws(Ext4Error) {
        directories[directory]!.add(Ext4DirectoryEntry(name: name, inode: inode, fileType: fileType))
        madeThisLayer.insert(EntryKey(directory: directory, name: name))
        touch(directory)
    }

    /// A directory's entries changed: its ctime moves; for a layer its mtime stays what its
    /// own entry (the tarball's or the host folder's) says, as unpacking an image leaves it.
    func touch(_ directory: UInt32) {
        inodes[directory]!.changeTime = now
        // A running container's change moves the mtime too, as Linux does.
        if defersFrees { inodes[directory]!.modificationTime = now }
        dirtyInodes.insert(directory)
    }

    /// Removes `name` from `directory`, and the inode with its last link (a directory with
    /// everything in it).
    func unlink(_ name: [UInt8], in directory: UInt32) {
        guard let entry = directories[directory]!.find(name) else { return }
        directories[directory]!.remove(name)
        touch(directory)
        release(entry.inode, from: directory)
    }

    func release(_ inode: UInt32, from directory: UInt32) {
        if let model = directories[inode] {
            for child in model.entries { release(child.inode, from: inode) }
            directories[inode] = nil
            if let links = inodes[directory]?.links { inodes[directory]!.links = Self.linkRemoved(links) }
            free(inode)
            return
        }
        guard var record = inodes[inode] else { return }
        record.links = record.links > 1 ? record.links - 1 : 0
        if record.links == 0 {
            free(inode)
        } else {
            record.changeTime = now
            inodes[inode] = record
            dirtyInodes.insert(inode)
        }
    }

    /// A directory's link count with one more subdirectory: past 65,000 it stays 1, as ext4's
    /// dir_nlink has it ("many").
    static func linkAdded(_ links: UInt16) -> UInt16 {
        links == 1 || links >= UInt16(Ext4.maximumLinks) ? 1 : links + 1
    }

    /// A directory's link count with one subdirectory fewer (1, "many", stays; never below 2 otherwise).
    static func linkRemoved(_ links: UInt16) -> UInt16 {
        links <= 2 ? (links == 1 ? 1 : 2) : links - 1
    }

    func free(_ inode: UInt32) {
        if let record = inodes[inode] {
            freeBlocks(record.extents)
            for block in record.treeBlocks { releaseBlock(block) }
            if record.xattrBlock != 0 { releaseBlock(record.xattrBlock) }
        }
        inodes[inode] = nil
        liveSymlinkTargets[inode] = nil
        unwrittenSymlinks.remove(inode)
        if defersFrees { deferredInodes.append(inode) } else { markInode(inode, used: false) }
        dirtyInodes.insert(inode)
    }

    /// Makes room for a new entry `name` in `directory`: removes what is there, unless it is
    /// a directory and `keepDirectory` (a directory entry over a directory changes its attributes).
    private func clear(_ name: [UInt8], in directory: UInt32, keepDirectory: Bool) -> UInt32? {
        guard let existing = directories[directory]!.find(name) else { return nil }
        if keepDirectory, directories[existing.inode] != nil { return existing.inode }
        unlink(name, in: directory)
        return nil
    }

    // MARK: - Changes

    /// Starts applying a new layer: entries made from here on survive this layer's opaque markers.
    public func beginLayer() { madeThisLayer = [] }

    /// Makes the directory `path`, or sets the attributes of the one there.
    public func makeDirectory(_ path: String, _ attributes: Ext4Attributes) throws(Ext4Error) {
        let parts = try Self.components(path)
        guard let last = parts.last else {
            var root = inodes[Ext4.rootInode]!
            apply(attributes, to: &root)
            inodes[Ext4.rootInode] = root
            dirtyInodes.insert(Ext4.rootInode)
            return
        }
        let parent = try parentDirectory(of: parts, path: path)
        if let existing = clear(last, in: parent, keepDirectory: true) {
            apply(attributes, to: &inodes[existing]!)
            dirtyInodes.insert(existing)
            madeThisLayer.insert(EntryKey(directory: parent, name: last))
        } else {
            _ = try addDirectoryInode(in: parent, name: last, attributes)
        }
    }

    private func apply(_ attributes: Ext4Attributes, to record: inout Ext4InodeRecord) {
        record.mode = record.type | attributes.permissions
        record.uid = attributes.uid
        record.gid = attributes.gid
        record.modificationTime = attributes.modificationTime
        record.accessTime = attributes.modificationTime
        record.changeTime = now
        record.xattrs = attributes.xattrs
    }

    /// Writes a regular file of `size` bytes read from `content`.
    public func addFile(_ path: String, _ attributes: Ext4Attributes, size: UInt64, content: inout some Ext4ContentSource) async throws(Ext4Error) {
        let parts = try Self.components(path)
        guard let last = parts.last else { throw .invalidChange(path: path, problem: "a file cannot replace the root folder") }
        let parent = try parentDirectory(of: parts, path: path)
        _ = clear(last, in: parent, keepDirectory: false)
        let inode = try allocateInode()
        var record = record(mode: Ext4.Mode.regular, attributes, links: 1)
        record.size = size
        let blockSize = UInt64(geometry.blockSize)
        let count = (size + blockSize - 1) / blockSize
        guard count <= UInt64(UInt32.max) else { throw .invalidChange(path: path, problem: "\(size) bytes is more than an ext4 file holds") }
        record.extents = try allocateBlocks(count)
        guard Ext4InodeRecord.treeBlocksNeeded(extents: record.extents.count, blockSize: geometry.blockSize) != nil else {
            freeBlocks(record.extents)
            throw .full(disk: name, what: "contiguous space for \(path) (it would need more than 1,360 extents)")
        }
        inodes[inode] = record
        dirtyInodes.insert(inode)
        try link(inode, in: parent, name: last, fileType: Ext4.FileType.regular)
        var remaining = size
        for extent in record.extents {
            let bytes = min(remaining, UInt64(extent.length) * blockSize)
            try await writer.write(from: &content, count: bytes, at: extent.physical, path: path)
            remaining -= bytes
        }
    }

    /// Makes a symlink to `target`: in the inode when under 60 bytes, else in one block.
    public func addSymlink(_ path: String, target: String, _ attributes: Ext4Attributes) async throws(Ext4Error) {
        let parts = try Self.components(path)
        guard let last = parts.last else { throw .invalidChange(path: path, problem: "a symlink cannot replace the root folder") }
        let bytes = Array(target.utf8)
        guard !bytes.isEmpty, bytes.count < geometry.blockSize, !bytes.contains(0) else {
            throw .invalidChange(path: path, problem: "symlink target of \(bytes.count) bytes is empty, too long or holds a NUL")
        }
        let parent = try parentDirectory(of: parts, path: path)
        _ = clear(last, in: parent, keepDirectory: false)
        let inode = try allocateInode()
        var record = record(mode: Ext4.Mode.symlink, attributes, links: 1)
        record.size = UInt64(bytes.count)
        if bytes.count < Ext4.inodeBlockBytes {
            record.inlineBlock = bytes + [UInt8](repeating: 0, count: Ext4.inodeBlockBytes - bytes.count)
        } else {
            record.flags = Ext4.InodeFlag.extents
            record.extents = try allocateBlocks(1)
            var source = ByteSource(bytes: bytes)
            try await writer.write(from: &source, count: UInt64(bytes.count), at: record.extents[0].physical, path: path)
        }
        inodes[inode] = record
        dirtyInodes.insert(inode)
        try link(inode, in: parent, name: last, fileType: Ext4.FileType.symlink)
    }

    /// Makes `path` another name of the file at `target` (which must not be a directory).
    public func addHardLink(_ path: String, target: String) throws(Ext4Error) {
        let parts = try Self.components(path)
        let targetParts = try Self.components(target)
        guard let last = parts.last, let targetLast = targetParts.last else { throw .invalidChange(path: path, problem: "a hard link cannot name the root folder") }
        let targetParent = try lookupDirectory(targetParts.dropLast(), path: target)
        guard let entry = directories[targetParent]!.find(targetLast) else {
            throw .invalidChange(path: path, problem: "hard link to \"\(target)\", which does not exist")
        }
        guard directories[entry.inode] == nil else { throw .invalidChange(path: path, problem: "hard link to the directory \"\(target)\"") }
        guard inodes[entry.inode]!.links < UInt16(Ext4.maximumLinks) else { throw .invalidChange(path: path, problem: "\"\(target)\" has \(Ext4.maximumLinks) links already") }
        let parent = try parentDirectory(of: parts, path: path)
        if directories[parent]!.find(last)?.inode == entry.inode { return }
        inodes[entry.inode]!.links += 1
        _ = clear(last, in: parent, keepDirectory: false)
        inodes[entry.inode]!.changeTime = now
        dirtyInodes.insert(entry.inode)
        try link(entry.inode, in: parent, name: last, fileType: entry.fileType)
    }

    /// Makes a device node, FIFO or socket.
    public func addSpecial(_ path: String, kind: Ext4SpecialKind, _ attributes: Ext4Attributes) throws(Ext4Error) {
        let parts = try Self.components(path)
        guard let last = parts.last else { throw .invalidChange(path: path, problem: "a special file cannot replace the root folder") }
        let parent = try parentDirectory(of: parts, path: path)
        _ = clear(last, in: parent, keepDirectory: false)
        let inode = try allocateInode()
        let type: UInt16
        var record: Ext4InodeRecord
        switch kind {
        case .characterDevice(let major, let minor):
            type = Ext4.Mode.characterDevice
            record = self.record(mode: type, attributes, links: 1)
            record.inlineBlock = Ext4InodeRecord.deviceBlock(major: major, minor: minor)
        case .blockDevice(let major, let minor):
            type = Ext4.Mode.blockDevice
            record = self.record(mode: type, attributes, links: 1)
            record.inlineBlock = Ext4InodeRecord.deviceBlock(major: major, minor: minor)
        case .fifo:
            type = Ext4.Mode.fifo
            record = self.record(mode: type, attributes, links: 1)
        case .socket:
            type = Ext4.Mode.socket
            record = self.record(mode: type, attributes, links: 1)
        }
        inodes[inode] = record
        dirtyInodes.insert(inode)
        try link(inode, in: parent, name: last, fileType: Ext4.FileType.of(mode: type))
    }

    /// A whiteout: removes `path` (and everything under it) if a lower layer made it.
    public func remove(_ path: String) throws(Ext4Error) {
        let parts = try Self.components(path)
        guard let last = parts.last else { throw .invalidChange(path: path, problem: "the root folder cannot be removed") }
        guard let parent = try? lookupDirectory(parts.dropLast(), path: path) else { return }
        if madeThisLayer.contains(EntryKey(directory: parent, name: last)) { return }
        unlink(last, in: parent)
    }

    /// An opaque marker: empties the directory `path` of what lower layers put there.
    public func makeOpaque(_ path: String) throws(Ext4Error) {
        let parts = try Self.components(path)
        let directory: UInt32
        if parts.isEmpty {
            directory = Ext4.rootInode
        } else {
            let parent = try parentDirectory(of: parts, path: path)
            if let existing = directories[parent]!.find(parts.last!), directories[existing.inode] != nil {
                directory = existing.inode
            } else {
                directory = try addDirectoryInode(in: parent, name: parts.last!, Ext4Attributes(permissions: 0o755, modificationTime: now))
            }
        }
        for entry in directories[directory]!.entries where !madeThisLayer.contains(EntryKey(directory: directory, name: entry.name)) {
            unlink(entry.name, in: directory)
        }
    }

    /// The directory `parts` names, without making anything.
    func lookupDirectory(_ parts: ArraySlice<[UInt8]>, path: String) throws(Ext4Error) -> UInt32 {
        var current = Ext4.rootInode
        for part in parts {
            guard let entry = directories[current]!.find(part), directories[entry.inode] != nil else {
                throw .invalidChange(path: path, problem: "\"\(String(decoding: part, as: UTF8.self))\" on the way is not a directory")
            }
            current = entry.inode
        }
        return current
    }

    /// The inode number `path` names (symlinks not followed), for tests and tools.
    public func inodeNumber(of path: String) throws(Ext4Error) -> UInt32? {
        let parts = try Self.components(path)
        guard let last = parts.last else { return Ext4.rootInode }
        guard let parent = try? lookupDirectory(parts.dropLast(), path: path) else { return nil }
        return directories[parent]!.find(last)?.inode
    }

    /// Flushes file contents, lays out the changed directories and extent trees, and writes
    /// every metadata block that differs from the disk's. The disk is flushed.
    public func finish() async throws(Ext4Error) {
        try await writeLiveSymlinkBlocks()
        try await writer.flush()
        try await writeMetadata()
        do { try await disk.flush() } catch { throw .disk(error) }
    }

    /// Content from an array.
    struct ByteSource: Ext4ContentSource {
        var bytes: [UInt8]
        var position = 0
        mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let count = min(buffer.count, bytes.count - position)
            buffer.copyBytes(from: bytes[position..<position + count])
            position += count
            return count
        }
    }
}

/// Gathers file contents into runs of adjacent blocks and writes each run in one request.
struct DataWriter {
    let disk: VirtualDisk
    let blockSize: Int
    /// 256 KiB: large enough for whole-grain writes, small enough to stay a modest transient.
    static let runBytes = 256 << 10
    private var buffer: IOBuffer
    private var runStart: UInt64 = 0
    private var filled = 0

    init(disk: VirtualDisk, blockSize: Int) {
        self.disk = disk
        self.blockSize = blockSize
        buffer = disk.engine.makeBuffer(count: Self.runBytes)
    }

    /// Writes `count` bytes from `source` at block `block` on, zero-padding the last block.
    mutating func write(from source: inout some Ext4ContentSource, count: UInt64, at block: UInt64, path: String) async throws(Ext4Error) {
        if filled > 0, runStart + UInt64(filled / blockSize) != block { try await flush() }
        if filled == 0 { runStart = block }
        var remaining = count
        while remaining > 0 {
            if filled == Self.runBytes {
                let next = runStart + UInt64(filled / blockSize)
                try await flush()
                runStart = next
            }
            let room = min(UInt64(Self.runBytes - filled), remaining)
            // unsafe: [filled, filled + room) lies inside the run buffer.
            let piece = UnsafeMutableRawBufferPointer(start: buffer.base + filled, count: Int(room))
            var got = 0
            while got < piece.count {
                let read: Int
                do { read = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: piece[got...])) } catch {
                    throw .invalidChange(path: path, problem: "reading its content: \(error)")
                }
                guard read > 0 else { throw .invalidChange(path: path, problem: "its content ended \(remaining - UInt64(got)) bytes early") }
                got += read
            }
            filled += got
            remaining -= UInt64(got)
        }
        let padding = (blockSize - filled % blockSize) % blockSize
        // unsafe: filled + padding stays within the run buffer (its size is whole blocks).
        (buffer.base + filled).initializeMemory(as: UInt8.self, repeating: 0, count: padding)
        filled += padding
    }

    mutating func flush() async throws(Ext4Error) {
        guard filled > 0 else { return }
        do {
            // unsafe: the first `filled` bytes of the run buffer hold the run.
            try await disk.write(UnsafeRawBufferPointer(start: buffer.base, count: filled), at: runStart * UInt64(blockSize))
        } catch { throw .disk(error) }
        runStart += UInt64(filled / blockSize)
        filled = 0
    }
}
