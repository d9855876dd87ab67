import CShims
import Disk
import Foundation
import HostSystem
import IOEngine
#if canImport(Glibc)
import Glibc
#endif

/// The builder of a container's live disk in a Sendable box. `@unchecked Sendable`: the
/// builder is used by one thread at a time — the guest's thread holding the root's lock, or
/// the I/O task that thread waits for.
struct LiveBuilder: @unchecked Sendable {
    let builder: Ext4Builder
}

/// A container's root filesystem on its own child disk (a child VMDK of the image's top
/// layer, made or taken at its first change): reads come from the image's shared `DiskRootFileSystem` (and its
/// caches) until the container changes something; the first change opens the child for
/// writing with the ext4 writer (`Ext4Builder.open(on:)`, deferred frees), and from then on
/// the container's metadata is the builder's, in memory, and changes land in the child.
///
/// A file the container writes or creates lives in a memfd of its own while the container
/// runs (every open of it shares that memfd's bytes, each with its own offset); `sync` —
/// the guest's fsync, fdatasync, sync or syncfs, and the container's clean end — writes the
/// memfds that changed into the file's blocks, then the metadata, then flushes the disk.
/// Until then, a crash leaves the disk as the last sync left it.
///
/// `@unchecked Sendable`: `live` and everything in it are guarded by `lock`.
public final class ContainerDiskRoot: GuestWritableRootFileSystem, @unchecked Sendable {
    public let base: DiskRootFileSystem
    /// The container's child disk; nil while a root made
    /// with `makeDisk` has not changed anything (it has no disk yet).
    public var diskPath: String? { lock.withLock { path } }
    private var path: String?
    /// Makes (or takes) the child disk at the first change and returns its path.
    private let makeDisk: (@Sendable () throws(SystemError) -> String)?
    private let lock = NSLock()
    private var live: Live?
    /// Set by `finish`: the container has ended and its root serves nothing more.
    private var finished = false
    public let growthBudget = DiskGrowthBudget()

    final class LiveFile {
        let memfd: OwnedDescriptor
        /// Size and mtime of the memfd when last written to the disk (nil: never).
        var written: (size: Int64, seconds: Int, nanoseconds: Int)?
        init(_ memfd: OwnedDescriptor) { self.memfd = memfd }
    }

    final class Live {
        let builder: LiveBuilder
        let volume: Ext4Volume
        var files: [UInt32: LiveFile] = [:]
        init(builder: LiveBuilder, volume: Ext4Volume) {
            self.builder = builder
            self.volume = volume
        }
    }

    public init(base: DiskRootFileSystem, diskPath: String) {
        self.base = base
        path = diskPath
        makeDisk = nil
    }

    /// A root whose child disk is made only when the container first changes something
    /// (`makeDisk`, called then under the root's lock): a container that only reads costs
    /// no disk at all.
    public init(base: DiskRootFileSystem, makeDisk: @escaping @Sendable () throws(SystemError) -> String) {
        self.base = base
        path = nil
        self.makeDisk = makeDisk
    }

    public var device: UInt64 { base.device }

    /// Whether the container has changed anything (its child disk is open for writing).
    public var hasChanges: Bool { lock.withLock { live != nil } }

    // MARK: - Reads

    public func root() throws(SystemError) -> GuestRootNode {
        try withLive(orBase: { () throws(SystemError) in try base.root() }) { live throws(SystemError) in try node(2, live) }
    }

    public func child(_ name: [UInt8], of directory: GuestRootNode) throws(SystemError) -> GuestRootNode? {
        try withLive(orBase: { () throws(SystemError) in try base.child(name, of: directory) }) { live throws(SystemError) -> GuestRootNode? in
            guard let number = live.builder.builder.liveLookup(name, in: try Self.number(directory)) else { return nil }
            return try node(number, live)
        }
    }

