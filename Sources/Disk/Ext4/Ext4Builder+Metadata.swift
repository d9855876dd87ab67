import Foundation

extension Ext4Builder {
    /// Lays out changed directories, extent trees and xattr blocks, the inode table blocks
    /// holding changed inodes, every bitmap, the descriptors and the superblocks, and writes
    /// each block that differs from the disk: as one transaction through the journal when
    /// the file system has one (`commitThroughJournal`), else in three stages.
    func writeMetadata() async throws(Ext4Error) {
        let blockSize = geometry.blockSize
        var writes: [UInt64: [UInt8]] = [:]
        var stages: [[UInt64: [UInt8]]] = []
        for (number, model) in directories where model.dirty {
            let blocks = Ext4DirectoryBlocks.encode(selfInode: number, parentInode: model.parent, entries: model.entries, blockSize: blockSize)
            var record = inodes[number]!
            if record.dataBlocks != UInt64(blocks.count) {
                freeBlocks(record.extents)
                record.extents = try allocateBlocks(UInt64(blocks.count))
            }
            record.size = UInt64(blocks.count * blockSize)
            inodes[number] = record
            dirtyInodes.insert(number)
            var index = 0
            for extent in record.extents {
                for block in extent.physical..<extent.physical + UInt64(extent.length) {
                    writes[block] = blocks[index]
                    index += 1
                }
            }
            model.dirty = false
        }
        for number in dirtyInodes {
            guard var record = inodes[number] else { continue }
            if record.usesExtents {
                guard let needed = Ext4InodeRecord.treeBlocksNeeded(extents: record.extents.count, blockSize: blockSize) else {
                    throw .full(disk: name, what: "extent tree room for inode \(number)")
                }
                if record.treeBlocks.count != needed {
                    for block in record.treeBlocks { releaseBlock(block) }
                    record.treeBlocks = try (0..<needed).map { _ throws(Ext4Error) in try allocateBlocks(1)[0].physical }
                }
                for leaf in record.extentLeaves(blockSize: blockSize) { writes[leaf.block] = leaf.bytes }
            }
            let inInode = record.xattrs.isEmpty || Ext4InodeRecord.inodeXAttrArea(record.xattrs, space: geometry.inodeSize - 128 - Ext4.extraInodeSize) != nil
            if inInode {
                if record.xattrBlock != 0 { releaseBlock(record.xattrBlock) }
                record.xattrBlock = 0
            } else {
                guard let bytes = Ext4InodeRecord.xattrBlockBytes(record.xattrs, blockSize: blockSize) else {
                    throw .invalidChange(path: "inode \(number)", problem: "its xattrs do not fit one \(blockSize)-byte block")
                }
                if record.xattrBlock == 0 { record.xattrBlock = try allocateBlocks(1)[0].physical }
                writes[record.xattrBlock] = bytes
            }
            inodes[number] = record
        }
        // Unjournaled, the stages go in this order — blocks first, then the inodes pointing at
        // them, then the bitmaps — so that a crash part-way mostly leaves inodes that point at
        // old, intact blocks, or new blocks no inode points at yet.
        stages.append(try await changedBlocks(writes))
        writes = [:]
        stages.append(try await inodeTableWrites())
        applyDeferredFrees()
        var usedDirectories = [Int](repeating: 0, count: geometry.groupCount)
        for number in directories.keys { usedDirectories[Int(number - 1) / Int(geometry.inodesPerGroup)] += 1 }
        var freeBlocksPerGroup: [Int] = [], freeInodesPerGroup: [Int] = []
        var flagsPerGroup: [UInt16] = [], unusedInodesPerGroup: [Int] = []
        for group in 0..<geometry.groupCount {
            let (blockBitmap, freeBlocks) = blockBitmapBlock(group)
            let (inodeBitmap, freeInodes) = inodeBitmapBlock(group)
            let flags = groupFlags(group, freeBlocks: freeBlocks, freeInodes: freeInodes)
            // Groups whose bitmaps did not change since the last finish hold them on the disk
            // already; an uninitialised bitmap is not written at all (readers compute it).
            if changedGroups?.contains(group) ?? true {
                if flags & Ext4.GroupFlag.blockUninit == 0 { writes[geometry.blockBitmaps[group]] = blockBitmap }
                if flags & Ext4.GroupFlag.inodeUninit == 0 { writes[geometry.inodeBitmaps[group]] = inodeBitmap }
            }
            freeBlocksPerGroup.append(freeBlocks)
            freeInodesPerGroup.append(freeInodes)
            flagsPerGroup.append(flags)
            unusedInodesPerGroup.append(groupChecksums ? Self.unusedInodeTail(inodeBitmap, inodesPerGroup: Int(geometry.inodesPerGroup)) : 0)
        }
        if changedGroups != nil { changedGroups = [] }
        var descriptors = [UInt8](repeating: 0, count: geometry.descriptorBlocks * blockSize)
        for group in 0..<geometry.groupCount {
            let at = group * geometry.descriptorSize
            descriptors.put32(UInt32(geometry.blockBitmaps[group]), at + Ext4.Group.blockBitmapLow)
            descriptors.put32(UInt32(geometry.inodeBitmaps[group]), at + Ext4.Group.inodeBitmapLow)
            descriptors.put32(UInt32(geometry.inodeTables[group]), at + Ext4.Group.inodeTableLow)
            descriptors.put16(UInt16(freeBlocksPerGroup[group]), at + Ext4.Group.freeBlocksLow)
            descriptors.put16(UInt16(freeInodesPerGroup[group]), at + Ext4.Group.freeInodesLow)
            descriptors.put16(UInt16(usedDirectories[group]), at + Ext4.Group.usedDirectoriesLow)
            if groupChecksums {
                descriptors.put16(flagsPerGroup[group], at + Ext4.Group.flags)
                descriptors.put16(UInt16(unusedInodesPerGroup[group]), at + Ext4.Group.inodeTableUnusedLow)
                let checksum = CRC16.groupDescriptor(uuid: uuid, group: group, descriptor: descriptors[at..<at + geometry.descriptorSize])
                descriptors.put16(checksum, at + Ext4.Group.checksum)
            }
        }
        let freeBlocks = UInt64(freeBlocksPerGroup.reduce(0, +))
        let freeInodes = UInt32(freeInodesPerGroup.reduce(0, +))
        for group in 0..<geometry.groupCount where geometry.hasSuperblock(group) {
            let start = geometry.groupStart(group)
            var first = [UInt8](repeating: 0, count: blockSize)
            let superblock = superblockBytes(group: group, freeBlocks: freeBlocks, freeInodes: freeInodes)
            let offset = group == 0 ? Ext4.superblockOffset : 0
            first.replaceSubrange(offset..<offset + Ext4.superblockSize, with: superblock)
            writes[start] = first
            for index in 0..<geometry.descriptorBlocks {
                writes[start + 1 + UInt64(index)] = Array(descriptors[(index * blockSize)..<((index + 1) * blockSize)])
            }
        }
        // The superblocks and descriptors this builder last wrote or read are known: only the
        // others are read to compare (a sync would otherwise read every backup group's).
        var current: [UInt64: [UInt8]] = [:]
        var unknown: [UInt64] = []
        for block in writes.keys {
            if let bytes = writtenSuperblocks[block] { current[block] = bytes } else { unknown.append(block) }
        }
        current.merge(try await readBlocks(unknown)) { known, _ in known }
        stages.append(try await changedBlocks(writes, known: current))
        dirtyInodes = []
        let all = stages.reduce(into: [UInt64: [UInt8]]()) { $0.merge($1) { _, new in new } }
        if let journal, journalReady,
           Ext4JournalArea.logBlocks(forWrites: all.count, blockSize: blockSize) < Int(journal.length) {
            try await commitThroughJournal(all, journal)
        } else {
            for stage in stages { try await writeBlocks(stage) }
        }
        for group in 0..<geometry.groupCount where geometry.hasSuperblock(group) {
            let start = geometry.groupStart(group)
            for block in start...(start + UInt64(geometry.descriptorBlocks)) { writtenSuperblocks[block] = writes[block] }
        }
    }

