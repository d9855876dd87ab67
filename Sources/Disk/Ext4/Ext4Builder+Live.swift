import Foundation

/// Why a change a running container asked for is refused, in the terms of Linux's answers.
public enum Ext4LiveRefusal: Error, Sendable, Equatable {
    case notFound, exists, notDirectory, isDirectory, notEmpty, invalid, tooManyLinks
    /// EPERM: a hard link to a directory.
    case notPermitted
    /// ENAMETOOLONG: a symlink target longer than a block holds (with its NUL).
    case nameTooLong
    case noSpace(String)
}

/// A container's changes to the file system on its own child disk, made while it runs: by
/// inode number and name, as the guest's calls name things (its paths are resolved above
/// this, confined to the root). The metadata changes in memory; `finish` (the guest's fsync,
/// sync, or the container's clean stop) writes it. Frees are deferred to that point
/// (`defersFrees`), so that a crash between syncs leaves the last synced state intact.
extension Ext4Builder {
    /// Readies a builder opened on a container's disk for live changes: frees deferred to
    /// the next `finish`, and a journal so that every `finish` is atomic (`addJournal`).
    public func enableLiveChanges() async throws(Ext4Error) {
        defersFrees = true
        try await addJournal()
    }

    /// Whether `finish` commits through a journal.
    public var isJournaled: Bool { journal != nil && journalReady }

    /// Bytes of blocks free (deferred frees not counted).
    public var freeBytes: UInt64 {
        var used: UInt64 = 0
        for word in blockBitmap { used += UInt64(word.nonzeroBitCount) }
        return (geometry.blocksCount - min(used, geometry.blocksCount)) * UInt64(geometry.blockSize)
    }

    /// Moves the clock changes are stamped with to now.
    func touchClock() {
        let time = Date().timeIntervalSince1970
        now = Ext4Time(seconds: Int64(time), nanoseconds: UInt32((time - time.rounded(.down)) * 1e9))
    }

    /// Inode `number` as the reader hands them out, if it is in use.
    public func liveInode(_ number: UInt32) -> Ext4Inode? {
        inodes[number].map { Ext4Inode(number: number, record: $0) }
    }

    /// The entries of directory `number` ("." and ".." not included), and its parent.
    public func liveEntries(of number: UInt32) -> (parent: UInt32, entries: [Ext4DirectoryEntry])? {
        directories[number].map { ($0.parent, $0.entries) }
    }

    /// The inode `name` names in directory `number`.
    public func liveLookup(_ name: [UInt8], in number: UInt32) -> UInt32? {
        directories[number]?.find(name)?.inode
    }

    static func checkName(_ name: [UInt8]) throws(Ext4LiveRefusal) {
        guard !name.isEmpty, name.count <= Ext4.maximumNameLength, !name.contains(0), !name.contains(UInt8(ascii: "/")),
              name != [UInt8(ascii: ".")], name != [UInt8(ascii: "."), UInt8(ascii: ".")] else { throw .invalid }
    }

    private func directoryModel(_ number: UInt32) throws(Ext4LiveRefusal) -> DirectoryModel {
        guard let model = directories[number] else { throw inodes[number] == nil ? .notFound : .notDirectory }
        return model
    }

    /// Makes an empty regular file `name` in `directory`; returns its inode.
    public func createFile(named name: [UInt8], in directory: UInt32, permissions: UInt16, uid: UInt32, gid: UInt32) throws(Ext4LiveRefusal) -> UInt32 {
        try Self.checkName(name)
        let model = try directoryModel(directory)
        guard model.find(name) == nil else { throw .exists }
        touchClock()
        let inode: UInt32
        do { inode = try allocateInode() } catch { throw .noSpace("\(error)") }
        inodes[inode] = record(mode: Ext4.Mode.regular, Ext4Attributes(permissions: permissions, uid: uid, gid: gid, modificationTime: now), links: 1)
        dirtyInodes.insert(inode)
        do { try link(inode, in: directory, name: name, fileType: Ext4.FileType.regular) } catch { throw .noSpace("\(error)") }
        return inode
    }

