import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// What a root filesystem that is not a host folder tells about one of its files: enough for
/// stat, statx and getdents.
public struct GuestRootNode: Sendable, Equatable {
    public var inode: UInt64
    /// st_mode: type and permission bits.
    public var mode: UInt32
    public var links: UInt64
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    /// st_blocks, 512-byte units.
    public var blocks: UInt64
    public var deviceMajor: UInt32
    public var deviceMinor: UInt32
    public var accessTime: (seconds: Int64, nanoseconds: UInt32)
    public var modificationTime: (seconds: Int64, nanoseconds: UInt32)
    public var changeTime: (seconds: Int64, nanoseconds: UInt32)

    public init(inode: UInt64, mode: UInt32, links: UInt64, uid: UInt32, gid: UInt32, size: UInt64, blocks: UInt64,
                deviceMajor: UInt32 = 0, deviceMinor: UInt32 = 0, accessTime: (Int64, UInt32), modificationTime: (Int64, UInt32), changeTime: (Int64, UInt32)) {
        self.inode = inode
        self.mode = mode
        self.links = links
        self.uid = uid
        self.gid = gid
        self.size = size
        self.blocks = blocks
        self.deviceMajor = deviceMajor
        self.deviceMinor = deviceMinor
        self.accessTime = accessTime
        self.modificationTime = modificationTime
        self.changeTime = changeTime
    }

    public static func == (a: GuestRootNode, b: GuestRootNode) -> Bool {
        a.inode == b.inode && a.mode == b.mode && a.size == b.size && a.links == b.links
    }

    /// st_mode's file types (S_IFMT and its values).
    public enum FileType {
        public static let mask: UInt32 = 0o170000
        public static let directory: UInt32 = 0o040000
        public static let regular: UInt32 = 0o100000
        public static let symlink: UInt32 = 0o120000
        public static let characterDevice: UInt32 = 0o020000
        public static let blockDevice: UInt32 = 0o060000
        public static let fifo: UInt32 = 0o010000
        public static let socket: UInt32 = 0o140000
    }

    public var type: UInt32 { mode & FileType.mask }
    public var isDirectory: Bool { type == FileType.directory }
    public var isSymlink: Bool { type == FileType.symlink }
    public var isRegular: Bool { type == FileType.regular }
}

/// One directory entry as getdents64 reports it.
public struct GuestRootEntry: Sendable, Equatable {
    public var name: [UInt8]
    public var inode: UInt64
    /// d_type (DT_REG, DT_DIR, ...).
    public var type: UInt8

    public init(name: [UInt8], inode: UInt64, type: UInt8) {
        self.name = name
        self.inode = inode
        self.type = type
    }
}

/// The seam between the guest's file system calls and a root filesystem that is not a host
/// folder (an image's disk chain): the few primitives `GuestFiles` builds every call on. Path
/// resolution, with its confinement to the root, stays in `GuestFiles` (`resolveInRoot`),
/// so an implementation cannot get it wrong. Implementations answer with `SystemError`s
/// carrying the errno the guest should see (EIO for a disk that cannot be read).
/// The host-folder rootfs does not go through this protocol: it keeps its own path, in
/// which the kernel resolves paths (openat2 RESOLVE_IN_ROOT).
public protocol GuestRootFileSystem: AnyObject, Sendable {
    /// st_dev for every file.
    var device: UInt64 { get }
    func root() throws(SystemError) -> GuestRootNode
    /// The entry `name` of `directory` (one component, never "." or ".."), or nil.
    func child(_ name: [UInt8], of directory: GuestRootNode) throws(SystemError) -> GuestRootNode?
    /// The directory's entries, "." and ".." first.
    func entries(of directory: GuestRootNode) throws(SystemError) -> [GuestRootEntry]
    func symlinkTarget(_ link: GuestRootNode) throws(SystemError) -> [UInt8]
    /// A new read-only host descriptor (its own offset) of a file holding the regular file's
    /// bytes: what the guest's reads and mmaps of it are served from.
    func openContents(of file: GuestRootNode) throws(SystemError) -> FileDescriptor
}

/// What `resolveInRoot` found: the node, and its guest path (absolute, without symlinks).
struct ResolvedNode {
    let node: GuestRootNode
    let path: [UInt8]
}

