import Foundation
import Synchronization

/// An ext4 file system read from a virtual disk (a VMDK chain) through the I/O engine:
/// superblock, group descriptors, inodes, extent trees, directories (hashed ones read
/// linearly), symlinks, xattrs and file contents. Everything read is checked against the
/// superblock's geometry before use, so a corrupt or hostile image gives an `Ext4Error`
/// naming the structure, never a crash or a read outside the file system. Metadata blocks
/// and decoded inodes are cached.
public final class Ext4Volume: Sendable {
    public let disk: VirtualDisk
    let name: String
    let geometry: Ext4Geometry
    let featureCompat: UInt32
    let featureIncompat: UInt32
    let featureReadOnlyCompat: UInt32
    let superblock: [UInt8]
    /// Each group's bg_flags (`Ext4.GroupFlag`) as the disk's descriptors hold them; all 0
    /// without uninit_bg. For the writer's `open(on:)` (on a read-only disk whose journal
    /// needs recovery they may predate the replayed descriptors; reading needs none of them).
    let groupFlags: [UInt16]
    private let blockCache = Mutex<[UInt64: [UInt8]]>([:])
    private let inodeCache = Mutex<[UInt32: Ext4InodeRecord]>([:])
    static let cachedBlocks = 8192
    static let cachedInodes = 65536
    /// More extents than this in one file is refused as hostile (a tree that would fill memory).
    static let maximumExtents = 1 << 20
    static let maximumTreeDepth = 5

    var hasFileType: Bool { featureIncompat & Ext4.Incompat.fileType != 0 }
    public var blockSize: Int { geometry.blockSize }

    /// Blocks a journal that needs recovery holds, read in their place (a read-only open of
    /// a disk whose writer died mid-sync; a writable open replays them onto the disk).
    let recovered: [UInt64: [UInt8]]

    private init(disk: VirtualDisk, geometry: Ext4Geometry, superblock: [UInt8], groupFlags: [UInt16], recovered: [UInt64: [UInt8]] = [:]) {
        self.disk = disk
        self.groupFlags = groupFlags
        name = disk.layers[0].path
        self.geometry = geometry
        self.recovered = recovered
        var superblock = superblock
        if let first = recovered[geometry.groupStart(0)] {
            superblock = Array(first[Ext4.superblockOffset..<Ext4.superblockOffset + Ext4.superblockSize])
        }
        self.superblock = superblock
        featureCompat = superblock.le32(Ext4.Super.featureCompat)
        featureIncompat = superblock.le32(Ext4.Super.featureIncompat)
        featureReadOnlyCompat = superblock.le32(Ext4.Super.featureReadOnlyCompat)
    }

