import CShims
import Disk
import Foundation
import HostSystem
import IOEngine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A host descriptor in a class, so that caches can hold it (`FileDescriptor` is non-copyable).
final class OwnedDescriptor: Sendable {
    let descriptor: FileDescriptor
    init(_ descriptor: consuming FileDescriptor) { self.descriptor = descriptor }
}

/// A container's root filesystem served from the ext4 in its disk chain (an image's layer
/// VMDKs and the container's own child), read through the I/O engine. Directory listings,
/// inodes and symlink targets are cached, so a warm path walk makes no I/O; a regular file's
/// bytes are read from the chain once into a sealed memfd that every open of it (in any
/// container sharing this root) reopens for its own offset, and that mmap maps from.
///
/// The guest's calls arrive on vCPU and poller threads, outside Swift concurrency: each read
/// the caches cannot answer runs as a task on the engine's I/O thread while the caller
/// waits for it. A disk that cannot be read, or holds a corrupt structure, answers EIO; the
/// first such error is kept in `lastError` for the operator.
public final class DiskRootFileSystem: GuestRootFileSystem {
    public let volume: Ext4Volume
    public let device: UInt64
    private let engine: IOEngine
    private struct Caches {
        var inodes: [UInt32: Ext4Inode] = [:]
        var listings: [UInt32: [GuestRootEntry]] = [:]
        var children: [UInt32: [[UInt8]: UInt32]] = [:]
        var targets: [UInt32: [UInt8]] = [:]
        var contents: [UInt32: OwnedDescriptor] = [:]
    }
    private let caches = Mutex(Caches())
    private let firstError = Mutex<Ext4Error?>(nil)
    /// How many files' contents stay open as memfds at once (each costs a host descriptor).
    static let cachedContents = 512
    /// How many inodes (and symlink targets; an eighth as many listings) stay cached: past
    /// it a cache starts again, so a huge or hostile image cannot fill the engine's memory.
    static let cachedEntries = 65536
    /// The largest file the guest may open from the disk (its copy lives in host memory).
    static let largestFile: UInt64 = 16 << 30

    public var lastError: Ext4Error? { firstError.withLock { $0 } }

    private init(volume: Ext4Volume, engine: IOEngine, device: UInt64) {
        self.volume = volume
        self.engine = engine
        self.device = device
    }

    /// Opens the chain whose top disk is `path` read-only, and its ext4 (checked: a disk
    /// without one, or with a corrupt superblock or descriptors, is refused by name).
    /// The layer files are read through the host's page cache (`direct` false), as a host
    /// folder's files are: an image's layers are shared by all its containers and read again
    /// by each new engine process; O_DIRECT would read them from the device every time.
    public static func open(path: String, engine: IOEngine, device: UInt64 = 0xFE00, direct: Bool = false) async throws(Ext4Error) -> DiskRootFileSystem {
        let disk: VirtualDisk
        do { disk = try await VirtualDisk.open(path: path, writable: false, direct: direct, engine: engine) } catch { throw .disk(error) }
        let volume = try await Ext4Volume.open(disk: disk)
        let root = try await volume.root()
        guard root.isDirectory else { throw .corrupt(disk: path, structure: "root inode", problem: "is not a directory") }
        return DiskRootFileSystem(volume: volume, engine: engine, device: device)
    }

