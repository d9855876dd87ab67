import Foundation

/// The steps of a journaled commit (`commitThroughJournal`) a crash test may stop after.
enum JournalCommitStep: Sendable {
    case logWritten, committed, writtenInPlace
}

/// A container disk's metadata goes to its disk through a jbd2 journal (inode 8), so a
/// container or daemon killed part-way through a sync leaves the file system as the last
/// whole sync left it: the kernel, e2fsck and `Ext4Volume.open` all replay the journal.
/// Image layers are written once and thrown away if their writer dies; they have none.
extension Ext4Builder {
    /// Gives the file system a journal if it has none and has room (a quarter of its free
    /// blocks at most): one contiguous run in one block group, its superblock written, then
    /// the inode, bitmaps and superblock by an unjournaled `finish`. A crash during that one
    /// `finish` can leave inode 8 or its blocks half-recorded, which e2fsck repairs and the
    /// next open redoes; every later `finish` is journaled.
    func addJournal() async throws(Ext4Error) {
        guard journal == nil else { return }
        let length = Ext4JournalArea.preferredLength(fileSystemBlocks: geometry.blocksCount)
        guard freeBytes / UInt64(geometry.blockSize) >= 4 * UInt64(length), let start = contiguousFreeRun(length) else { return }
        for block in start..<start + UInt64(length) { markBlock(block, used: true) }
        var record = record(mode: Ext4.Mode.regular, Ext4Attributes(permissions: 0o600, modificationTime: now), links: 1)
        record.extents = [Ext4Extent(logical: 0, length: length, physical: start)]
        record.size = UInt64(length) * UInt64(geometry.blockSize)
        inodes[Ext4.journalInode] = record
        dirtyInodes.insert(Ext4.journalInode)
        let area = Ext4JournalArea(start: start, length: length, sequence: 1)
        try await writeBlocks([start: area.superblock(blockSize: geometry.blockSize, logStart: 0, uuid: uuid)])
        journal = area
        journalReady = false
        try await finish()
        journalReady = true
    }

    /// The journal of a file system this writer made, as `open(on:)` finds it.
    func loadJournal(_ volume: Ext4Volume) async throws(Ext4Error) {
        guard volume.featureCompat & Ext4.Compat.hasJournal != 0 else { return }
        let record = try await volume.record(Ext4.journalInode)
        guard record.isRegular, record.extents.count == 1, record.extents[0].logical == 0, record.extents[0].length >= JBD2.minimumBlocks,
              record.size == UInt64(record.extents[0].length) * UInt64(geometry.blockSize) else {
            throw .unsupported(disk: name, feature: "journal layout for changes: only one contiguous journal of at least \(JBD2.minimumBlocks) blocks")
        }
        let superblock = try await volume.block(record.extents[0].physical, structure: "journal superblock")
        guard superblock.be32(JBD2.Header.magic) == JBD2.magic, superblock.be32(JBD2.Super.start) == 0,
              superblock.be32(JBD2.Super.maximumLength) == record.extents[0].length else {
            throw .corrupt(disk: name, structure: "journal superblock", problem: "not an empty jbd2 v2 journal of \(record.extents[0].length) blocks")
        }
        inodes[Ext4.journalInode] = record
        journal = Ext4JournalArea(start: record.extents[0].physical, length: record.extents[0].length, sequence: superblock.be32(JBD2.Super.sequence))
        journalReady = true
    }

    /// Writes `writes` as one jbd2 transaction, in the order that makes it atomic:
    /// 1. the log (descriptors and blocks), the journal superblock pointing at it, and the
    ///    primary superblock as it is with needs_recovery set; flush;
    /// 2. the commit block; flush (from here a crash replays the transaction);
    /// 3. the blocks in place (the primary superblock still needing recovery); flush;
    /// 4. the journal superblock emptied and the primary superblock without the flag (flushed
    ///    by `finish`).
    /// The log starts at the journal's first block every time, so it never wraps.
    func commitThroughJournal(_ writes: [UInt64: [UInt8]], _ area: Ext4JournalArea) async throws(Ext4Error) {
        guard !writes.isEmpty else { return }
        let blockSize = geometry.blockSize
        let primary = geometry.groupStart(0)
        // The primary superblock's block as the disk holds it: as the last finish left it, read
        // only the first time.
        let current: [UInt8]
        if let known = writtenSuperblocks[primary] { current = known } else { current = try await readBlocks([primary])[primary]! }
        func recovering(_ bytes: [UInt8], _ on: Bool) -> [UInt8] {
            var bytes = bytes
            let at = Ext4.superblockOffset + Ext4.Super.featureIncompat
            let flags = on ? bytes.le32(at) | Ext4.Incompat.recover : bytes.le32(at) & ~Ext4.Incompat.recover
            bytes.put32(flags, at)
            return bytes
        }
        var inPlace = writes
        if let final = writes[primary] { inPlace[primary] = recovering(final, true) }
        let ordered = inPlace.keys.sorted().map { (block: $0, bytes: inPlace[$0]!) }
        let (log, commit) = area.transaction(ordered, blockSize: blockSize, uuid: uuid)
        var logWrites: [UInt64: [UInt8]] = [area.start: area.superblock(blockSize: blockSize, logStart: 1, uuid: uuid), primary: recovering(current, true)]
        for (index, block) in log.enumerated() { logWrites[area.start + 1 + UInt64(index)] = block }
        try await writeBlocks(logWrites)
        try await flushDisk()
        try stopIfAsked(after: .logWritten)
        try await writeBlocks([area.start + 1 + UInt64(log.count): commit])
        try await flushDisk()
        try stopIfAsked(after: .committed)
        try await writeBlocks(inPlace)
        try await flushDisk()
        try stopIfAsked(after: .writtenInPlace)
        var next = area
        next.sequence &+= 1
        journal = next
        // One flush (finish's) covers both: should the flag's clearing land alone, e2fsck and
        // the reader replay the committed transaction again, which rewrites what is in place.
        try await writeBlocks([area.start: next.superblock(blockSize: blockSize, logStart: 0, uuid: uuid),
                               primary: recovering(writes[primary] ?? current, false)])
    }

    /// The first run of `count` free blocks inside one block group.
    private func contiguousFreeRun(_ count: UInt32) -> UInt64? {
        for group in 0..<geometry.groupCount {
            let start = geometry.groupStart(group)
            var runStart = start, runLength: UInt32 = 0
            for block in start..<start + UInt64(geometry.blocksInGroup(group)) {
                if isBlockUsed(block) {
                    runStart = block + 1
                    runLength = 0
                } else {
                    runLength += 1
                    if runLength == count { return runStart }
                }
            }
        }
        return nil
    }

    /// Stops a commit part-way where a test asked (`stopsCommitAfter`), as a kill would.
    private func stopIfAsked(after step: JournalCommitStep) throws(Ext4Error) {
        guard stopsCommitAfter == step else { return }
        throw .invalidChange(path: name, problem: "the commit was stopped after step \(step) for a test")
    }

    private func flushDisk() async throws(Ext4Error) {
        do { try await disk.flush() } catch { throw .disk(error) }
    }
}