    /// Opens the file system on `disk`, checking its superblock and group descriptors.
    public static func open(disk: VirtualDisk) async throws(Ext4Error) -> Ext4Volume {
        let name = disk.layers[0].path
        func corrupt(_ field: String, _ problem: String) -> Ext4Error { .corrupt(disk: name, structure: "superblock \(field)", problem: problem) }
        guard disk.capacityBytes >= 2048 else { throw corrupt("size", "the disk's \(disk.capacityBytes) bytes cannot hold a superblock") }
        let sb: [UInt8]
        do { sb = try await disk.read(count: Ext4.superblockSize, at: UInt64(Ext4.superblockOffset)) } catch { throw .disk(error) }
        guard sb.le16(Ext4.Super.magic) == Ext4.superMagic else {
            throw corrupt("s_magic", String(format: "0x%04x is not ext2/3/4's 0xef53: the disk holds no ext4 file system", sb.le16(Ext4.Super.magic)))
        }
        let logBlock = sb.le32(Ext4.Super.logBlockSize)
        guard logBlock <= 6 else { throw corrupt("s_log_block_size", "\(logBlock) (blocks of 1 KiB to 64 KiB are allowed)") }
        let blockSize = 1024 << Int(logBlock)
        let incompat = sb.le32(Ext4.Super.featureIncompat)
        let unknown = incompat & ~(Ext4.Incompat.understood)
        guard unknown == 0 else {
            let names: [(UInt32, String)] = [(Ext4.Incompat.compression, "compression"), (Ext4.Incompat.journalDevice, "journal_dev"), (Ext4.Incompat.metaBlockGroup, "meta_bg"),
                                             (Ext4.Incompat.eaInode, "ea_inode"), (Ext4.Incompat.dirData, "dirdata"), (Ext4.Incompat.inlineData, "inline_data"),
                                             (Ext4.Incompat.encrypt, "encrypt"), (Ext4.Incompat.caseFold, "casefold")]
            let named = names.filter { unknown & $0.0 != 0 }.map(\.1)
            throw .unsupported(disk: name, feature: "incompatible features \(named.isEmpty ? String(format: "0x%x", unknown) : named.joined(separator: ", "))")
        }
        let revision = sb.le32(Ext4.Super.revisionLevel)
        let inodeSize = revision == 0 ? 128 : Int(sb.le16(Ext4.Super.inodeSize))
        guard inodeSize >= 128, inodeSize <= blockSize, inodeSize & (inodeSize - 1) == 0 else {
            throw corrupt("s_inode_size", "\(inodeSize) is not a power of two between 128 and the block size \(blockSize)")
        }
        let bit64 = incompat & Ext4.Incompat.bit64 != 0
        var blocksCount = UInt64(sb.le32(Ext4.Super.blocksCountLow))
        if bit64 { blocksCount |= UInt64(sb.le32(Ext4.Super.blocksCountHigh)) << 32 }
        guard blocksCount > 0, blocksCount <= disk.capacityBytes / UInt64(blockSize) else {
            throw corrupt("s_blocks_count", "\(blocksCount) blocks of \(blockSize) bytes do not fit the disk's \(disk.capacityBytes) bytes")
        }
        let firstDataBlock = sb.le32(Ext4.Super.firstDataBlock)
        guard UInt64(firstDataBlock) < blocksCount, firstDataBlock == (blockSize == 1024 ? 1 : 0) else {
            throw corrupt("s_first_data_block", "\(firstDataBlock) with \(blockSize)-byte blocks")
        }
        let blocksPerGroup = sb.le32(Ext4.Super.blocksPerGroup)
        let inodesPerGroup = sb.le32(Ext4.Super.inodesPerGroup)
        guard blocksPerGroup > 0, blocksPerGroup <= UInt32(blockSize * 8) else { throw corrupt("s_blocks_per_group", "\(blocksPerGroup) (1 to \(blockSize * 8))") }
        guard inodesPerGroup > 0, inodesPerGroup <= UInt32(blockSize * 8), Int(inodesPerGroup) % (blockSize / inodeSize) == 0 else {
            throw corrupt("s_inodes_per_group", "\(inodesPerGroup) (1 to \(blockSize * 8), whole inode table blocks)")
        }
        let groups = Int((blocksCount - UInt64(firstDataBlock) + UInt64(blocksPerGroup) - 1) / UInt64(blocksPerGroup))
        guard UInt64(groups) * UInt64(inodesPerGroup) == UInt64(sb.le32(Ext4.Super.inodesCount)) else {
            throw corrupt("s_inodes_count", "\(sb.le32(Ext4.Super.inodesCount)) is not \(groups) groups of \(inodesPerGroup) inodes")
        }
        var descriptorSize = Ext4.Group.size
        if bit64 {
            descriptorSize = Int(sb.le16(Ext4.Super.descriptorSize))
            guard descriptorSize >= 32, descriptorSize <= 1024, descriptorSize & (descriptorSize - 1) == 0 else {
                throw corrupt("s_desc_size", "\(descriptorSize) is not a power of two from 32 to 1024")
            }
        }
        let descriptorBlocks = (groups * descriptorSize + blockSize - 1) / blockSize
        guard UInt64(firstDataBlock) + 1 + UInt64(descriptorBlocks) <= blocksCount else {
            throw corrupt("group count", "\(groups) group descriptors do not fit the file system")
        }
        let table: [UInt8]
        do {
            table = try await disk.read(count: descriptorBlocks * blockSize, at: (UInt64(firstDataBlock) + 1) * UInt64(blockSize))
        } catch { throw .disk(error) }
        let tableBlocks = UInt64((Int(inodesPerGroup) * inodeSize + blockSize - 1) / blockSize)
        var blockBitmaps: [UInt64] = [], inodeBitmaps: [UInt64] = [], inodeTables: [UInt64] = []
        var groupFlags: [UInt16] = []
        let checksummed = sb.le32(Ext4.Super.featureReadOnlyCompat) & Ext4.ReadOnlyCompat.groupDescriptorChecksum != 0
        let uuid = Array(sb[Ext4.Super.uuid..<Ext4.Super.uuid + 16])
        for group in 0..<groups {
            let at = group * descriptorSize
            if checksummed {
                let expected = CRC16.groupDescriptor(uuid: uuid, group: group, descriptor: table[at..<at + descriptorSize])
                guard table.le16(at + Ext4.Group.checksum) == expected else {
                    throw .corrupt(disk: name, structure: "group descriptor \(group)",
                                   problem: String(format: "checksum 0x%04x, not the 0x%04x its contents give", table.le16(at + Ext4.Group.checksum), expected))
                }
                groupFlags.append(table.le16(at + Ext4.Group.flags))
            } else {
                groupFlags.append(0)
            }
            func field(_ low: Int, _ high: Int) -> UInt64 {
                var value = UInt64(table.le32(at + low))
                if descriptorSize >= 64 { value |= UInt64(table.le32(at + high)) << 32 }
                return value
            }
            let blockBitmap = field(Ext4.Group.blockBitmapLow, Ext4.Group.blockBitmapHigh)
            let inodeBitmap = field(Ext4.Group.inodeBitmapLow, Ext4.Group.inodeBitmapHigh)
            let inodeTable = field(Ext4.Group.inodeTableLow, Ext4.Group.inodeTableHigh)
            guard blockBitmap < blocksCount, inodeBitmap < blocksCount, inodeTable < blocksCount, inodeTable + tableBlocks <= blocksCount,
                  blockBitmap > UInt64(firstDataBlock), inodeBitmap > UInt64(firstDataBlock), inodeTable > UInt64(firstDataBlock) else {
                throw .corrupt(disk: name, structure: "group descriptor \(group)", problem: "bitmap at \(blockBitmap)/\(inodeBitmap) or inode table at \(inodeTable) lies outside the \(blocksCount) blocks")
            }
            blockBitmaps.append(blockBitmap)
            inodeBitmaps.append(inodeBitmap)
            inodeTables.append(inodeTable)
        }
        let geometry = Ext4Geometry(blockSize: blockSize, blocksCount: blocksCount, blocksPerGroup: blocksPerGroup, inodesPerGroup: inodesPerGroup,
                                    inodeSize: inodeSize, groupCount: groups, descriptorSize: descriptorSize, firstDataBlock: firstDataBlock,
                                    sparseSuper: sb.le32(Ext4.Super.featureReadOnlyCompat) & Ext4.ReadOnlyCompat.sparseSuper != 0,
                                    blockBitmaps: blockBitmaps, inodeBitmaps: inodeBitmaps, inodeTables: inodeTables)
        let volume = Ext4Volume(disk: disk, geometry: geometry, superblock: sb, groupFlags: groupFlags)
        guard volume.featureCompat & Ext4.Compat.hasJournal != 0 else { return volume }
        return try await volume.recoveringJournal()
    }