    public func entries(of directory: GuestRootNode) throws(SystemError) -> [GuestRootEntry] {
        try withLive(orBase: { () throws(SystemError) in try base.entries(of: directory) }) { live throws(SystemError) in
            let number = try Self.number(directory)
            guard let (parent, entries) = live.builder.builder.liveEntries(of: number) else { throw SystemError(call: "getdents64", errno: ENOTDIR) }
            var listing = [GuestRootEntry(name: [UInt8(ascii: ".")], inode: UInt64(number), type: UInt8(DT_DIR)),
                           GuestRootEntry(name: [UInt8(ascii: "."), UInt8(ascii: ".")], inode: UInt64(parent), type: UInt8(DT_DIR))]
            for entry in entries {
                listing.append(GuestRootEntry(name: entry.name, inode: UInt64(entry.inode), type: DiskRootFileSystem.directoryType(entry.fileType)))
            }
            return listing
        }
    }

    public func symlinkTarget(_ link: GuestRootNode) throws(SystemError) -> [UInt8] {
        try withLive(orBase: { () throws(SystemError) in try base.symlinkTarget(link) }) { live throws(SystemError) in
            let number = try Self.number(link)
            // A slow symlink made since the container started: its block may not be written yet.
            if let target = live.builder.builder.liveSymlinkTarget(number) { return target }
            let inode = try inode(number, live)
            let volume = live.volume
            return try base.waiting { () async throws(Ext4Error) in try await volume.symlinkTarget(inode) }
        }
    }

    public func openContents(of file: GuestRootNode) throws(SystemError) -> FileDescriptor {
        try withLive(orBase: { () throws(SystemError) in try base.openContents(of: file) }) { live throws(SystemError) in
            let number = try Self.number(file)
            // A file this container has not written holds what the image's does.
            guard let written = live.files[number] else { return try base.openContents(of: file) }
            return try Self.reopen(written, O_RDONLY)
        }
    }

    public func refreshed(_ node: GuestRootNode) throws(SystemError) -> GuestRootNode {
        try withLive(orBase: { node }) { live throws(SystemError) in
            guard let number = UInt32(exactly: node.inode), live.builder.builder.liveInode(number) != nil else { return node }
            return try self.node(number, live)
        }
    }

    // MARK: - Changes

    /// The owner of a new inode in `directory`: the creator, with the folder's group when
    /// the folder is set-group-ID (inode_init_owner).
    private static func owner(_ creator: GuestFiles.Caller, in directory: GuestRootNode) -> (uid: UInt32, gid: UInt32, inherits: Bool) {
        let inherits = directory.mode & 0o2000 != 0
        return (creator.uid, inherits ? directory.gid : creator.gid, inherits)
    }

    public func createFile(_ name: [UInt8], in directory: GuestRootNode, permissions: UInt32, creator: GuestFiles.Caller) throws(SystemError) -> GuestRootNode {
        try changing { live throws(SystemError) in
            let owner = Self.owner(creator, in: directory)
            let number = try Self.answer { () throws(Ext4LiveRefusal) in
                try live.builder.builder.createFile(named: name, in: try Self.refusalNumber(directory), permissions: UInt16(permissions & 0o7777), uid: owner.uid, gid: owner.gid)
            }
            live.files[number] = LiveFile(try Self.makeMemfd())
            return try node(number, live)
        }
    }

    public func makeDirectory(_ name: [UInt8], in directory: GuestRootNode, permissions: UInt32, creator: GuestFiles.Caller) throws(SystemError) {
        try changing { live throws(SystemError) in
            let owner = Self.owner(creator, in: directory)
            let bits = UInt16(permissions & 0o7777) | (owner.inherits ? 0o2000 : 0)
            _ = try Self.answer { () throws(Ext4LiveRefusal) in
                try live.builder.builder.createDirectory(named: name, in: try Self.refusalNumber(directory), permissions: bits, uid: owner.uid, gid: owner.gid)
            }
        }
    }

    public func makeSymlink(_ name: [UInt8], in directory: GuestRootNode, target: [UInt8], creator: GuestFiles.Caller) throws(SystemError) {
        try changing { live throws(SystemError) in
            let owner = Self.owner(creator, in: directory)
            _ = try Self.answer { () throws(Ext4LiveRefusal) in
                try live.builder.builder.createSymlink(named: name, in: try Self.refusalNumber(directory), target: target, uid: owner.uid, gid: owner.gid)
            }
        }
    }