extension GuestRootFileSystem {
    /// Walks the absolute guest path `path` from the root as Linux would inside a chroot:
    /// "." stays, ".." of the root is the root, symlinks are followed (the last one only if
    /// `followFinalSymlink`), absolute targets restart at the root, at most 40 of them (ELOOP);
    /// ENOENT, ENOTDIR and ENAMETOOLONG as Linux gives them. Nothing outside the root exists.
    func resolveInRoot(_ path: [UInt8], followFinalSymlink: Bool) throws(SystemError) -> ResolvedNode {
        let slash = GuestPath.slash
        var pending: [[UInt8]] = path.split(separator: slash, omittingEmptySubsequences: true).map(Array.init).reversed()
        let trailingSlash = path.count > 1 && path.last == slash
        var stack: [(node: GuestRootNode, name: [UInt8])] = []
        let rootNode = try root()
        var current = rootNode
        var links = 0
        while let component = pending.popLast() {
            if component == [UInt8(ascii: ".")] { continue }
            if component == [UInt8(ascii: "."), UInt8(ascii: ".")] {
                if stack.popLast() != nil { current = stack.last?.node ?? rootNode }
                continue
            }
            guard component.count <= 255 else { throw SystemError(call: "guest path", errno: ENAMETOOLONG) }
            guard current.isDirectory else { throw SystemError(call: "guest path", errno: ENOTDIR) }
            guard let next = try child(component, of: current) else { throw SystemError(call: "guest path", errno: ENOENT) }
            let isLast = pending.isEmpty
            if next.isSymlink, !isLast || followFinalSymlink || trailingSlash {
                links += 1
                guard links <= 40 else { throw SystemError(call: "guest path", errno: ELOOP) }
                let target = try symlinkTarget(next)
                guard !target.isEmpty else { throw SystemError(call: "guest path", errno: ENOENT) }
                if target.first == slash {
                    stack = []
                    current = rootNode
                }
                pending += target.split(separator: slash, omittingEmptySubsequences: true).map(Array.init).reversed()
                continue
            }
            stack.append((next, component))
            current = next
        }
        if trailingSlash, !current.isDirectory { throw SystemError(call: "guest path", errno: ENOTDIR) }
        var guestPath: [UInt8] = []
        for (_, name) in stack { guestPath.append(slash); guestPath += name }
        return ResolvedNode(node: current, path: guestPath.isEmpty ? [slash] : guestPath)
    }
}

/// The kernel's stat and statx layouts (x86-64), filled from a `GuestRootNode`. The callers
/// checked that the buffer holds the whole struct (`requireRoom`: 144 and 256 bytes), so every
/// offset below is inside it; the stores are unaligned-safe (guest memory need not be aligned).
enum GuestStatBytes {
    static func stat(_ node: GuestRootNode, device: UInt64, into buffer: UnsafeMutableRawBufferPointer) {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.storeBytes(of: device, toByteOffset: 0, as: UInt64.self)
        buffer.storeBytes(of: node.inode, toByteOffset: 8, as: UInt64.self)
        buffer.storeBytes(of: node.links, toByteOffset: 16, as: UInt64.self)
        buffer.storeBytes(of: node.mode, toByteOffset: 24, as: UInt32.self)
        buffer.storeBytes(of: node.uid, toByteOffset: 28, as: UInt32.self)
        buffer.storeBytes(of: node.gid, toByteOffset: 32, as: UInt32.self)
        buffer.storeBytes(of: encodedDevice(node.deviceMajor, node.deviceMinor), toByteOffset: 40, as: UInt64.self)
        buffer.storeBytes(of: node.size, toByteOffset: 48, as: UInt64.self)
        buffer.storeBytes(of: UInt64(4096), toByteOffset: 56, as: UInt64.self)
        buffer.storeBytes(of: node.blocks, toByteOffset: 64, as: UInt64.self)
        for (time, offset) in [(node.accessTime, 72), (node.modificationTime, 88), (node.changeTime, 104)] {
            buffer.storeBytes(of: time.seconds, toByteOffset: offset, as: Int64.self)
            buffer.storeBytes(of: UInt64(time.nanoseconds), toByteOffset: offset + 8, as: UInt64.self)
        }
    }

    /// STATX_BASIC_STATS: type, mode, nlink, uid, gid, atime, mtime, ctime, ino, size, blocks.
    static let basicStats: UInt32 = 0x7FF

    static func statx(_ node: GuestRootNode, device: UInt64, into buffer: UnsafeMutableRawBufferPointer) {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.storeBytes(of: basicStats, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: UInt32(4096), toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: UInt32(truncatingIfNeeded: node.links), toByteOffset: 16, as: UInt32.self)
        buffer.storeBytes(of: node.uid, toByteOffset: 20, as: UInt32.self)
        buffer.storeBytes(of: node.gid, toByteOffset: 24, as: UInt32.self)
        buffer.storeBytes(of: UInt16(truncatingIfNeeded: node.mode), toByteOffset: 28, as: UInt16.self)
        buffer.storeBytes(of: node.inode, toByteOffset: 32, as: UInt64.self)
        buffer.storeBytes(of: node.size, toByteOffset: 40, as: UInt64.self)
        buffer.storeBytes(of: node.blocks, toByteOffset: 48, as: UInt64.self)
        for (time, offset) in [(node.accessTime, 64), (node.changeTime, 96), (node.modificationTime, 112)] {
            buffer.storeBytes(of: time.seconds, toByteOffset: offset, as: Int64.self)
            buffer.storeBytes(of: time.nanoseconds, toByteOffset: offset + 8, as: UInt32.self)
        }
        buffer.storeBytes(of: node.deviceMajor, toByteOffset: 128, as: UInt32.self)
        buffer.storeBytes(of: node.deviceMinor, toByteOffset: 132, as: UInt32.self)
        buffer.storeBytes(of: UInt32(truncatingIfNeeded: (device >> 8) & 0xFFF), toByteOffset: 136, as: UInt32.self)
        buffer.storeBytes(of: UInt32(truncatingIfNeeded: device & 0xFF), toByteOffset: 140, as: UInt32.self)
    }

    /// Linux's dev_t: major in bits 8-19 and 32-43, minor in bits 0-7 and 20-31.
    static func encodedDevice(_ major: UInt32, _ minor: UInt32) -> UInt64 {
        let major = UInt64(major), minor = UInt64(minor)
        return (major & 0xFFF) << 8 | (major & ~0xFFF) << 32 | (minor & 0xFF) | (minor & ~0xFF) << 12
    }
}
