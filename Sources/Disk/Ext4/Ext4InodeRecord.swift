/// A time as ext4 keeps it: seconds since the epoch (34 bits with the extra field's epoch
/// bits) and nanoseconds.
public struct Ext4Time: Sendable, Equatable {
    public var seconds: Int64
    public var nanoseconds: UInt32

    public init(seconds: Int64, nanoseconds: UInt32 = 0) {
        self.seconds = seconds
        self.nanoseconds = min(nanoseconds, 999_999_999)
    }

    /// The 32-bit base field and the extra field (epoch bits 0-1, nanoseconds << 2).
    var encoded: (base: UInt32, extra: UInt32) {
        let base = Int32(truncatingIfNeeded: seconds)
        let epoch = UInt32(truncatingIfNeeded: (seconds - Int64(base)) >> 32) & 3
        return (UInt32(bitPattern: base), epoch | nanoseconds << 2)
    }

    init(base: UInt32, extra: UInt32?) {
        var seconds = Int64(Int32(bitPattern: base))
        if let extra { seconds += Int64(extra & 3) << 32 }
        self.init(seconds: seconds, nanoseconds: (extra ?? 0) >> 2)
    }
}

/// One extent: `length` blocks of the file from block `logical` on lie at `physical`.
struct Ext4Extent: Sendable, Equatable {
    var logical: UInt32
    var length: UInt32
    var physical: UInt64
}

/// An extended attribute as ext4 stores it: a name index (the prefix) and the rest of the name.
public struct Ext4XAttr: Sendable, Equatable {
    public var index: UInt8
    public var name: [UInt8]
    public var value: [UInt8]

    /// The attribute called `fullName` (with its prefix, e.g. "user.comment"), or nil when
    /// ext4 has no index for its prefix. POSIX ACLs are converted to ext4's own ACL format.
    public init?(fullName: String, value: [UInt8]) {
        if fullName == "system.posix_acl_access" || fullName == "system.posix_acl_default" {
            guard let converted = Self.ext4ACL(fromVFS: value) else { return nil }
            index = fullName == "system.posix_acl_access" ? 2 : 3
            name = []
            self.value = converted
            return
        }
        guard let match = Ext4.xattrPrefixes.first(where: { fullName.hasPrefix($0.prefix) }) else { return nil }
        index = match.index
        name = Array(fullName.utf8.dropFirst(match.prefix.utf8.count))
        guard !name.isEmpty, name.count <= 255 else { return nil }
        self.value = value
    }

    init(index: UInt8, name: [UInt8], value: [UInt8]) {
        self.index = index
        self.name = name
        self.value = value
    }

    /// The name with its prefix, as getxattr(2) takes it.
    public var fullName: String {
        switch index {
        case 2: return "system.posix_acl_access"
        case 3: return "system.posix_acl_default"
        default:
            let prefix = Ext4.xattrPrefixes.first { $0.index == index }?.prefix ?? "unknown\(index)."
            return prefix + String(decoding: name, as: UTF8.self)
        }
    }

    /// The VFS's POSIX ACL (version 2; tag, perm, id per entry) in ext4's format (version 1;
    /// the id only for named users and groups).
    static func ext4ACL(fromVFS bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count >= 4, (bytes.count - 4) % 8 == 0, bytes.le32(0) == 2 else { return nil }
        var out: [UInt8] = [1, 0, 0, 0]
        var offset = 4
        while offset < bytes.count {
            let tag = bytes.le16(offset)
            out += bytes[offset..<offset + 4]
            if tag == 0x02 || tag == 0x08 { out += bytes[offset + 4..<offset + 8] }
            offset += 8
        }
        return out
    }