    /// Patches the changed inodes into their table blocks (read from the disk first).
    private func inodeTableWrites() async throws(Ext4Error) -> [UInt64: [UInt8]] {
        var byBlock: [UInt64: [(offset: Int, number: UInt32)]] = [:]
        for number in dirtyInodes {
            let (block, offset) = geometry.inodeLocation(number)
            byBlock[block, default: []].append((offset, number))
        }
        let current = try await readBlocks(Array(byBlock.keys))
        var writes: [UInt64: [UInt8]] = [:]
        for (block, slots) in byBlock {
            var bytes = current[block]!
            for (offset, number) in slots {
                let encoded = inodes[number]?.encoded(inodeSize: geometry.inodeSize, blockSize: geometry.blockSize)
                    ?? [UInt8](repeating: 0, count: geometry.inodeSize)
                bytes.replaceSubrange(offset..<offset + geometry.inodeSize, with: encoded)
            }
            writes[block] = bytes
        }
        return try await changedBlocks(writes, known: current)
    }

    /// bg_flags of `group` with uninit_bg (0 without): its inode table always reads as zeros
    /// beyond the inodes in use (the writer's disks start sparse and freed inodes are zeroed);
    /// its inode bitmap is uninitialised while none of its inodes is in use, and then its
    /// block bitmap too while only its own metadata is (except in the last group).
    func groupFlags(_ group: Int, freeBlocks: Int, freeInodes: Int) -> UInt16 {
        guard groupChecksums else { return 0 }
        var flags = Ext4.GroupFlag.inodeTableZeroed
        guard freeInodes == Int(geometry.inodesPerGroup) else { return flags }
        flags |= Ext4.GroupFlag.inodeUninit
        if group != geometry.groupCount - 1, freeBlocks == geometry.blocksInGroup(group) - geometry.metadataBlocks(group).count {
            flags |= Ext4.GroupFlag.blockUninit
        }
        return flags
    }