    /// Runs `body` on the engine's I/O thread and waits for it. Never called from that thread
    /// (guest calls come from vCPU and poller threads). Errors are kept in `lastError` and given as EIO.
    func waiting<T: Sendable>(_ body: @escaping @Sendable () async throws(Ext4Error) -> T) throws(SystemError) -> T {
        let outcome = Mutex<Result<T, Ext4Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task(executorPreference: engine.executor) {
            let result: Result<T, Ext4Error>
            do throws(Ext4Error) { result = .success(try await body()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        switch outcome.withLock({ $0 })! {
        case .success(let value): return value
        case .failure(let error):
            firstError.withLock { if $0 == nil { $0 = error } }
            throw SystemError(call: "read the container's disk (\(error))", errno: EIO)
        }
    }

    private func inode(_ number: UInt32) throws(SystemError) -> Ext4Inode {
        if let cached = caches.withLock({ $0.inodes[number] }) { return cached }
        let volume = self.volume
        let inode = try waiting { () async throws(Ext4Error) in try await volume.inode(number) }
        caches.withLock {
            if $0.inodes.count >= Self.cachedEntries { $0.inodes.removeAll(keepingCapacity: true) }
            $0.inodes[number] = inode
        }
        return inode
    }

    func node(_ inode: Ext4Inode) -> GuestRootNode {
        let devices = inode.deviceNumbers
        let type = UInt32(inode.mode) & GuestRootNode.FileType.mask
        let isDevice = type == GuestRootNode.FileType.characterDevice || type == GuestRootNode.FileType.blockDevice
        return GuestRootNode(inode: UInt64(inode.number), mode: UInt32(inode.mode), links: UInt64(inode.links), uid: inode.uid, gid: inode.gid,
                             size: inode.size, blocks: inode.sectors, deviceMajor: isDevice ? devices.major : 0, deviceMinor: isDevice ? devices.minor : 0,
                             accessTime: (inode.accessTime.seconds, inode.accessTime.nanoseconds),
                             modificationTime: (inode.modificationTime.seconds, inode.modificationTime.nanoseconds),
                             changeTime: (inode.changeTime.seconds, inode.changeTime.nanoseconds))
    }

    private static func number(_ node: GuestRootNode) throws(SystemError) -> UInt32 {
        guard let number = UInt32(exactly: node.inode) else { throw SystemError(call: "disk inode", errno: EIO) }
        return number
    }

    public func root() throws(SystemError) -> GuestRootNode { node(try inode(2)) }

    public func child(_ name: [UInt8], of directory: GuestRootNode) throws(SystemError) -> GuestRootNode? {
        let number = try Self.number(directory)
        let children: [[UInt8]: UInt32]
        if let cached = caches.withLock({ $0.children[number] }) { children = cached } else { children = try listing(of: directory).children }
        guard let child = children[name] else { return nil }
        return node(try inode(child))
    }

    public func entries(of directory: GuestRootNode) throws(SystemError) -> [GuestRootEntry] {
        let number = try Self.number(directory)
        if let cached = caches.withLock({ $0.listings[number] }) { return cached }
        return try listing(of: directory).entries
    }

    /// Reads a directory's entries and caches them, with its names for lookups.
    private func listing(of directory: GuestRootNode) throws(SystemError) -> (entries: [GuestRootEntry], children: [[UInt8]: UInt32]) {
        let number = try Self.number(directory)
        let directoryInode = try inode(number)
        let volume = self.volume
        let raw = try waiting { () async throws(Ext4Error) in try await volume.entries(of: directoryInode) }
        var listing: [GuestRootEntry] = []
        var children: [[UInt8]: UInt32] = [:]
        for entry in raw {
            guard entry.inode >= 1 else { continue }
            listing.append(GuestRootEntry(name: entry.name, inode: UInt64(entry.inode), type: Self.directoryType(entry.fileType)))
            if entry.name != [UInt8(ascii: ".")], entry.name != [UInt8(ascii: "."), UInt8(ascii: ".")] { children[entry.name] = entry.inode }
        }
        caches.withLock {
            if $0.listings.count >= Self.cachedEntries / 8 {
                $0.listings.removeAll(keepingCapacity: true)
                $0.children.removeAll(keepingCapacity: true)
            }
            $0.listings[number] = listing
            $0.children[number] = children
        }
        return (listing, children)
    }

    /// ext4's file_type byte as getdents64's d_type.
    static func directoryType(_ fileType: UInt8) -> UInt8 {
        switch fileType {
        case 1: return UInt8(DT_REG)
        case 2: return UInt8(DT_DIR)
        case 3: return UInt8(DT_CHR)
        case 4: return UInt8(DT_BLK)
        case 5: return UInt8(DT_FIFO)
        case 6: return UInt8(DT_SOCK)
        case 7: return UInt8(DT_LNK)
        default: return UInt8(DT_UNKNOWN)
        }
    }

    public func symlinkTarget(_ link: GuestRootNode) throws(SystemError) -> [UInt8] {
        let number = try Self.number(link)
        if let cached = caches.withLock({ $0.targets[number] }) { return cached }
        let linkInode = try inode(number)
        let volume = self.volume
        let target = try waiting { () async throws(Ext4Error) in try await volume.symlinkTarget(linkInode) }
        caches.withLock {
            if $0.targets.count >= Self.cachedEntries { $0.targets.removeAll(keepingCapacity: true) }
            $0.targets[number] = target
        }
        return target
    }

    public func openContents(of file: GuestRootNode) throws(SystemError) -> FileDescriptor {
        let number = try Self.number(file)
        if let opened = try reopenCached(number) { return opened }
        let fileInode = try inode(number)
        guard fileInode.isRegular else { throw SystemError(call: "disk file contents", errno: EINVAL) }
        let memfd = OwnedDescriptor(FileDescriptor(adopting: try retryingSyscall("memfd_create") { cshims_memfd_create("vmfork-rootfs-file") }))
        let fd = memfd.descriptor.rawValue
        guard fileInode.size <= Self.largestFile else {
            firstError.withLock { if $0 == nil { $0 = .corrupt(disk: self.volume.disk.layers[0].path, structure: "inode \(number)", problem: "\(fileInode.size) bytes, over the \(Self.largestFile) a rootfs file may have") } }
            throw SystemError(call: "disk file contents", errno: EFBIG)
        }
        let volume = self.volume
        try waiting { () async throws(Ext4Error) in try await volume.copy(fileInode, to: fd) }
        let stored = caches.withLock { caches in
            if caches.contents[number] != nil { return false }
            if caches.contents.count >= Self.cachedContents { caches.contents.removeAll() }
            caches.contents[number] = memfd
            return true
        }
        _ = stored
        guard let opened = try reopenCached(number) else { throw SystemError(call: "disk file contents", errno: EIO) }
        return opened
    }

    /// A new read-only description of the cached memfd of inode `number`, made under the
    /// lock so that an eviction cannot close the memfd (and its number be reused) meanwhile.
    private func reopenCached(_ number: UInt32) throws(SystemError) -> FileDescriptor? {
        let result: Result<FileDescriptor, SystemError>? = caches.withLock { caches in
            guard let fd = caches.contents[number]?.descriptor.rawValue else { return nil }
            do throws(SystemError) {
                return .success(try FileDescriptor.open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC))
            } catch { return .failure(error) }
        }
        switch consume result {
        case nil: return nil
        case .success(let fd)?: return fd
        case .failure(let error)?: throw error
        }
    }
}