    /// ext2fs_ext_attr_hash_entry: the name bytes (as signed chars) then the value's words.
    var hash: UInt32 {
        var hash: UInt32 = 0
        for byte in name {
            hash = (hash << 5) ^ (hash >> 27) ^ UInt32(bitPattern: Int32(Int8(bitPattern: byte)))
        }
        var padded = value
        while padded.count % 4 != 0 { padded.append(0) }
        var offset = 0
        while offset < padded.count {
            hash = (hash << 16) ^ (hash >> 16) ^ padded.le32(offset)
            offset += 4
        }
        return hash
    }

    var entrySize: Int { (name.count + 16 + 3) & ~3 }
    var valueSize: Int { (value.count + 3) & ~3 }
}

/// One inode as the writer builds it and the reader finds it.
struct Ext4InodeRecord: Sendable, Equatable {
    var mode: UInt16 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var size: UInt64 = 0
    var accessTime = Ext4Time(seconds: 0)
    var changeTime = Ext4Time(seconds: 0)
    var modificationTime = Ext4Time(seconds: 0)
    var creationTime = Ext4Time(seconds: 0)
    var links: UInt16 = 0
    var flags: UInt32 = 0
    var generation: UInt32 = 0
    /// The file's data, for inodes with the extents flag.
    var extents: [Ext4Extent] = []
    /// Blocks holding extent tree nodes below the inode (index and leaf blocks).
    var treeBlocks: [UInt64] = []
    /// i_block as stored, for inodes without extents (fast symlinks, device numbers).
    var inlineBlock: [UInt8] = []
    var xattrs: [Ext4XAttr] = []
    /// The external xattr block, 0 for none.
    var xattrBlock: UInt64 = 0
    /// i_blocks as found on disk (512-byte units), for the reader.
    var sectors: UInt64 = 0

    var type: UInt16 { mode & Ext4.Mode.typeMask }
    var isDirectory: Bool { type == Ext4.Mode.directory }
    var isRegular: Bool { type == Ext4.Mode.regular }
    var isSymlink: Bool { type == Ext4.Mode.symlink }
    var usesExtents: Bool { flags & Ext4.InodeFlag.extents != 0 }
    var dataBlocks: UInt64 { extents.reduce(0) { $0 + UInt64($1.length) } }