    /// bg_itable_unused: the inodes after the group's last one in use, from its inode bitmap
    /// block (`inodesPerGroup` is a multiple of 8: whole bytes).
    static func unusedInodeTail(_ bitmap: [UInt8], inodesPerGroup: Int) -> Int {
        var byte = inodesPerGroup / 8 - 1
        while byte >= 0, bitmap[byte] == 0 { byte -= 1 }
        guard byte >= 0 else { return inodesPerGroup }
        let highest = byte * 8 + (7 - bitmap[byte].leadingZeroBitCount)
        return inodesPerGroup - highest - 1
    }

    private func blockBitmapBlock(_ group: Int) -> ([UInt8], Int) {
        Self.bitmapBlock(blockBitmap, firstBit: Int(geometry.groupStart(group)), bits: geometry.blocksInGroup(group), blockSize: geometry.blockSize)
    }

    private func inodeBitmapBlock(_ group: Int) -> ([UInt8], Int) {
        Self.bitmapBlock(inodeBitmap, firstBit: group * Int(geometry.inodesPerGroup), bits: Int(geometry.inodesPerGroup), blockSize: geometry.blockSize)
    }

    /// One group's bitmap block — bit i of byte i/8 for the group's `bits` entries from
    /// `firstBit` of `words`, the rest of the block set, as ext4 pads it — and its free count.
    /// Whole 64-bit words are copied (ext4's bit order is the words' little-endian order).
    static func bitmapBlock(_ words: [UInt64], firstBit: Int, bits: Int, blockSize: Int) -> ([UInt8], Int) {
        var bytes = [UInt8](repeating: 0xFF, count: blockSize)
        var free = 0
        var index = 0
        while index < bits {
            let bit = firstBit + index
            if bit % 64 == 0, index + 64 <= bits {
                let word = words[bit / 64]
                free += 64 - word.nonzeroBitCount
                for byte in 0..<8 { bytes[index / 8 + byte] = UInt8(truncatingIfNeeded: word >> (8 * byte)) }
                index += 64
            } else {
                if words[bit / 64] & (1 << UInt64(bit % 64)) == 0 {
                    bytes[index / 8] &= ~(1 << UInt8(index % 8))
                    free += 1
                }
                index += 1
            }
        }
        return (bytes, free)
    }