    /// Makes an empty directory `name` in `directory`; returns its inode.
    public func createDirectory(named name: [UInt8], in directory: UInt32, permissions: UInt16, uid: UInt32, gid: UInt32) throws(Ext4LiveRefusal) -> UInt32 {
        try Self.checkName(name)
        let model = try directoryModel(directory)
        guard model.find(name) == nil else { throw .exists }
        touchClock()
        do {
            return try addDirectoryInode(in: directory, name: name, Ext4Attributes(permissions: permissions, uid: uid, gid: gid, modificationTime: now))
        } catch { throw .noSpace("\(error)") }
    }

    /// Makes a symlink `name` in `directory` to `target`: kept in the inode when under 60
    /// bytes (a fast symlink), else in one data block of its own (a slow one, as
    /// `addSymlink` makes for layers, and as Linux's ext4 does). The block is written at the
    /// next `finish`; until then the target is read from `liveSymlinkTarget`.
    public func createSymlink(named name: [UInt8], in directory: UInt32, target: [UInt8], uid: UInt32, gid: UInt32) throws(Ext4LiveRefusal) -> UInt32 {
        try Self.checkName(name)
        guard !target.isEmpty, !target.contains(0) else { throw .invalid }
        // ext4_symlink: the target and its NUL must fit one block.
        guard target.count + 1 <= geometry.blockSize else { throw .nameTooLong }
        let model = try directoryModel(directory)
        guard model.find(name) == nil else { throw .exists }
        touchClock()
        var made = record(mode: Ext4.Mode.symlink, Ext4Attributes(permissions: 0o777, uid: uid, gid: gid, modificationTime: now), links: 1)
        made.size = UInt64(target.count)
        let slow = target.count >= Ext4.inodeBlockBytes
        if slow {
            made.flags = Ext4.InodeFlag.extents
            do { made.extents = try allocateBlocks(1) } catch { throw .noSpace("\(error)") }
        } else {
            made.flags = 0
            made.inlineBlock = target + [UInt8](repeating: 0, count: Ext4.inodeBlockBytes - target.count)
        }
        let inode: UInt32
        do { inode = try allocateInode() } catch {
            freeBlocks(made.extents)
            throw .noSpace("\(error)")
        }
        inodes[inode] = made
        dirtyInodes.insert(inode)
        if slow {
            liveSymlinkTargets[inode] = target
            unwrittenSymlinks.insert(inode)
        }
        do { try link(inode, in: directory, name: name, fileType: Ext4.FileType.symlink) } catch {
            free(inode)
            throw .noSpace("\(error)")
        }
        return inode
    }

    /// The target of a slow symlink this builder made while the container runs (nil for
    /// any other inode: its target is on the disk).
    public func liveSymlinkTarget(_ number: UInt32) -> [UInt8]? {
        liveSymlinkTargets[number]
    }

    /// Writes the blocks of the slow symlinks made since the last `finish` (the blocks were
    /// free at the last commit, so writing them before this one's metadata is safe).
    func writeLiveSymlinkBlocks() async throws(Ext4Error) {
        for number in unwrittenSymlinks.sorted() {
            guard let target = liveSymlinkTargets[number], let block = inodes[number]?.extents.first?.physical else { continue }
            var source = ByteSource(bytes: target)
            try await writer.write(from: &source, count: UInt64(target.count), at: block, path: "symlink inode \(number)")
        }
        unwrittenSymlinks = []
    }

    /// link(2): another entry `name` in `directory` for inode `number`, which must not be a
    /// directory (EPERM, as Linux); its link count goes up (EMLINK at ext4's 65,000).
    public func addLink(_ number: UInt32, in directory: UInt32, name: [UInt8]) throws(Ext4LiveRefusal) {
        try Self.checkName(name)
        let model = try directoryModel(directory)
        guard let record = inodes[number] else { throw .notFound }
        // Linux looks the new name up before it judges the inode (EEXIST before EPERM).
        guard model.find(name) == nil else { throw .exists }
        guard !record.isDirectory, directories[number] == nil else { throw .notPermitted }
        // An inode whose last name went (a descriptor still open on it) cannot get a new one.
        guard record.links > 0 else { throw .notFound }
        guard record.links < UInt16(Ext4.maximumLinks) else { throw .tooManyLinks }
        touchClock()
        inodes[number]!.links = record.links + 1
        inodes[number]!.changeTime = now
        dirtyInodes.insert(number)
        do { try link(number, in: directory, name: name, fileType: Ext4.FileType.of(mode: record.mode)) } catch {
            inodes[number]!.links = record.links
            throw .noSpace("\(error)")
        }
    }