    /// A device node's numbers, stored the way Linux's ext4 does (old 16-bit form when both fit).
    static func deviceBlock(major: UInt32, minor: UInt32) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: Ext4.inodeBlockBytes)
        if major < 256, minor < 256 {
            block.put32(major << 8 | minor, 0)
        } else {
            block.put32((minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12), 4)
        }
        return block
    }

    var deviceNumbers: (major: UInt32, minor: UInt32) {
        guard inlineBlock.count == Ext4.inodeBlockBytes else { return (0, 0) }
        let old = inlineBlock.le32(0)
        if old != 0 { return ((old >> 8) & 0xFF, old & 0xFF) }
        let new = inlineBlock.le32(4)
        return ((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))
    }

    /// How many extent-tree blocks `count` extents need below the inode: none for up to 4
    /// (they fit in i_block), else one leaf block per 340 extents (up to 4 leaves).
    static func treeBlocksNeeded(extents count: Int, blockSize: Int) -> Int? {
        if count <= 4 { return 0 }
        let perLeaf = (blockSize - 12) / 12
        let leaves = (count + perLeaf - 1) / perLeaf
        return leaves <= 4 ? leaves : nil
    }

    /// The xattrs laid out in the inode's spare bytes after the extra fields, or nil when they do not fit.
    static func inodeXAttrArea(_ xattrs: [Ext4XAttr], space: Int) -> [UInt8]? {
        if xattrs.isEmpty { return nil }
        var area = [UInt8](repeating: 0, count: space)
        guard layoutXAttrs(xattrs, into: &area, entriesAt: 4, valueBase: 4) else { return nil }
        area.put32(Ext4.xattrMagic, 0)
        return area
    }

    /// An external xattr block for `xattrs`, or nil when they do not fit one block.
    static func xattrBlockBytes(_ xattrs: [Ext4XAttr], blockSize: Int) -> [UInt8]? {
        var block = [UInt8](repeating: 0, count: blockSize)
        guard layoutXAttrs(xattrs, into: &block, entriesAt: 32, valueBase: 0) else { return nil }
        block.put32(Ext4.xattrMagic, 0)
        block.put32(1, 4)  // h_refcount
        block.put32(1, 8)  // h_blocks
        var hash: UInt32 = 0
        for xattr in sorted(xattrs) { hash = (hash << 16) ^ (hash >> 16) ^ xattr.hash }
        block.put32(hash, 12)
        return block
    }

    static func sorted(_ xattrs: [Ext4XAttr]) -> [Ext4XAttr] {
        xattrs.sorted { ($0.index, $0.name.count) < ($1.index, $1.name.count) || (($0.index, $0.name.count) == ($1.index, $1.name.count) && $0.name.lexicographicallyPrecedes($1.name)) }
    }

    /// Entries from `entriesAt` on, values from the end down; value offsets relative to `valueBase`.
    private static func layoutXAttrs(_ xattrs: [Ext4XAttr], into area: inout [UInt8], entriesAt: Int, valueBase: Int) -> Bool {
        let ordered = sorted(xattrs)
        let entryBytes = ordered.reduce(0) { $0 + $1.entrySize } + 4
        let valueBytes = ordered.reduce(0) { $0 + $1.valueSize }
        guard entriesAt + entryBytes + valueBytes <= area.count else { return false }
        var entry = entriesAt
        var valueEnd = area.count
        for xattr in ordered {
            valueEnd -= xattr.valueSize
            area[entry] = UInt8(xattr.name.count)
            area[entry + 1] = xattr.index
            area.put16(UInt16(valueEnd - valueBase), entry + 2)
            area.put32(0, entry + 4)
            area.put32(UInt32(xattr.value.count), entry + 8)
            area.put32(xattr.hash, entry + 12)
            area.replaceSubrange(entry + 16..<entry + 16 + xattr.name.count, with: xattr.name)
            area.replaceSubrange(valueEnd..<valueEnd + xattr.value.count, with: xattr.value)
            entry += xattr.entrySize
        }
        return true
    }

    /// The inode's `inodeSize` bytes. `treeBlocks` must already hold the blocks the extent
    /// tree needs; `xattrBlock` the block for xattrs that do not fit inside.
    func encoded(inodeSize: Int, blockSize: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: inodeSize)
        bytes.put16(mode, Ext4.Inode.mode)
        bytes.put16(UInt16(truncatingIfNeeded: uid), Ext4.Inode.uidLow)
        bytes.put16(UInt16(truncatingIfNeeded: uid >> 16), Ext4.Inode.uidHigh)
        bytes.put16(UInt16(truncatingIfNeeded: gid), Ext4.Inode.gidLow)
        bytes.put16(UInt16(truncatingIfNeeded: gid >> 16), Ext4.Inode.gidHigh)
        bytes.put32(UInt32(truncatingIfNeeded: size), Ext4.Inode.sizeLow)
        bytes.put32(UInt32(truncatingIfNeeded: size >> 32), Ext4.Inode.sizeHigh)
        for (time, base, extra) in [(accessTime, Ext4.Inode.accessTime, Ext4.Inode.accessTimeExtra),
                                    (changeTime, Ext4.Inode.changeTime, Ext4.Inode.changeTimeExtra),
                                    (modificationTime, Ext4.Inode.modificationTime, Ext4.Inode.modificationTimeExtra),
                                    (creationTime, Ext4.Inode.creationTime, Ext4.Inode.creationTimeExtra)] {
            let (low, high) = time.encoded
            bytes.put32(low, base)
            bytes.put32(high, extra)
        }
        bytes.put16(links, Ext4.Inode.linksCount)
        bytes.put32(flags, Ext4.Inode.flags)
        bytes.put32(generation, Ext4.Inode.generation)
        let blockUnits = UInt64(blockSize / 512)
        let sectors = (dataBlocks + UInt64(treeBlocks.count) + (xattrBlock != 0 ? 1 : 0)) * blockUnits
        bytes.put32(UInt32(truncatingIfNeeded: sectors), Ext4.Inode.blocksLow)
        bytes.put16(UInt16(truncatingIfNeeded: sectors >> 32), Ext4.Inode.blocksHigh)
        bytes.put32(UInt32(truncatingIfNeeded: xattrBlock), Ext4.Inode.fileACLLow)
        bytes.put16(UInt16(truncatingIfNeeded: xattrBlock >> 32), Ext4.Inode.fileACLHigh)
        if usesExtents {
            bytes.replaceSubrange(Ext4.Inode.block..<Ext4.Inode.block + Ext4.inodeBlockBytes, with: extentRoot(blockSize: blockSize))
        } else if !inlineBlock.isEmpty {
            bytes.replaceSubrange(Ext4.Inode.block..<Ext4.Inode.block + inlineBlock.count, with: inlineBlock.prefix(Ext4.inodeBlockBytes))
        }
        bytes.put16(UInt16(Ext4.extraInodeSize), Ext4.Inode.extraSize)
        let areaStart = 128 + Ext4.extraInodeSize
        if xattrBlock == 0, let area = Self.inodeXAttrArea(xattrs, space: inodeSize - areaStart) {
            bytes.replaceSubrange(areaStart..<inodeSize, with: area)
        }
        return bytes
    }

    /// The extent tree's root, in i_block: the extents themselves, or an index of the leaf blocks.
    private func extentRoot(blockSize: Int) -> [UInt8] {
        var root = [UInt8](repeating: 0, count: Ext4.inodeBlockBytes)
        root.put16(Ext4.extentMagic, 0)
        root.put16(4, 4)  // eh_max: (60 - 12) / 12
        if treeBlocks.isEmpty {
            root.put16(UInt16(extents.count), 2)
            for (index, extent) in extents.enumerated() { Self.putExtent(extent, into: &root, at: 12 + index * 12) }
        } else {
            root.put16(UInt16(treeBlocks.count), 2)
            root.put16(1, 6)  // eh_depth
            let perLeaf = (blockSize - 12) / 12
            for (index, leaf) in treeBlocks.enumerated() {
                let at = 12 + index * 12
                root.put32(extents[index * perLeaf].logical, at)
                root.put32(UInt32(truncatingIfNeeded: leaf), at + 4)
                root.put16(UInt16(truncatingIfNeeded: leaf >> 32), at + 8)
            }
        }
        return root
    }

    /// The leaf blocks of a depth-1 tree, one per entry of `treeBlocks`.
    func extentLeaves(blockSize: Int) -> [(block: UInt64, bytes: [UInt8])] {
        let perLeaf = (blockSize - 12) / 12
        return treeBlocks.enumerated().map { index, block in
            var leaf = [UInt8](repeating: 0, count: blockSize)
            let slice = extents[(index * perLeaf)..<min(extents.count, (index + 1) * perLeaf)]
            leaf.put16(Ext4.extentMagic, 0)
            leaf.put16(UInt16(slice.count), 2)
            leaf.put16(UInt16(perLeaf), 4)
            for (position, extent) in slice.enumerated() { Self.putExtent(extent, into: &leaf, at: 12 + position * 12) }
            return (block, leaf)
        }
    }

    private static func putExtent(_ extent: Ext4Extent, into bytes: inout [UInt8], at offset: Int) {
        bytes.put32(extent.logical, offset)
        bytes.put16(UInt16(extent.length), offset + 4)
        bytes.put16(UInt16(truncatingIfNeeded: extent.physical >> 32), offset + 6)
        bytes.put32(UInt32(truncatingIfNeeded: extent.physical), offset + 8)
    }
}