    public func remove(_ name: [UInt8], in directory: GuestRootNode, isDirectory: Bool) throws(SystemError) {
        try changing { live throws(SystemError) in
            let removed = try Self.answer { () throws(Ext4LiveRefusal) in
                try live.builder.builder.removeEntry(named: name, in: try Self.refusalNumber(directory), directory: isDirectory)
            }
            // Descriptors still open keep their memfd; the inode number may be reused.
            if removed.lastLink { forget(removed.inode, live) }
        }
    }

    public func rename(_ name: [UInt8], in from: GuestRootNode, to newName: [UInt8], in to: GuestRootNode) throws(SystemError) {
        try changing { live throws(SystemError) in
            let replaced = try Self.answer { () throws(Ext4LiveRefusal) in
                try live.builder.builder.rename(name, in: try Self.refusalNumber(from), to: newName, in: try Self.refusalNumber(to))
            }
            if let replaced { forget(replaced, live) }
        }
    }

    public func setPermissions(of node: GuestRootNode, _ permissions: UInt32) throws(SystemError) {
        try changing { live throws(SystemError) in
            try Self.answer { () throws(Ext4LiveRefusal) in try live.builder.builder.setPermissions(try Self.refusalNumber(node), UInt16(permissions & 0o7777)) }
        }
    }

    public func setOwner(of node: GuestRootNode, uid: UInt32?, gid: UInt32?) throws(SystemError) {
        try changing { live throws(SystemError) in
            try Self.answer { () throws(Ext4LiveRefusal) in try live.builder.builder.setOwner(try Self.refusalNumber(node), uid: uid, gid: gid) }
        }
    }

    public func setTimes(of node: GuestRootNode, access: GuestTimestamp, modification: GuestTimestamp) throws(SystemError) {
        try changing { live throws(SystemError) in
            let builder = live.builder.builder
            let number = try Self.number(node)
            let now = builder.currentTime()
            func time(_ stamp: GuestTimestamp) -> Ext4Time? {
                switch stamp {
                case .omit: return nil
                case .now: return now
                case .at(let seconds, let nanoseconds): return Ext4Builder.clamped(Ext4Time(seconds: seconds, nanoseconds: nanoseconds))
                }
            }
            let modified = time(modification)
            try Self.answer { () throws(Ext4LiveRefusal) in try builder.setTimes(number, access: time(access), modification: modified) }
            // A file written in a memfd gets its mtime from the memfd at the next sync: the
            // memfd takes this one (a later write moves it again, as on Linux).
            if let modified, let file = live.files[number] {
                let times = [timespec(tv_sec: 0, tv_nsec: Int(GuestFiles.utimeOmit)), timespec(tv_sec: Int(modified.seconds), tv_nsec: Int(modified.nanoseconds))]
                // unsafe: the array's buffer holds the two timespecs futimens reads, for the call's length.
                _ = try retryingSyscall("futimens") { times.withUnsafeBufferPointer { futimens(file.memfd.descriptor.rawValue, $0.baseAddress) } }
            }
        }
    }

    public func link(_ node: GuestRootNode, as name: [UInt8], in directory: GuestRootNode) throws(SystemError) {
        try changing { live throws(SystemError) in
            try Self.answer { () throws(Ext4LiveRefusal) in
                try live.builder.builder.addLink(try Self.refusalNumber(node), in: try Self.refusalNumber(directory), name: name)
            }
        }
    }

    public func openForWriting(_ node: GuestRootNode, accessFlags: Int32, truncate: Bool) throws(SystemError) -> FileDescriptor {
        try changing { live throws(SystemError) in
            let file = try liveFile(try Self.number(node), live)
            if truncate { try resize(file, to: 0) }
            return try Self.reopen(file, accessFlags & (O_ACCMODE | O_APPEND))
        }
    }

    public func truncate(_ node: GuestRootNode, to length: Int64) throws(SystemError) {
        try changing { live throws(SystemError) in
            try resize(try liveFile(try Self.number(node), live), to: length)
        }
    }