    /// The file system as its journal's committed transactions leave it: replayed onto a
    /// writable disk (then the journal emptied and needs_recovery cleared, and the disk
    /// opened afresh), or read in place of the disk's blocks on a read-only one. The journal
    /// is looked at whether or not needs_recovery is set: a writer killed as it cleared the
    /// flag may leave it clear over a log still holding its (already written) transaction.
    private func recoveringJournal() async throws(Ext4Error) -> Ext4Volume {
        let record = try await record(Ext4.journalInode)
        guard record.isRegular, record.extents.count == 1, record.extents[0].logical == 0, record.extents[0].length >= JBD2.minimumBlocks else {
            throw .unsupported(disk: name, feature: "journal layout: only one contiguous journal of at least \(JBD2.minimumBlocks) blocks is replayed")
        }
        let start = record.extents[0].physical, length = record.extents[0].length
        guard start + UInt64(length) <= geometry.blocksCount else {
            throw .corrupt(disk: name, structure: "journal inode", problem: "blocks \(start)..<\(start + UInt64(length)) run past the file system")
        }
        let journalSuperblock = try await block(start, structure: "journal superblock")
        let needsRecovery = featureIncompat & Ext4.Incompat.recover != 0
        guard needsRecovery || journalSuperblock.be32(JBD2.Super.start) != 0 else { return self }
        let replay = try await Ext4JournalReplay.read(superblock: journalSuperblock, length: length, blocksCount: geometry.blocksCount, disk: name) {
            (index: UInt32) async throws(Ext4Error) -> [UInt8] in
            let at = (start + UInt64(index)) * UInt64(geometry.blockSize)
            do throws(DiskError) { return try await disk.read(count: geometry.blockSize, at: at) } catch { throw .disk(error) }
        }
        guard disk.layers[0].writable else {
            return Ext4Volume(disk: disk, geometry: geometry, superblock: superblock, groupFlags: groupFlags, recovered: replay.writes)
        }
        let blockSize = UInt64(geometry.blockSize)
        do throws(DiskError) {
            for (target, bytes) in replay.writes.sorted(by: { $0.key < $1.key }) { try await disk.write(bytes, at: target * blockSize) }
            try await disk.flush()
            let emptied = Ext4JournalArea(start: start, length: length, sequence: replay.nextSequence)
            try await disk.write(emptied.superblock(blockSize: geometry.blockSize, logStart: 0, uuid: Array(journalSuperblock[JBD2.Super.uuid..<JBD2.Super.uuid + 16])),
                                 at: start * blockSize)
            try await disk.flush()
            let primary = geometry.groupStart(0) * blockSize
            var first = try await disk.read(count: geometry.blockSize, at: primary)
            let at = Ext4.superblockOffset + Ext4.Super.featureIncompat
            first.put32(first.le32(at) & ~Ext4.Incompat.recover, at)
            try await disk.write(first, at: primary)
            try await disk.flush()
        } catch { throw .disk(error) }
        return try await Self.open(disk: disk)
    }

