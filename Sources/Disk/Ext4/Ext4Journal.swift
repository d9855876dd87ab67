import Foundation

/// jbd2's on-disk format (the kernel's include/linux/jbd2.h), the parts a container disk's
/// journal uses: a v2 superblock, descriptor blocks with 8-byte tags (no 64bit, no
/// checksums), data blocks and commit blocks. Every field is big-endian.
enum JBD2 {
    static let magic: UInt32 = 0xC03B_3998
    /// The smallest journal e2fsck and the kernel accept (JBD2_MIN_JOURNAL_BLOCKS).
    static let minimumBlocks: UInt32 = 1024

    enum BlockType {
        static let descriptor: UInt32 = 1
        static let commit: UInt32 = 2
        static let superblockV2: UInt32 = 4
        static let revoke: UInt32 = 5
    }

    /// journal_header_t, at the start of every journal block but data blocks.
    enum Header {
        static let magic = 0x0
        static let blockType = 0x4
        static let sequence = 0x8
        static let size = 12
    }

    /// journal_superblock_t fields after the header.
    enum Super {
        static let blockSize = 0xC
        static let maximumLength = 0x10
        static let first = 0x14
        static let sequence = 0x18
        static let start = 0x1C
        static let errno = 0x20
        static let featureCompat = 0x24
        static let featureIncompat = 0x28
        static let featureReadOnlyCompat = 0x2C
        static let uuid = 0x30
        static let userCount = 0x40
    }

    /// journal_block_tag_t without the 64bit and checksum features: block number, checksum
    /// (unused), flags; the first tag of a descriptor is followed by the file system's UUID.
    enum Tag {
        static let size = 8
        static let blockNumber = 0x0
        static let flags = 0x6
        static let uuidSize = 16
    }

    enum TagFlag {
        /// The block's first four bytes were the jbd2 magic; the log holds them zeroed.
        static let escaped: UInt16 = 1
        static let sameUUID: UInt16 = 2
        static let lastTag: UInt16 = 8
    }
}

extension Array where Element == UInt8 {
    func be32(_ offset: Int) -> UInt32 {
        UInt32(self[offset]) << 24 | UInt32(self[offset + 1]) << 16 | UInt32(self[offset + 2]) << 8 | UInt32(self[offset + 3])
    }
    func be16(_ offset: Int) -> UInt16 { UInt16(self[offset]) << 8 | UInt16(self[offset + 1]) }
    mutating func putBE32(_ value: UInt32, _ offset: Int) {
        for index in 0..<4 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (24 - 8 * index)) }
    }
    mutating func putBE16(_ value: UInt16, _ offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value >> 8)
        self[offset + 1] = UInt8(truncatingIfNeeded: value)
    }
}

/// Where a file system's internal journal lies (inode 8: one contiguous run of blocks, the
/// first its superblock) and the sequence number its next transaction takes.
struct Ext4JournalArea: Equatable {
    var start: UInt64
    var length: UInt32
    var sequence: UInt32

    /// The journal size mke2fs picks for a file system of `blocks` blocks, capped at 32 MiB.
    static func preferredLength(fileSystemBlocks blocks: UInt64) -> UInt32 {
        blocks < 32768 ? JBD2.minimumBlocks : blocks < 262_144 ? 4096 : 8192
    }

    /// The journal's superblock: empty (`logStart` 0) or holding transactions from `logStart`.
    func superblock(blockSize: Int, logStart: UInt32, uuid: [UInt8]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: blockSize)
        bytes.putBE32(JBD2.magic, JBD2.Header.magic)
        bytes.putBE32(JBD2.BlockType.superblockV2, JBD2.Header.blockType)
        bytes.putBE32(UInt32(blockSize), JBD2.Super.blockSize)
        bytes.putBE32(length, JBD2.Super.maximumLength)
        bytes.putBE32(1, JBD2.Super.first)
        bytes.putBE32(sequence, JBD2.Super.sequence)
        bytes.putBE32(logStart, JBD2.Super.start)
        bytes.replaceSubrange(JBD2.Super.uuid..<JBD2.Super.uuid + 16, with: uuid)
        bytes.putBE32(1, JBD2.Super.userCount)
        return bytes
    }

    /// Journal blocks a transaction of `count` blocks takes: descriptors, the blocks, a commit.
    static func logBlocks(forWrites count: Int, blockSize: Int) -> Int {
        let perDescriptor = tagsPerDescriptor(blockSize: blockSize)
        return (count + perDescriptor - 1) / perDescriptor + count + 1
    }

    static func tagsPerDescriptor(blockSize: Int) -> Int {
        (blockSize - JBD2.Header.size - JBD2.Tag.uuidSize) / JBD2.Tag.size
    }

    /// The log of one transaction writing `writes` (file system block, its bytes): the
    /// descriptor and data blocks, in order, then the commit block, all of sequence `sequence`.
    func transaction(_ writes: [(block: UInt64, bytes: [UInt8])], blockSize: Int, uuid: [UInt8]) -> (log: [[UInt8]], commit: [UInt8]) {
        var log: [[UInt8]] = []
        let perDescriptor = Self.tagsPerDescriptor(blockSize: blockSize)
        var index = 0
        while index < writes.count {
            let batch = writes[index..<min(index + perDescriptor, writes.count)]
            var descriptor = header(JBD2.BlockType.descriptor, blockSize: blockSize)
            var at = JBD2.Header.size
            var data: [[UInt8]] = []
            for (position, write) in batch.enumerated() {
                var flags: UInt16 = position == 0 ? 0 : JBD2.TagFlag.sameUUID
                if position == batch.count - 1 { flags |= JBD2.TagFlag.lastTag }
                var bytes = write.bytes
                if bytes.be32(0) == JBD2.magic {
                    bytes.replaceSubrange(0..<4, with: [0, 0, 0, 0])
                    flags |= JBD2.TagFlag.escaped
                }
                descriptor.putBE32(UInt32(write.block), at + JBD2.Tag.blockNumber)
                descriptor.putBE16(flags, at + JBD2.Tag.flags)
                at += JBD2.Tag.size
                if position == 0 {
                    descriptor.replaceSubrange(at..<at + JBD2.Tag.uuidSize, with: uuid)
                    at += JBD2.Tag.uuidSize
                }
                data.append(bytes)
            }
            log.append(descriptor)
            log += data
            index += batch.count
        }
        return (log, header(JBD2.BlockType.commit, blockSize: blockSize))
    }

    private func header(_ type: UInt32, blockSize: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: blockSize)
        bytes.putBE32(JBD2.magic, JBD2.Header.magic)
        bytes.putBE32(type, JBD2.Header.blockType)
        bytes.putBE32(sequence, JBD2.Header.sequence)
        return bytes
    }
}