    /// The time changes are stamped with, moved to now (a guest's UTIME_NOW).
    public func currentTime() -> Ext4Time {
        touchClock()
        return now
    }

    /// The earliest and latest seconds an inode's times hold (256-byte inodes: 1901 to
    /// 2446, ext4's s_time_min and s_time_max); Linux clamps times set to this range.
    public static let timeRange: ClosedRange<Int64> = Int64(Int32.min)...((Int64(1) << 34) - 1 + Int64(Int32.min))

    /// chown: the owner and group of inode `number` (nil keeps one). As Linux's chown, the
    /// set-user-ID bit of a non-directory goes, and its set-group-ID bit when group
    /// execution is allowed; the ctime moves.
    public func setOwner(_ number: UInt32, uid: UInt32?, gid: UInt32?) throws(Ext4LiveRefusal) {
        guard var record = inodes[number] else { throw .notFound }
        touchClock()
        if let uid { record.uid = uid }
        if let gid { record.gid = gid }
        if !record.isDirectory {
            record.mode &= ~UInt16(0o4000)
            if record.mode & 0o2010 == 0o2010 { record.mode &= ~UInt16(0o2000) }
        }
        record.changeTime = now
        inodes[number] = record
        dirtyInodes.insert(number)
    }

    /// utimensat: the atime and mtime of inode `number` (nil keeps one), clamped to what
    /// the inode holds; the ctime moves.
    public func setTimes(_ number: UInt32, access: Ext4Time?, modification: Ext4Time?) throws(Ext4LiveRefusal) {
        guard var record = inodes[number] else { throw .notFound }
        touchClock()
        if let access { record.accessTime = Self.clamped(access) }
        if let modification { record.modificationTime = Self.clamped(modification) }
        record.changeTime = now
        inodes[number] = record
        dirtyInodes.insert(number)
    }

    /// `time` within `timeRange`; at either end without nanoseconds (timestamp_truncate).
    public static func clamped(_ time: Ext4Time) -> Ext4Time {
        if time.seconds <= timeRange.lowerBound { return Ext4Time(seconds: timeRange.lowerBound) }
        if time.seconds >= timeRange.upperBound { return Ext4Time(seconds: timeRange.upperBound) }
        return time
    }

    /// unlink (`directory` false: the entry must not be a directory) or rmdir (it must be an
    /// empty one). Returns the inode and whether its last link went.
    @discardableResult
    public func removeEntry(named name: [UInt8], in parent: UInt32, directory: Bool) throws(Ext4LiveRefusal) -> (inode: UInt32, lastLink: Bool) {
        try Self.checkName(name)
        let model = try directoryModel(parent)
        guard let entry = model.find(name) else { throw .notFound }
        let isDirectory = directories[entry.inode] != nil
        if directory {
            guard isDirectory else { throw .notDirectory }
            guard directories[entry.inode]!.isEmpty else { throw .notEmpty }
        } else if isDirectory {
            throw .isDirectory
        }
        touchClock()
        let last = isDirectory || (inodes[entry.inode]?.links ?? 1) <= 1
        unlink(name, in: parent)
        return (entry.inode, last)
    }