    // MARK: - Blocks

    /// Block `number` of the file system (checked against its size), through the cache.
    func block(_ number: UInt64, structure: @autoclosure () -> String) async throws(Ext4Error) -> [UInt8] {
        guard number < geometry.blocksCount else {
            throw .corrupt(disk: name, structure: structure(), problem: "points at block \(number), past the file system's \(geometry.blocksCount)")
        }
        if let cached = blockCache.withLock({ $0[number] }) { return cached }
        if let replayed = recovered[number] { return replayed }
        let bytes: [UInt8]
        do { bytes = try await disk.read(count: geometry.blockSize, at: number * UInt64(geometry.blockSize)) } catch { throw .disk(error) }
        blockCache.withLock { cache in
            if cache.count >= Self.cachedBlocks { cache.removeAll(keepingCapacity: true) }
            cache[number] = bytes
        }
        return bytes
    }

    /// Reads `count` blocks from `start` into `buffer` (uncached: file contents).
    nonisolated(nonsending) func readBlocks(_ start: UInt64, count: Int, into buffer: UnsafeMutableRawBufferPointer, structure: @autoclosure () -> String) async throws(Ext4Error) {
        guard start < geometry.blocksCount, UInt64(count) <= geometry.blocksCount - start else {
            throw .corrupt(disk: name, structure: structure(), problem: "blocks \(start)..<\(start + UInt64(count)) run past the file system's \(geometry.blocksCount)")
        }
        do { try await disk.read(into: buffer, at: start * UInt64(geometry.blockSize)) } catch { throw .disk(error) }
        guard !recovered.isEmpty else { return }
        let blockSize = geometry.blockSize
        for block in start..<start + UInt64(count) {
            guard let replayed = recovered[block] else { continue }
            let at = Int(block - start) * blockSize
            // unsafe: the block lies inside the buffer (count blocks from start).
            UnsafeMutableRawBufferPointer(rebasing: buffer[at..<at + blockSize]).copyBytes(from: replayed)
        }
    }

    // MARK: - Inodes

    /// Inode `number`, decoded and checked (its extent tree read whole).
    public func inode(_ number: UInt32) async throws(Ext4Error) -> Ext4Inode {
        Ext4Inode(number: number, record: try await record(number))
    }

