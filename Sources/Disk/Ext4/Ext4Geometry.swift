/// Where everything of one ext4 file system lies: block size, groups, and each group's
/// superblock copy, descriptor table, bitmaps and inode table. The writer lays out
/// 4 KiB blocks, 32,768 blocks (128 MiB) per group, no flex_bg and sparse_super, so each
/// group holds its own bitmaps and inode table after its superblock copy, if it has one.
struct Ext4Geometry: Sendable, Equatable {
    let blockSize: Int
    let blocksCount: UInt64
    let blocksPerGroup: UInt32
    let inodesPerGroup: UInt32
    let inodeSize: Int
    let groupCount: Int
    let descriptorSize: Int
    let firstDataBlock: UInt32
    let sparseSuper: Bool
    /// Per group: the block bitmap, inode bitmap and inode table's first block.
    let blockBitmaps: [UInt64]
    let inodeBitmaps: [UInt64]
    let inodeTables: [UInt64]

    var inodesCount: UInt32 { inodesPerGroup * UInt32(groupCount) }
    var inodeTableBlocks: Int { (Int(inodesPerGroup) * inodeSize + blockSize - 1) / blockSize }
    var descriptorBlocks: Int { (groupCount * descriptorSize + blockSize - 1) / blockSize }
    var inodesPerBlock: Int { blockSize / inodeSize }

    func groupStart(_ group: Int) -> UInt64 { UInt64(firstDataBlock) + UInt64(group) * UInt64(blocksPerGroup) }
    func blocksInGroup(_ group: Int) -> Int {
        Int(min(UInt64(blocksPerGroup), blocksCount - groupStart(group)))
    }

    /// Whether `group` holds a copy of the superblock and descriptors (all groups without
    /// sparse_super; with it 0, 1 and powers of 3, 5 and 7).
    func hasSuperblock(_ group: Int) -> Bool {
        if !sparseSuper || group <= 1 { return true }
        for base in [3, 5, 7] {
            var power = base
            while power < group { power *= base }
            if power == group { return true }
        }
        return false
    }

    /// The layout the writer makes for a disk of `capacityBytes`, with about one inode per
    /// `bytesPerInode` bytes.
    static func forWriting(capacityBytes: UInt64, bytesPerInode: Int = 16384) throws(Ext4Error) -> Ext4Geometry {
        let blockSize = 4096
        let blocksPerGroup: UInt32 = 32768
        var blocks = capacityBytes / UInt64(blockSize)
        guard blocks >= 1024 else {
            throw .invalidChange(path: "capacity", problem: "\(capacityBytes) bytes is too small for an ext4 file system (4 MiB at least)")
        }
        guard blocks <= UInt64(UInt32.max) else {
            throw .invalidChange(path: "capacity", problem: "\(capacityBytes) bytes needs 64-bit block numbers, which the writer does not lay out")
        }
        // Inodes per group: a multiple of the inodes in one block, at most 8 per block of the group.
        let perGroup = UInt64(blocksPerGroup) * UInt64(blockSize) / UInt64(max(bytesPerInode, 4096))
        let inodesPerGroup = UInt32(max(16, min(perGroup, UInt64(blocksPerGroup))) / 16 * 16)
        var groups = Int((blocks + UInt64(blocksPerGroup) - 1) / UInt64(blocksPerGroup))
        let tableBlocks = Int(inodesPerGroup) * Ext4.inodeSize / blockSize
        // A last group too small for its own metadata and some data is dropped.
        let lastBlocks = Int(blocks - UInt64(groups - 1) * UInt64(blocksPerGroup))
        let descriptorBlocks = (groups * Ext4.Group.size + blockSize - 1) / blockSize
        if groups > 1, lastBlocks < 1 + descriptorBlocks + 2 + tableBlocks + 64 {
            groups -= 1
            blocks = UInt64(groups) * UInt64(blocksPerGroup)
        }
        var blockBitmaps: [UInt64] = [], inodeBitmaps: [UInt64] = [], inodeTables: [UInt64] = []
        let partial = Ext4Geometry(blockSize: blockSize, blocksCount: blocks, blocksPerGroup: blocksPerGroup, inodesPerGroup: inodesPerGroup,
                                   inodeSize: Ext4.inodeSize, groupCount: groups, descriptorSize: Ext4.Group.size, firstDataBlock: 0,
                                   sparseSuper: true, blockBitmaps: [], inodeBitmaps: [], inodeTables: [])
        for group in 0..<groups {
            var next = partial.groupStart(group)
            if partial.hasSuperblock(group) { next += 1 + UInt64(partial.descriptorBlocks) }
            blockBitmaps.append(next)
            inodeBitmaps.append(next + 1)
            inodeTables.append(next + 2)
            guard next + 2 + UInt64(tableBlocks) < partial.groupStart(group) + UInt64(partial.blocksInGroup(group)) else {
                throw .invalidChange(path: "capacity", problem: "group \(group) is too small for its metadata")
            }
        }
        return Ext4Geometry(blockSize: blockSize, blocksCount: blocks, blocksPerGroup: blocksPerGroup, inodesPerGroup: inodesPerGroup,
                            inodeSize: Ext4.inodeSize, groupCount: groups, descriptorSize: Ext4.Group.size, firstDataBlock: 0,
                            sparseSuper: true, blockBitmaps: blockBitmaps, inodeBitmaps: inodeBitmaps, inodeTables: inodeTables)
    }

    /// Blocks of `group` that hold metadata (superblock copy, descriptors, bitmaps, inode
    /// table), as a range from the group's first block: the writer's layout puts them all first.
    func metadataBlocks(_ group: Int) -> Range<UInt64> {
        groupStart(group)..<(inodeTables[group] + UInt64(inodeTableBlocks))
    }

    /// The block and byte offset of inode `number` (1-based) in its group's table.
    func inodeLocation(_ number: UInt32) -> (block: UInt64, offset: Int) {
        let index = Int(number - 1)
        let group = index / Int(inodesPerGroup)
        let within = index % Int(inodesPerGroup)
        return (inodeTables[group] + UInt64(within / inodesPerBlock), (within % inodesPerBlock) * inodeSize)
    }
}
