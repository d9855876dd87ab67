/// On-disk constants of ext4, by the names of the kernel's `fs/ext4/ext4.h` and the ext4
/// disk-layout documentation (see REFERENCE.md). Only what the writer lays out and the
/// reader understands is named here.
enum Ext4 {
    static let superblockOffset = 1024
    static let superblockSize = 1024
    static let superMagic: UInt16 = 0xEF53
    static let extentMagic: UInt16 = 0xF30A
    static let xattrMagic: UInt32 = 0xEA02_0000

    static let rootInode: UInt32 = 2
    /// The internal journal's inode (EXT4_JOURNAL_INO).
    static let journalInode: UInt32 = 8
    /// The first inode not reserved by the file system (s_first_ino of revision 1).
    static let firstNonReservedInode: UInt32 = 11
    static let inodeSize = 256
    /// Bytes of the large inode after the 128-byte base that we fill (up to i_projid).
    static let extraInodeSize = 32
    static let maximumNameLength = 255
    /// i_block: 15 32-bit words.
    static let inodeBlockBytes = 60
    /// The longest extent an initialized extent may describe.
    static let maximumExtentLength = 32768
    static let maximumLinks = 65000

    enum Compat {
        static let hasJournal: UInt32 = 0x4
        static let extAttr: UInt32 = 0x8
        static let dirIndex: UInt32 = 0x20
    }
    enum Incompat {
        static let compression: UInt32 = 0x1
        static let fileType: UInt32 = 0x2
        static let recover: UInt32 = 0x4
        static let journalDevice: UInt32 = 0x8
        static let metaBlockGroup: UInt32 = 0x10
        static let extents: UInt32 = 0x40
        static let bit64: UInt32 = 0x80
        static let mmp: UInt32 = 0x100
        static let flexBlockGroup: UInt32 = 0x200
        static let eaInode: UInt32 = 0x400
        static let dirData: UInt32 = 0x1000
        static let checksumSeed: UInt32 = 0x2000
        static let largeDirectory: UInt32 = 0x4000
        static let inlineData: UInt32 = 0x8000
        static let encrypt: UInt32 = 0x10000
        static let caseFold: UInt32 = 0x20000
        /// What the reader understands; anything else is refused by name.
        static let understood: UInt32 = fileType | extents | bit64 | flexBlockGroup | recover | metaBlockGroup | largeDirectory | checksumSeed | mmp
    }
    enum ReadOnlyCompat {
        static let sparseSuper: UInt32 = 0x1
        static let largeFile: UInt32 = 0x2
        static let hugeFile: UInt32 = 0x8
        /// uninit_bg (RO_COMPAT_GDT_CSUM): group descriptors carry a crc16 and the
        /// `GroupFlag`s, so unused groups need neither bitmaps nor a zeroed inode table written.
        static let groupDescriptorChecksum: UInt32 = 0x10
        static let dirNlink: UInt32 = 0x20
        static let extraIsize: UInt32 = 0x40
    }

    /// bg_flags, meaningful only with uninit_bg (or metadata_csum).
    enum GroupFlag {
        /// The inode bitmap is not initialised: every inode of the group is free.
        static let inodeUninit: UInt16 = 0x1
        /// The block bitmap is not initialised: only the group's own metadata is in use
        /// (readers compute the bitmap). Never on the last group (e2fsck refuses it there).
        static let blockUninit: UInt16 = 0x2
        /// The inode table reads as zeros (beyond the inodes in use).
        static let inodeTableZeroed: UInt16 = 0x4
    }

    /// i_mode file types.
    enum Mode {
        static let typeMask: UInt16 = 0xF000
        static let fifo: UInt16 = 0x1000
        static let characterDevice: UInt16 = 0x2000
        static let directory: UInt16 = 0x4000
        static let blockDevice: UInt16 = 0x6000
        static let regular: UInt16 = 0x8000
        static let symlink: UInt16 = 0xA000
        static let socket: UInt16 = 0xC000
    }

    /// i_flags.
    enum InodeFlag {
        static let index: UInt32 = 0x1000
        static let hugeFile: UInt32 = 0x4_0000
        static let extents: UInt32 = 0x8_0000
        static let eaInode: UInt32 = 0x20_0000
        static let inlineData: UInt32 = 0x1000_0000
    }

    /// ext4_dir_entry_2.file_type.
    enum FileType {
        static let unknown: UInt8 = 0
        static let regular: UInt8 = 1
        static let directory: UInt8 = 2
        static let characterDevice: UInt8 = 3
        static let blockDevice: UInt8 = 4
        static let fifo: UInt8 = 5
        static let socket: UInt8 = 6
        static let symlink: UInt8 = 7

        static func of(mode: UInt16) -> UInt8 {
            switch mode & Mode.typeMask {
            case Mode.regular: return regular
            case Mode.directory: return directory
            case Mode.characterDevice: return characterDevice
            case Mode.blockDevice: return blockDevice
            case Mode.fifo: return fifo
            case Mode.socket: return socket
            case Mode.symlink: return symlink
            default: return unknown
            }
        }
    }