    func record(_ number: UInt32) async throws(Ext4Error) -> Ext4InodeRecord {
        guard number >= 1, number <= geometry.inodesCount else {
            throw .corrupt(disk: name, structure: "inode reference", problem: "inode \(number) is outside 1...\(geometry.inodesCount)")
        }
        if let cached = inodeCache.withLock({ $0[number] }) { return cached }
        let (blockNumber, offset) = geometry.inodeLocation(number)
        let bytes = Array(try await block(blockNumber, structure: "inode table of inode \(number)")[offset..<offset + geometry.inodeSize])
        let record = try await decode(bytes, number: number)
        inodeCache.withLock { cache in
            if cache.count >= Self.cachedInodes { cache.removeAll(keepingCapacity: true) }
            cache[number] = record
        }
        return record
    }

    private func decode(_ bytes: [UInt8], number: UInt32) async throws(Ext4Error) -> Ext4InodeRecord {
        func corrupt(_ problem: String) -> Ext4Error { .corrupt(disk: name, structure: "inode \(number)", problem: problem) }
        var record = Ext4InodeRecord()
        record.mode = bytes.le16(Ext4.Inode.mode)
        record.uid = UInt32(bytes.le16(Ext4.Inode.uidLow)) | UInt32(bytes.le16(Ext4.Inode.uidHigh)) << 16
        record.gid = UInt32(bytes.le16(Ext4.Inode.gidLow)) | UInt32(bytes.le16(Ext4.Inode.gidHigh)) << 16
        record.size = UInt64(bytes.le32(Ext4.Inode.sizeLow)) | UInt64(bytes.le32(Ext4.Inode.sizeHigh)) << 32
        record.links = bytes.le16(Ext4.Inode.linksCount)
        record.flags = bytes.le32(Ext4.Inode.flags)
        record.generation = bytes.le32(Ext4.Inode.generation)
        record.sectors = UInt64(bytes.le32(Ext4.Inode.blocksLow)) | UInt64(bytes.le16(Ext4.Inode.blocksHigh)) << 32
        record.xattrBlock = UInt64(bytes.le32(Ext4.Inode.fileACLLow)) | UInt64(bytes.le16(Ext4.Inode.fileACLHigh)) << 32
        var extra = 0
        if geometry.inodeSize > 128 {
            extra = Int(bytes.le16(Ext4.Inode.extraSize))
            guard extra % 4 == 0, 128 + extra <= geometry.inodeSize else { throw corrupt("i_extra_isize \(extra) does not fit the \(geometry.inodeSize)-byte inode") }
        }
        func time(_ base: Int, _ extraField: Int) -> Ext4Time {
            Ext4Time(base: bytes.le32(base), extra: extraField + 4 <= 128 + extra ? bytes.le32(extraField) : nil)
        }
        record.accessTime = time(Ext4.Inode.accessTime, Ext4.Inode.accessTimeExtra)
        record.changeTime = time(Ext4.Inode.changeTime, Ext4.Inode.changeTimeExtra)
        record.modificationTime = time(Ext4.Inode.modificationTime, Ext4.Inode.modificationTimeExtra)
        if Ext4.Inode.creationTimeExtra + 4 <= 128 + extra { record.creationTime = time(Ext4.Inode.creationTime, Ext4.Inode.creationTimeExtra) }
        let iblock = Array(bytes[Ext4.Inode.block..<Ext4.Inode.block + Ext4.inodeBlockBytes])
        guard record.flags & Ext4.InodeFlag.inlineData == 0 else { throw .unsupported(disk: name, feature: "inline data (inode \(number))") }
        if record.usesExtents {
            var visited = 0
            try await walkExtents(iblock[...], depth: nil, number: number, into: &record, visited: &visited)
            var previousEnd: UInt64 = 0
            for extent in record.extents {
                guard UInt64(extent.logical) >= previousEnd else { throw corrupt("extents overlap or are out of order at logical block \(extent.logical)") }
                guard extent.physical < geometry.blocksCount, UInt64(extent.length) <= geometry.blocksCount - extent.physical else {
                    throw corrupt("an extent at block \(extent.physical) of \(extent.length) blocks runs past the file system")
                }
                previousEnd = UInt64(extent.logical) + UInt64(extent.length)
            }
        } else {
            record.inlineBlock = iblock
            if record.type == Ext4.Mode.regular || record.type == Ext4.Mode.directory {
                throw .unsupported(disk: name, feature: "block-mapped (ext2/ext3) files: inode \(number) has no extents")
            }
        }
        if 128 + extra + 4 <= geometry.inodeSize, bytes.le32(128 + extra) == Ext4.xattrMagic {
            let area = Array(bytes[(128 + extra + 4)...])
            record.xattrs += try parseXAttrs(area, entriesAt: 0, valueBase: 0, structure: "in-inode xattrs of inode \(number)")
        }
        if record.xattrBlock != 0 {
            let block = try await block(record.xattrBlock, structure: "xattr block of inode \(number)")
            guard block.le32(0) == Ext4.xattrMagic else { throw corrupt("its xattr block \(record.xattrBlock) lacks the magic number") }
            record.xattrs += try parseXAttrs(block, entriesAt: 32, valueBase: 0, structure: "xattr block of inode \(number)")
        }
        return record
    }