    public func truncate(descriptor: Int32, of node: GuestRootNode, to length: Int64) throws(SystemError) {
        lock.lock()
        defer { lock.unlock() }
        guard !finished else { throw SystemError(call: "the container's disk after its end", errno: EIO) }
        let info = try HostFileCalls.status(descriptor)
        let size = Int64(info.st_size)
        // Only the memfd its file still names counts: `forget` gave back the bytes of one
        // whose last name went, so giving back its shrinking too would let a guest grow the
        // budget past the disk's free space (write, unlink, ftruncate to 0, again) and fill
        // the engine's memory with memfds.
        var named = false
        if let live, let number = UInt32(exactly: node.inode), let file = live.files[number],
           let own = try? HostFileCalls.status(file.memfd.descriptor.rawValue) {
            named = own.st_ino == info.st_ino && own.st_dev == info.st_dev
        }
        guard growthBudget.take(length - size) else { throw SystemError(call: "ftruncate", errno: ENOSPC) }
        do throws(SystemError) {
            _ = try retryingSyscall("ftruncate") { Glibc.ftruncate(descriptor, off_t(length)) }
        } catch {
            growthBudget.giveBack(length - size)
            throw error
        }
        if named { growthBudget.giveBack(size - length) }
    }

    public func sync() throws(SystemError) {
        lock.lock()
        defer { lock.unlock() }
        guard let live else { return }
        var changed: [(UInt32, Int32, Int64, Ext4Time, (Int64, Int, Int))] = []
        for (number, file) in live.files {
            let info = try HostFileCalls.status(file.memfd.descriptor.rawValue)
            let now = (Int64(info.st_size), info.st_mtim.tv_sec, info.st_mtim.tv_nsec)
            if let written = file.written, written == now { continue }
            changed.append((number, file.memfd.descriptor.rawValue, now.0, Ext4Time(seconds: Int64(now.1), nanoseconds: UInt32(now.2)), now))
        }
        let builder = live.builder
        let writes = changed.map { ($0.0, $0.1, $0.2, $0.3) }
        try base.waiting { () async throws(Ext4Error) in
            for (number, descriptor, size, modified) in writes {
                var content = HostFileContent(descriptor: descriptor)
                try await builder.builder.replaceContents(of: number, size: UInt64(size), modified: modified, from: &content)
            }
            try await builder.builder.finish()
        }
        for entry in changed { live.files[entry.0]?.written = entry.4 }
    }

    /// The container's end: writes its changes, then lets go of its memfds and metadata (an
    /// ended container that is kept holds no host memory for its files). Every later call
    /// gets EIO.
    public func finish() throws(SystemError) {
        try sync()
        lock.withLock {
            live = nil
            finished = true
        }
    }

    // MARK: - Helpers

    /// Truncates a written file to `length`, charging growth to the budget.
    private func resize(_ file: LiveFile, to length: Int64) throws(SystemError) {
        let size = Int64(try HostFileCalls.status(file.memfd.descriptor.rawValue).st_size)
        guard growthBudget.take(length - size) else { throw SystemError(call: "truncate", errno: ENOSPC) }
        _ = try retryingSyscall("ftruncate") { ftruncate(file.memfd.descriptor.rawValue, off_t(length)) }
        growthBudget.giveBack(size - length)
    }

    /// A written file's last link went: its bytes no longer count (open descriptors keep its memfd).
    private func forget(_ number: UInt32, _ live: Live) {
        guard let file = live.files.removeValue(forKey: number) else { return }
        if let info = try? HostFileCalls.status(file.memfd.descriptor.rawValue) { growthBudget.giveBack(Int64(info.st_size)) }
    }

    /// Runs `read` on the live state under the lock, or `orBase` before the first change.
    private func withLive<T: ~Copyable>(orBase: () throws(SystemError) -> T, _ read: (Live) throws(SystemError) -> T) throws(SystemError) -> T {
        lock.lock()
        defer { lock.unlock() }
        guard !finished else { throw SystemError(call: "the container's disk after its end", errno: EIO) }
        guard let live else { return try orBase() }
        return try read(live)
    }