    private func superblockBytes(group: Int, freeBlocks: UInt64, freeInodes: UInt32) -> [UInt8] {
        var sb = [UInt8](repeating: 0, count: Ext4.superblockSize)
        sb.put32(geometry.inodesCount, Ext4.Super.inodesCount)
        sb.put32(UInt32(truncatingIfNeeded: geometry.blocksCount), Ext4.Super.blocksCountLow)
        sb.put32(UInt32(truncatingIfNeeded: freeBlocks), Ext4.Super.freeBlocksCountLow)
        sb.put32(freeInodes, Ext4.Super.freeInodesCount)
        sb.put32(geometry.firstDataBlock, Ext4.Super.firstDataBlock)
        let logBlock = UInt32(geometry.blockSize.trailingZeroBitCount - 10)
        sb.put32(logBlock, Ext4.Super.logBlockSize)
        sb.put32(logBlock, Ext4.Super.logClusterSize)
        sb.put32(geometry.blocksPerGroup, Ext4.Super.blocksPerGroup)
        sb.put32(geometry.blocksPerGroup, Ext4.Super.clustersPerGroup)
        sb.put32(geometry.inodesPerGroup, Ext4.Super.inodesPerGroup)
        sb.put32(createdAt, Ext4.Super.writeTime)
        sb.put16(0xFFFF, Ext4.Super.maxMountCount)
        sb.put16(Ext4.superMagic, Ext4.Super.magic)
        sb.put16(1, Ext4.Super.state)  // cleanly unmounted
        sb.put16(1, Ext4.Super.errors)  // continue
        sb.put32(createdAt, Ext4.Super.lastCheck)
        sb.put32(1, Ext4.Super.revisionLevel)  // dynamic inode sizes
        sb.put32(Ext4.firstNonReservedInode, Ext4.Super.firstInode)
        sb.put16(UInt16(geometry.inodeSize), Ext4.Super.inodeSize)
        sb.put16(UInt16(group), Ext4.Super.blockGroupNumber)
        sb.put32(Ext4.Compat.extAttr | (journal == nil ? 0 : Ext4.Compat.hasJournal), Ext4.Super.featureCompat)
        if journal != nil, let record = inodes[Ext4.journalInode] {
            sb.put32(Ext4.journalInode, Ext4.Super.journalInode)
            sb[Ext4.Super.journalBackupType] = 1
            let encoded = record.encoded(inodeSize: geometry.inodeSize, blockSize: geometry.blockSize)
            let words = Ext4.Super.journalBlocks
            sb.replaceSubrange(words..<words + Ext4.inodeBlockBytes, with: encoded[Ext4.Inode.block..<Ext4.Inode.block + Ext4.inodeBlockBytes])
            sb.put32(UInt32(truncatingIfNeeded: record.size >> 32), words + Ext4.inodeBlockBytes)
            sb.put32(UInt32(truncatingIfNeeded: record.size), words + Ext4.inodeBlockBytes + 4)
        }
        sb.put32(Ext4.Incompat.fileType | Ext4.Incompat.extents, Ext4.Super.featureIncompat)
        sb.put32(Ext4.ReadOnlyCompat.sparseSuper | Ext4.ReadOnlyCompat.largeFile | Ext4.ReadOnlyCompat.dirNlink | Ext4.ReadOnlyCompat.extraIsize
                 | (groupChecksums ? Ext4.ReadOnlyCompat.groupDescriptorChecksum : 0), Ext4.Super.featureReadOnlyCompat)
        sb.replaceSubrange(Ext4.Super.uuid..<Ext4.Super.uuid + 16, with: uuid)
        sb.replaceSubrange(Ext4.Super.hashSeed..<Ext4.Super.hashSeed + 16, with: hashSeed)
        sb[Ext4.Super.defaultHashVersion] = 1  // half_md4
        sb.put32(createdAt, Ext4.Super.mkfsTime)
        sb.put32(UInt32(truncatingIfNeeded: geometry.blocksCount >> 32), Ext4.Super.blocksCountHigh)
        sb.put32(UInt32(truncatingIfNeeded: freeBlocks >> 32), Ext4.Super.freeBlocksCountHigh)
        sb.put16(UInt16(Ext4.extraInodeSize), Ext4.Super.minExtraInodeSize)
        sb.put16(UInt16(Ext4.extraInodeSize), Ext4.Super.wantExtraInodeSize)
        sb.put32(1, Ext4.Super.flags)  // signed directory hash, as on x86
        return sb
    }

    /// The disk's current contents of `blocks`, read in runs of adjacent blocks.
    func readBlocks(_ blocks: [UInt64]) async throws(Ext4Error) -> [UInt64: [UInt8]] {
        let blockSize = geometry.blockSize
        var result: [UInt64: [UInt8]] = [:]
        for run in Self.runs(blocks.sorted()) {
            let bytes: [UInt8]
            do { bytes = try await disk.read(count: run.count * blockSize, at: run.lowerBound * UInt64(blockSize)) } catch { throw .disk(error) }
            for (index, block) in run.enumerated() {
                result[block] = Array(bytes[(index * blockSize)..<((index + 1) * blockSize)])
            }
        }
        return result
    }

    /// Adjacent blocks grouped, at most 64 (256 KiB) a run.
    static func runs(_ sorted: [UInt64]) -> [Range<UInt64>] {
        var runs: [Range<UInt64>] = []
        for block in sorted {
            if let last = runs.last, last.upperBound == block, last.count < 64 {
                runs[runs.count - 1] = last.lowerBound..<block + 1
            } else {
                runs.append(block..<block + 1)
            }
        }
        return runs
    }

    /// The blocks of `writes` whose bytes differ from the disk's (read unless `known`).
    func changedBlocks(_ writes: [UInt64: [UInt8]], known: [UInt64: [UInt8]]? = nil) async throws(Ext4Error) -> [UInt64: [UInt8]] {
        let current: [UInt64: [UInt8]]
        if let known { current = known } else { current = try await readBlocks(Array(writes.keys)) }
        return writes.filter { current[$0.key] != $0.value }
    }

    /// Writes `writes` in runs of adjacent blocks.
    func writeBlocks(_ writes: [UInt64: [UInt8]]) async throws(Ext4Error) {
        let blockSize = geometry.blockSize
        for run in Self.runs(writes.keys.sorted()) {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(run.count * blockSize)
            for block in run { bytes += writes[block]! }
            do { try await disk.write(bytes, at: run.lowerBound * UInt64(blockSize)) } catch { throw .disk(error) }
        }
    }
}