    /// Collects the leaves of an extent tree node, checking its header, depth and every pointer.
    private func walkExtents(_ node: ArraySlice<UInt8>, depth expected: Int?, number: UInt32, into record: inout Ext4InodeRecord, visited: inout Int) async throws(Ext4Error) {
        func corrupt(_ problem: String) -> Ext4Error { .corrupt(disk: name, structure: "extent tree of inode \(number)", problem: problem) }
        guard node.count >= 12, node.le16(0) == Ext4.extentMagic else { throw corrupt("a node lacks the magic number 0xf30a") }
        let entries = Int(node.le16(2))
        let maximum = Int(node.le16(4))
        let depth = Int(node.le16(6))
        guard entries <= maximum, 12 + maximum * 12 <= node.count else { throw corrupt("a node claims \(entries) of \(maximum) entries in \(node.count) bytes") }
        guard depth <= Self.maximumTreeDepth, expected == nil || expected == depth else { throw corrupt("depth \(depth) where \(expected.map(String.init) ?? "at most \(Self.maximumTreeDepth)") was expected") }
        for index in 0..<entries {
            let at = 12 + index * 12
            if depth == 0 {
                var length = UInt32(node.le16(at + 4))
                let uninitialized = length > UInt32(Ext4.maximumExtentLength)
                if uninitialized { length -= UInt32(Ext4.maximumExtentLength) }
                let physical = UInt64(node.le16(at + 6)) << 32 | UInt64(node.le32(at + 8))
                guard record.extents.count < Self.maximumExtents else { throw corrupt("more than \(Self.maximumExtents) extents") }
                // Unwritten extents read as zeros, like holes: they are left out.
                if !uninitialized, length > 0 {
                    record.extents.append(Ext4Extent(logical: node.le32(at), length: length, physical: physical))
                }
            } else {
                let child = UInt64(node.le16(at + 8)) << 32 | UInt64(node.le32(at + 4))
                visited += 1
                guard visited <= Self.maximumExtents / 64 else { throw corrupt("more than \(Self.maximumExtents / 64) tree blocks") }
                let bytes = try await block(child, structure: "extent tree of inode \(number)")
                record.treeBlocks.append(child)
                try await walkExtents(bytes[...], depth: depth - 1, number: number, into: &record, visited: &visited)
            }
        }
    }

    private func parseXAttrs(_ area: [UInt8], entriesAt: Int, valueBase: Int, structure: String) throws(Ext4Error) -> [Ext4XAttr] {
        var result: [Ext4XAttr] = []
        var at = entriesAt
        while at + 4 <= area.count, area.le32(at) != 0 {
            guard at + 16 <= area.count else { throw .corrupt(disk: name, structure: structure, problem: "an entry header at byte \(at) runs past the area") }
            let nameLength = Int(area[at])
            let index = area[at + 1]
            let valueOffset = Int(area.le16(at + 2))
            let valueInode = area.le32(at + 4)
            let valueSize = Int(area.le32(at + 8))
            guard at + 16 + nameLength <= area.count else { throw .corrupt(disk: name, structure: structure, problem: "a name at byte \(at) runs past the area") }
            guard valueInode == 0 else { throw .unsupported(disk: name, feature: "xattr values in inodes (\(structure))") }
            guard valueSize <= area.count, valueBase + valueOffset + valueSize <= area.count else {
                throw .corrupt(disk: name, structure: structure, problem: "a value of \(valueSize) bytes at \(valueOffset) runs past the area")
            }
            let start = valueBase + valueOffset
            result.append(Ext4XAttr(index: index, name: Array(area[(at + 16)..<(at + 16 + nameLength)]), value: Array(area[start..<start + valueSize])))
            at += (nameLength + 16 + 3) & ~3
        }
        return result
    }