/// Reads a journal's committed transactions back (jbd2's recovery, one pass: this writer
/// makes no revoke records). Only whole transactions count: one without its commit block —
/// the writer died before committing — is left out, so the file system stays as the last
/// commit left it.
struct Ext4JournalReplay {
    /// File system block → its newest committed bytes.
    var writes: [UInt64: [UInt8]] = [:]
    /// The sequence the next transaction will take.
    var nextSequence: UInt32
    var transactions = 0

    /// Replays the journal whose superblock is `superblock`, reading its block `n` (0 the
    /// superblock) with `read`. Nothing to replay when its log start is 0.
    static func read(superblock: [UInt8], length: UInt32, blocksCount: UInt64, disk name: String,
                     _ read: (UInt32) async throws(Ext4Error) -> [UInt8]) async throws(Ext4Error) -> Ext4JournalReplay {
        func corrupt(_ problem: String) -> Ext4Error { .corrupt(disk: name, structure: "journal", problem: problem) }
        guard superblock.be32(JBD2.Header.magic) == JBD2.magic, superblock.be32(JBD2.Header.blockType) == JBD2.BlockType.superblockV2 else {
            throw corrupt("its superblock has no jbd2 v2 magic")
        }
        guard superblock.be32(JBD2.Super.blockSize) == UInt32(superblock.count) else {
            throw corrupt("block size \(superblock.be32(JBD2.Super.blockSize)) is not the file system's \(superblock.count)")
        }
        guard superblock.be32(JBD2.Super.featureIncompat) == 0 else {
            throw .unsupported(disk: name, feature: String(format: "journal features 0x%x", superblock.be32(JBD2.Super.featureIncompat)))
        }
        let first = superblock.be32(JBD2.Super.first), maximum = superblock.be32(JBD2.Super.maximumLength)
        guard first >= 1, maximum <= length, first < maximum else { throw corrupt("its log runs \(first)..<\(maximum) in a journal of \(length) blocks") }
        var replay = Ext4JournalReplay(nextSequence: superblock.be32(JBD2.Super.sequence))
        var position = superblock.be32(JBD2.Super.start)
        guard position != 0 else { return replay }
        guard position >= first, position < maximum else { throw corrupt("its log starts at \(position), outside \(first)..<\(maximum)") }
        func advance() { position = position + 1 == maximum ? first : position + 1 }
        var pending: [(UInt64, [UInt8])] = []
        var steps: UInt32 = 0
        // Each block is read once; a log longer than the journal is a loop.
        scan: while steps < maximum {
            let block = try await read(position)
            steps += 1
            guard block.be32(JBD2.Header.magic) == JBD2.magic, block.be32(JBD2.Header.sequence) == replay.nextSequence else { break }
            switch block.be32(JBD2.Header.blockType) {
            case JBD2.BlockType.descriptor:
                var at = JBD2.Header.size
                while at + JBD2.Tag.size <= block.count {
                    let target = UInt64(block.be32(at + JBD2.Tag.blockNumber))
                    let flags = block.be16(at + JBD2.Tag.flags)
                    at += JBD2.Tag.size + (flags & JBD2.TagFlag.sameUUID == 0 ? JBD2.Tag.uuidSize : 0)
                    guard target < blocksCount else { throw corrupt("a transaction writes block \(target), past the file system's \(blocksCount)") }
                    advance()
                    guard steps < maximum else { break scan }
                    var data = try await read(position)
                    steps += 1
                    if flags & JBD2.TagFlag.escaped != 0 { data.putBE32(JBD2.magic, 0) }
                    pending.append((target, data))
                    if flags & JBD2.TagFlag.lastTag != 0 { break }
                }
            case JBD2.BlockType.commit:
                for (target, data) in pending { replay.writes[target] = data }
                pending = []
                replay.nextSequence &+= 1
                replay.transactions += 1
            case JBD2.BlockType.revoke:
                throw .unsupported(disk: name, feature: "journal revoke records (this journal was written by another writer)")
            default:
                break scan
            }
            advance()
        }
        return replay
    }
}