    /// Superblock field offsets (struct ext4_super_block).
    enum Super {
        static let inodesCount = 0x0
        static let blocksCountLow = 0x4
        static let reservedBlocksCountLow = 0x8
        static let freeBlocksCountLow = 0xC
        static let freeInodesCount = 0x10
        static let firstDataBlock = 0x14
        static let logBlockSize = 0x18
        static let logClusterSize = 0x1C
        static let blocksPerGroup = 0x20
        static let clustersPerGroup = 0x24
        static let inodesPerGroup = 0x28
        static let mountTime = 0x2C
        static let writeTime = 0x30
        static let maxMountCount = 0x36
        static let magic = 0x38
        static let state = 0x3A
        static let errors = 0x3C
        static let lastCheck = 0x40
        static let creatorOS = 0x48
        static let revisionLevel = 0x4C
        static let firstInode = 0x54
        static let inodeSize = 0x58
        static let blockGroupNumber = 0x5A
        static let featureCompat = 0x5C
        static let featureIncompat = 0x60
        static let featureReadOnlyCompat = 0x64
        static let uuid = 0x68
        static let volumeName = 0x78
        static let journalInode = 0xE0
        static let hashSeed = 0xEC
        static let defaultHashVersion = 0xFC
        /// s_jnl_backup_type: 1 when s_jnl_blocks copies the journal inode's i_block and size.
        static let journalBackupType = 0xFD
        static let descriptorSize = 0xFE
        static let mkfsTime = 0x108
        /// s_jnl_blocks: the journal inode's 15 i_block words, then i_size_high and i_size.
        static let journalBlocks = 0x10C
        static let blocksCountHigh = 0x150
        static let freeBlocksCountHigh = 0x158
        static let minExtraInodeSize = 0x15C
        static let wantExtraInodeSize = 0x15E
        static let flags = 0x160
    }

    /// Group descriptor field offsets (struct ext4_group_desc), 32-byte form; the 64-byte
    /// form adds the high halves at 0x20.
    enum Group {
        static let blockBitmapLow = 0x0
        static let inodeBitmapLow = 0x4
        static let inodeTableLow = 0x8
        static let freeBlocksLow = 0xC
        static let freeInodesLow = 0xE
        static let usedDirectoriesLow = 0x10
        /// bg_flags (`GroupFlag`).
        static let flags = 0x12
        /// bg_itable_unused_lo: inodes at the end of the group's table never used.
        static let inodeTableUnusedLow = 0x1C
        /// bg_checksum: crc16 of the file system UUID, the group number and the descriptor.
        static let checksum = 0x1E
        static let blockBitmapHigh = 0x20
        static let inodeBitmapHigh = 0x24
        static let inodeTableHigh = 0x28
        static let size = 32
    }

    /// Inode field offsets (struct ext4_inode).
    enum Inode {
        static let mode = 0x0
        static let uidLow = 0x2
        static let sizeLow = 0x4
        static let accessTime = 0x8
        static let changeTime = 0xC
        static let modificationTime = 0x10
        static let deletionTime = 0x14
        static let gidLow = 0x18
        static let linksCount = 0x1A
        static let blocksLow = 0x1C
        static let flags = 0x20
        static let block = 0x28
        static let generation = 0x64
        static let fileACLLow = 0x68
        static let sizeHigh = 0x6C
        static let blocksHigh = 0x74
        static let fileACLHigh = 0x76
        static let uidHigh = 0x78
        static let gidHigh = 0x7A
        static let extraSize = 0x80
        static let changeTimeExtra = 0x84
        static let modificationTimeExtra = 0x88
        static let accessTimeExtra = 0x8C
        static let creationTime = 0x90
        static let creationTimeExtra = 0x94
    }

    /// xattr name prefixes and their e_name_index (the kernel's EXT4_XATTR_INDEX_*).
    static let xattrPrefixes: [(index: UInt8, prefix: String)] = [
        (1, "user."), (4, "trusted."), (6, "security."), (7, "system."),
    ]
}

/// The crc16 of uninit_bg's group descriptor checksums: the kernel's `crc16` (polynomial
/// 0x8005, bits reflected, no final inversion), computed bytewise from its table.
enum CRC16 {
    static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
        return crc
    }

    static func update<C: Collection>(_ crc: UInt16, _ bytes: C) -> UInt16 where C.Element == UInt8 {
        var crc = crc
        for byte in bytes { crc = (crc >> 8) ^ table[Int((crc ^ UInt16(byte)) & 0xFF)] }
        return crc
    }

    /// bg_checksum of group `group`'s descriptor `descriptor` (its checksum field skipped).
    static func groupDescriptor(uuid: [UInt8], group: Int, descriptor: ArraySlice<UInt8>) -> UInt16 {
        var crc = update(0xFFFF, uuid)
        let number = UInt32(truncatingIfNeeded: group)
        crc = update(crc, (0..<4).map { UInt8(truncatingIfNeeded: number >> (8 * $0)) })
        let start = descriptor.startIndex
        crc = update(crc, descriptor[start..<start + Ext4.Group.checksum])
        return update(crc, descriptor[(start + Ext4.Group.checksum + 2)...])
    }
}

/// Little-endian loads and stores in fixed-size byte arrays whose bounds the caller knows.
extension Array where Element == UInt8 {
    func le16(_ offset: Int) -> UInt16 { UInt16(self[offset]) | UInt16(self[offset + 1]) << 8 }
    func le32(_ offset: Int) -> UInt32 {
        UInt32(self[offset]) | UInt32(self[offset + 1]) << 8 | UInt32(self[offset + 2]) << 16 | UInt32(self[offset + 3]) << 24
    }
    mutating func put16(_ value: UInt16, _ offset: Int) { storeLittleEndian(value, at: offset) }
    mutating func put32(_ value: UInt32, _ offset: Int) { storeLittleEndian(value, at: offset) }
}

extension ArraySlice where Element == UInt8 {
    func le16(_ offset: Int) -> UInt16 { UInt16(self[startIndex + offset]) | UInt16(self[startIndex + offset + 1]) << 8 }
    func le32(_ offset: Int) -> UInt32 {
        let base = startIndex + offset
        return UInt32(self[base]) | UInt32(self[base + 1]) << 8 | UInt32(self[base + 2]) << 16 | UInt32(self[base + 3]) << 24
    }
}