    // MARK: - Contents

    /// Reads up to `buffer.count` bytes of the file at `offset`; returns the count (0 at or past its end).
    /// Holes read as zeros.
    nonisolated(nonsending) public func read(_ inode: Ext4Inode, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) async throws(Ext4Error) -> Int {
        let record = inode.record
        guard offset < record.size, !buffer.isEmpty else { return 0 }
        let count = Int(min(UInt64(buffer.count), record.size - offset))
        let blockSize = UInt64(geometry.blockSize)
        var done = 0
        while done < count {
            let position = offset + UInt64(done)
            let logical = position / blockSize
            let within = Int(position % blockSize)
            let extent = Self.extent(containing: logical, in: record.extents)
            if let extent {
                let blockInExtent = logical - UInt64(extent.logical)
                let blocksLeft = UInt64(extent.length) - blockInExtent
                let physical = extent.physical + blockInExtent
                let wanted = min(count - done, Int(blocksLeft * blockSize) - within)
                // unsafe (below): done < count <= buffer.count, and every copy is bounded by count - done.
                if within == 0, wanted >= Int(blockSize), UInt(bitPattern: buffer.baseAddress! + done) % 512 == 0 {
                    let whole = wanted / Int(blockSize)
                    // unsafe: [done, done + whole blocks) lies inside the caller's buffer.
                    try await readBlocks(physical, count: whole, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + whole * Int(blockSize)]),
                                         structure: "data of inode \(inode.number)")
                    done += whole * Int(blockSize)
                } else {
                    let runBlocks = Int(min(blocksLeft, (UInt64(within + wanted) + blockSize - 1) / blockSize))
                    let bounce = disk.engine.makeBuffer(count: runBlocks * Int(blockSize))
                    try await readBlocks(physical, count: runBlocks, into: bounce.bytes, structure: "data of inode \(inode.number)")
                    let piece = min(wanted, runBlocks * Int(blockSize) - within)
                    (buffer.baseAddress! + done).copyMemory(from: bounce.base + within, byteCount: piece)
                    done += piece
                }
            } else {
                let next = Self.nextExtentStart(after: logical, in: record.extents).map { UInt64($0) * blockSize } ?? record.size
                let zeros = Int(min(UInt64(count - done), next - position))
                (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: zeros)
                done += zeros
            }
        }
        return count
    }

    /// Up to `count` bytes of the file at `offset`, into a new array.
    public func read(_ inode: Ext4Inode, at offset: UInt64, count: Int) async throws(Ext4Error) -> [UInt8] {
        let buffer = disk.engine.makeBuffer(count: max(count, 1))
        // unsafe: the buffer holds max(count, 1) bytes.
        let got = try await read(inode, at: offset, into: UnsafeMutableRawBufferPointer(start: buffer.base, count: count))
        return Array(UnsafeRawBufferPointer(start: buffer.base, count: got))
    }

    static func extent(containing logical: UInt64, in extents: [Ext4Extent]) -> Ext4Extent? {
        var low = 0, high = extents.count
        while low < high {
            let middle = (low + high) / 2
            if UInt64(extents[middle].logical) + UInt64(extents[middle].length) <= logical { low = middle + 1 } else { high = middle }
        }
        guard low < extents.count, UInt64(extents[low].logical) <= logical else { return nil }
        return extents[low]
    }

    static func nextExtentStart(after logical: UInt64, in extents: [Ext4Extent]) -> UInt32? {
        extents.first { UInt64($0.logical) > logical }?.logical
    }

    /// The whole content of a small file (a directory, a slow symlink), at most `limit` bytes.
    func contents(_ inode: Ext4Inode, limit: Int) async throws(Ext4Error) -> [UInt8] {
        guard inode.record.size <= UInt64(limit) else {
            throw .corrupt(disk: name, structure: "inode \(inode.number)", problem: "\(inode.record.size) bytes is more than the \(limit) expected")
        }
        let buffer = disk.engine.makeBuffer(count: max(Int(inode.record.size), 1))
        let count = try await read(inode, at: 0, into: buffer.bytes)
        // unsafe: read filled `count` bytes of the buffer.
        return Array(UnsafeRawBufferPointer(start: buffer.base, count: count))
    }

    /// The entries of a directory, "." and ".." included (hashed directories read linearly).
    public func entries(of directory: Ext4Inode) async throws(Ext4Error) -> [Ext4DirectoryEntry] {
        guard directory.record.isDirectory else { throw .invalidChange(path: "inode \(directory.number)", problem: "is not a directory") }
        let blockSize = geometry.blockSize
        guard directory.record.size % UInt64(blockSize) == 0 else {
            throw .corrupt(disk: name, structure: "directory inode \(directory.number)", problem: "size \(directory.record.size) is not whole blocks")
        }
        var entries: [Ext4DirectoryEntry] = []
        for extent in directory.record.extents {
            for index in 0..<UInt64(extent.length) where UInt64(extent.logical) + index < directory.record.size / UInt64(blockSize) {
                let bytes = try await block(extent.physical + index, structure: "directory inode \(directory.number)")
                entries += try Ext4DirectoryBlocks.decode(bytes[...], fileType: hasFileType, disk: name, directory: directory.number)
                guard entries.count <= 10_000_000 else { throw .corrupt(disk: name, structure: "directory inode \(directory.number)", problem: "over 10 million entries") }
            }
        }
        return entries
    }

    /// The target of a symlink: in i_block when short (and without a data block), else its data.
    public func symlinkTarget(_ link: Ext4Inode) async throws(Ext4Error) -> [UInt8] {
        let record = link.record
        guard record.isSymlink else { throw .invalidChange(path: "inode \(link.number)", problem: "is not a symlink") }
        guard record.size > 0, record.size < UInt64(geometry.blockSize) else {
            throw .corrupt(disk: name, structure: "symlink inode \(link.number)", problem: "target length \(record.size)")
        }
        if !record.usesExtents {
            guard record.size < UInt64(Ext4.inodeBlockBytes) else {
                throw .corrupt(disk: name, structure: "symlink inode \(link.number)", problem: "a \(record.size)-byte target without a data block")
            }
            return Array(record.inlineBlock[0..<Int(record.size)])
        }
        return try await contents(link, limit: geometry.blockSize)
    }

    /// The inode of `name` in `directory`, or nil.
    public func lookup(_ name: [UInt8], in directory: Ext4Inode) async throws(Ext4Error) -> Ext4Inode? {
        for entry in try await entries(of: directory) where entry.name == name {
            return try await inode(entry.inode)
        }
        return nil
    }

    /// The root directory.
    public func root() async throws(Ext4Error) -> Ext4Inode {
        let root = try await inode(Ext4.rootInode)
        guard root.record.isDirectory else { throw .corrupt(disk: name, structure: "inode 2", problem: "the root is not a directory") }
        return root
    }
}