    /// rename(2) without flags: `name` in `from` becomes `newName` in `to`, replacing what is
    /// there when Linux would (a non-directory by a non-directory, an empty directory by a
    /// directory). Returns the inode whose last link went with the replaced entry, if any.
    @discardableResult
    public func rename(_ name: [UInt8], in from: UInt32, to newName: [UInt8], in to: UInt32) throws(Ext4LiveRefusal) -> UInt32? {
        try Self.checkName(name)
        try Self.checkName(newName)
        let source = try directoryModel(from)
        let destination = try directoryModel(to)
        guard let moving = source.find(name) else { throw .notFound }
        let movingDirectory = directories[moving.inode] != nil
        if movingDirectory {
            // A directory cannot move into itself or below itself.
            var walk = to
            while true {
                if walk == moving.inode { throw .invalid }
                if walk == Ext4.rootInode { break }
                guard let up = directories[walk]?.parent, up != walk else { break }
                walk = up
            }
        }
        var replacedLast: UInt32?
        if let existing = destination.find(newName) {
            if existing.inode == moving.inode { return nil }
            let existingDirectory = directories[existing.inode] != nil
            if movingDirectory {
                guard existingDirectory else { throw .notDirectory }
                guard directories[existing.inode]!.isEmpty else { throw .notEmpty }
            } else if existingDirectory {
                throw .isDirectory
            }
            if !existingDirectory, (inodes[existing.inode]?.links ?? 1) <= 1 { replacedLast = existing.inode }
            touchClock()
            unlink(newName, in: to)
        }
        touchClock()
        source.remove(name)
        touch(from)
        do { try link(moving.inode, in: to, name: newName, fileType: moving.fileType) } catch { throw .noSpace("\(error)") }
        if movingDirectory, from != to {
            directories[moving.inode]!.parent = to
            directories[moving.inode]!.dirty = true
            inodes[from]!.links = Self.linkRemoved(inodes[from]!.links)
            inodes[to]!.links = Self.linkAdded(inodes[to]!.links)
            dirtyInodes.insert(from)
            dirtyInodes.insert(to)
        }
        inodes[moving.inode]!.changeTime = now
        dirtyInodes.insert(moving.inode)
        return replacedLast
    }

    /// chmod: the permission bits (07777) of inode `number`.
    public func setPermissions(_ number: UInt32, _ permissions: UInt16) throws(Ext4LiveRefusal) {
        guard var record = inodes[number] else { throw .notFound }
        touchClock()
        record.mode = record.type | (permissions & 0o7777)
        record.changeTime = now
        inodes[number] = record
        dirtyInodes.insert(number)
    }

    /// Replaces the contents of regular file `number` by `size` bytes from `content`, with
    /// `modified` as its mtime: its blocks are rewritten in place when their number is
    /// unchanged and they map the file without holes, else new ones are allocated (the old
    /// ones freed at the next `finish`). The data is written before this returns; the inode
    /// at the next `finish`.
    public func replaceContents(of number: UInt32, size: UInt64, modified: Ext4Time, from content: inout some Ext4ContentSource) async throws(Ext4Error) {
        guard var record = inodes[number], record.isRegular else { throw .invalidChange(path: "inode \(number)", problem: "is not a regular file in use") }
        let blockSize = UInt64(geometry.blockSize)
        let count = (size + blockSize - 1) / blockSize
        guard count <= UInt64(UInt32.max) else { throw .invalidChange(path: "inode \(number)", problem: "\(size) bytes is more than an ext4 file holds") }
        var expected: UInt32 = 0
        let contiguous = record.extents.allSatisfy { extent in
            defer { expected &+= extent.length }
            return extent.logical == expected
        }
        if record.dataBlocks != count || !contiguous {
            freeBlocks(record.extents)
            record.extents = []
            record.extents = try allocateBlocks(count)
            guard Ext4InodeRecord.treeBlocksNeeded(extents: record.extents.count, blockSize: geometry.blockSize) != nil else {
                freeBlocks(record.extents)
                record.extents = []
                inodes[number] = record
                throw .full(disk: name, what: "contiguous space for inode \(number) (it would need more than 1,360 extents)")
            }
        }
        touchClock()
        record.size = size
        record.modificationTime = modified
        record.changeTime = now
        inodes[number] = record
        dirtyInodes.insert(number)
        var remaining = size
        for extent in record.extents {
            let bytes = min(remaining, UInt64(extent.length) * blockSize)
            try await writer.write(from: &content, count: bytes, at: extent.physical, path: "inode \(number)")
            remaining -= bytes
        }
        try await writer.flush()
    }
}

/// A regular host file (a container's memfd) as content, read with pread from offset 0.
public struct HostFileContent: Ext4ContentSource {
    let descriptor: Int32
    var offset: Int64 = 0

    public init(descriptor: Int32) { self.descriptor = descriptor }

    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let count = pread(descriptor, buffer.baseAddress, buffer.count, off_t(offset))
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw Ext4Error.invalidChange(path: "host file \(descriptor)", problem: String(cString: strerror(errno))) }
            offset += Int64(count)
            return count
        }
    }
}
