import Foundation

extension Ext4Builder {
    /// The file system on `disk`, to change: typically a new child disk of the layer below,
    /// whose file system the builder reads through the child. Only file systems this writer
    /// laid out are accepted (its features, and each group's metadata where it puts them),
    /// since `finish` rewrites the superblock and descriptors in its own form.
    public static func open(on disk: VirtualDisk) async throws(Ext4Error) -> Ext4Builder {
        let volume = try await Ext4Volume.open(disk: disk)
        let name = disk.layers[0].path
        let ours = try Ext4Geometry.forWriting(capacityBytes: volume.geometry.blocksCount * 4096,
                                               bytesPerInode: Int(UInt64(volume.geometry.blocksPerGroup) * 4096 / UInt64(max(volume.geometry.inodesPerGroup, 1))))
        let features = (volume.featureCompat & ~Ext4.Compat.hasJournal, volume.featureIncompat, volume.featureReadOnlyCompat)
        let checksummed = volume.featureReadOnlyCompat & Ext4.ReadOnlyCompat.groupDescriptorChecksum != 0
        let expected = (Ext4.Compat.extAttr, Ext4.Incompat.fileType | Ext4.Incompat.extents,
                        Ext4.ReadOnlyCompat.sparseSuper | Ext4.ReadOnlyCompat.largeFile | Ext4.ReadOnlyCompat.dirNlink | Ext4.ReadOnlyCompat.extraIsize
                            | (checksummed ? Ext4.ReadOnlyCompat.groupDescriptorChecksum : 0))
        guard features == expected, volume.geometry == ours else {
            throw .unsupported(disk: name, feature: "layout for changes: only file systems the layer writer made can take a layer on top (features \(features), \(volume.geometry.groupCount) groups)")
        }
        let sb = volume.superblock
        let builder = Ext4Builder(disk: disk, geometry: volume.geometry, now: Ext4Time(seconds: Int64(Date().timeIntervalSince1970)))
        builder.uuid = Array(sb[Ext4.Super.uuid..<Ext4.Super.uuid + 16])
        builder.hashSeed = Array(sb[Ext4.Super.hashSeed..<Ext4.Super.hashSeed + 16])
        builder.createdAt = sb.le32(Ext4.Super.mkfsTime)
        builder.groupChecksums = checksummed
        let geometry = volume.geometry
        for group in 0..<geometry.groupCount {
            let flags = volume.groupFlags[group]
            if flags & Ext4.GroupFlag.blockUninit != 0 {
                // Uninitialised: only the group's own metadata is in use, whatever the block holds.
                guard flags & Ext4.GroupFlag.inodeUninit != 0, group != geometry.groupCount - 1 else {
                    throw .corrupt(disk: name, structure: "group descriptor \(group)", problem: "block bitmap uninitialised in the last group or with inodes in use")
                }
                for block in geometry.metadataBlocks(group) { builder.markBlock(block, used: true) }
            } else {
                let blocks = try await volume.block(geometry.blockBitmaps[group], structure: "block bitmap of group \(group)")
                let start = geometry.groupStart(group)
                for index in 0..<geometry.blocksInGroup(group) where blocks[index / 8] & (1 << UInt8(index % 8)) != 0 {
                    builder.markBlock(start + UInt64(index), used: true)
                }
                for block in geometry.metadataBlocks(group) where !builder.isBlockUsed(block) {
                    throw .corrupt(disk: name, structure: "block bitmap of group \(group)", problem: "metadata block \(block) is marked free")
                }
            }
            // Uninitialised: every inode of the group is free.
            guard flags & Ext4.GroupFlag.inodeUninit == 0 else { continue }
            let inodes = try await volume.block(geometry.inodeBitmaps[group], structure: "inode bitmap of group \(group)")
            let first = UInt32(group) * geometry.inodesPerGroup + 1
            for index in 0..<Int(geometry.inodesPerGroup) where inodes[index / 8] & (1 << UInt8(index % 8)) != 0 {
                builder.markInode(first + UInt32(index), used: true)
            }
        }
        // From here on only the groups whose bitmaps change are written again.
        builder.changedGroups = []
        try await builder.loadJournal(volume)
        var pending: [UInt32] = [Ext4.rootInode]
        var seen: Set<UInt32> = [Ext4.rootInode]
        // Everything reachable from the root, each directory once (a loop is corruption).
        while let number = pending.popLast() {
            let inode = try await volume.inode(number)
            guard builder.isInodeUsed(number) else {
                throw .corrupt(disk: name, structure: "inode bitmap", problem: "inode \(number) is linked but marked free")
            }
            builder.inodes[number] = inode.record
            guard inode.isDirectory else { continue }
            let entries = try await volume.entries(of: inode)
            guard entries.count >= 2, entries[0].name == [UInt8(ascii: ".")], entries[1].name == [UInt8(ascii: "."), UInt8(ascii: ".")] else {
                throw .corrupt(disk: name, structure: "directory inode \(number)", problem: "does not start with \".\" and \"..\"")
            }
            let model = DirectoryModel(parent: entries[1].inode)
            for entry in entries.dropFirst(2) {
                guard model.find(entry.name) == nil else {
                    throw .corrupt(disk: name, structure: "directory inode \(number)", problem: "holds \"\(String(decoding: entry.name, as: UTF8.self))\" twice")
                }
                model.add(entry)
                if seen.insert(entry.inode).inserted {
                    pending.append(entry.inode)
                } else if entry.fileType == Ext4.FileType.directory {
                    throw .corrupt(disk: name, structure: "directory inode \(number)", problem: "links directory inode \(entry.inode) a second time")
                }
            }
            model.dirty = false
            builder.directories[number] = model
        }
        return builder
    }
}