    /// Runs `change` under the lock on the live state, opening the child disk for writing first.
    private func changing<T: ~Copyable>(_ change: (Live) throws(SystemError) -> T) throws(SystemError) -> T {
        lock.lock()
        defer { lock.unlock() }
        guard !finished else { throw SystemError(call: "the container's disk after its end", errno: EIO) }
        if live == nil {
            if path == nil, let makeDisk { path = try makeDisk() }
            guard let path = self.path else { throw SystemError(call: "the container's disk", errno: EIO) }
            let engine = base.volume.disk.engine
            let opened = try base.waiting { () async throws(Ext4Error) -> (LiveBuilder, Ext4Volume) in
                let disk: VirtualDisk
                do throws(DiskError) { disk = try await VirtualDisk.open(path: path, writable: true, engine: engine) } catch { throw .disk(error) }
                let builder = try await Ext4Builder.open(on: disk)
                try await builder.enableLiveChanges()
                return (LiveBuilder(builder: builder), try await Ext4Volume.open(disk: disk))
            }
            live = Live(builder: opened.0, volume: opened.1)
            growthBudget.set(Int64(opened.0.builder.freeBytes))
        }
        return try change(live!)
    }

    private func inode(_ number: UInt32, _ live: Live) throws(SystemError) -> Ext4Inode {
        guard let inode = live.builder.builder.liveInode(number) else { throw SystemError(call: "disk inode \(number)", errno: ENOENT) }
        return inode
    }

    /// The node of inode `number`; a file with a memfd has the memfd's size and times.
    private func node(_ number: UInt32, _ live: Live) throws(SystemError) -> GuestRootNode {
        var node = base.node(try inode(number, live))
        if let file = live.files[number] {
            let info = try HostFileCalls.status(file.memfd.descriptor.rawValue)
            node.size = UInt64(info.st_size)
            node.blocks = UInt64(info.st_blocks)
            node.modificationTime = (Int64(info.st_mtim.tv_sec), UInt32(info.st_mtim.tv_nsec))
        }
        return node
    }

    /// The memfd of a regular file this container writes, made from its disk contents the first time.
    private func liveFile(_ number: UInt32, _ live: Live) throws(SystemError) -> LiveFile {
        if let file = live.files[number] { return file }
        let inode = try inode(number, live)
        guard inode.isRegular else { throw SystemError(call: "write a disk file", errno: inode.isDirectory ? EISDIR : EINVAL) }
        guard inode.size <= DiskRootFileSystem.largestFile else { throw SystemError(call: "write a disk file", errno: EFBIG) }
        let file = LiveFile(try Self.makeMemfd())
        let volume = live.volume
        let descriptor = file.memfd.descriptor.rawValue
        try base.waiting { () async throws(Ext4Error) in try await volume.copy(inode, to: descriptor) }
        live.files[number] = file
        return file
    }

    private static func makeMemfd() throws(SystemError) -> OwnedDescriptor {
        OwnedDescriptor(FileDescriptor(adopting: try retryingSyscall("memfd_create") { cshims_memfd_create("vmfork-container-file") }))
    }

    private static func reopen(_ file: LiveFile, _ flags: Int32) throws(SystemError) -> FileDescriptor {
        try FileDescriptor.open("/proc/self/fd/\(file.memfd.descriptor.rawValue)", flags | O_CLOEXEC)
    }

    private static func number(_ node: GuestRootNode) throws(SystemError) -> UInt32 {
        guard let number = UInt32(exactly: node.inode) else { throw SystemError(call: "disk inode", errno: EIO) }
        return number
    }

    private static func refusalNumber(_ node: GuestRootNode) throws(Ext4LiveRefusal) -> UInt32 {
        guard let number = UInt32(exactly: node.inode) else { throw .notFound }
        return number
    }

    /// The guest's errno for a refused change.
    private static func answer<T>(_ body: () throws(Ext4LiveRefusal) -> T) throws(SystemError) -> T {
        do {
            return try body()
        } catch {
            let errno: Int32
            switch error {
            case .notFound: errno = ENOENT
            case .exists: errno = EEXIST
            case .notDirectory: errno = ENOTDIR
            case .isDirectory: errno = EISDIR
            case .notEmpty: errno = ENOTEMPTY
            case .invalid: errno = EINVAL
            case .tooManyLinks: errno = EMLINK
            case .noSpace: errno = ENOSPC
            case .notPermitted: errno = EPERM
            case .nameTooLong: errno = ENAMETOOLONG
            }
            throw SystemError(call: "change the container's disk (\(error))", errno: errno)
        }
    }
}