/// An inode as the reader hands it out: its number and what it holds.
public struct Ext4Inode: Sendable, Equatable {
    public let number: UInt32
    let record: Ext4InodeRecord

    public var mode: UInt16 { record.mode }
    public var uid: UInt32 { record.uid }
    public var gid: UInt32 { record.gid }
    public var size: UInt64 { record.size }
    public var links: UInt16 { record.links }
    public var modificationTime: Ext4Time { record.modificationTime }
    public var accessTime: Ext4Time { record.accessTime }
    public var changeTime: Ext4Time { record.changeTime }
    /// i_blocks, in 512-byte units.
    public var sectors: UInt64 { record.sectors }
    public var isDirectory: Bool { record.isDirectory }
    public var isRegular: Bool { record.isRegular }
    public var isSymlink: Bool { record.isSymlink }
    public var xattrs: [Ext4XAttr] { record.xattrs }
    public var deviceNumbers: (major: UInt32, minor: UInt32) { record.deviceNumbers }

    /// Whether `other` (the same inode number read from another disk of one chain, e.g. a
    /// layer and its child) holds the same file: every field of the inode but its access
    /// time, extents and xattrs included. A write moves the ctime and a rewrite the extents.
    public func isUnchanged(from other: Ext4Inode) -> Bool {
        guard number == other.number else { return false }
        var mine = record, theirs = other.record
        mine.accessTime = Ext4Time(seconds: 0)
        theirs.accessTime = Ext4Time(seconds: 0)
        return mine == theirs
    }
}
