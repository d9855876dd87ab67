import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// The guest's calls that change its root filesystem: served when the root is a container's
/// own disk (`GuestWritableRootFileSystem`), EROFS on every other root (the host folder and
/// an image's read-only chain), as on a read-only mount. Paths are resolved inside the root
/// as for reads (`resolveInRoot`); the root is handed a directory node and one name.
extension GuestFiles {
    private var writableRoot: (any GuestWritableRootFileSystem)? { roots.disk as? any GuestWritableRootFileSystem }

    /// The directory holding the last component of (dirfd, path), and that name, on a
    /// writable disk root; EROFS on any other root.
    /// `special` is the errno for a path naming the root itself or ending in "." or "..",
    /// which differs by call as in Linux (mkdir EEXIST, rmdir EBUSY/EINVAL, unlink EISDIR).
    func writableEntry(_ dirfd: Int32, _ path: UnsafePointer<CChar>, special: Int32) throws(SystemError) -> (root: any GuestWritableRootFileSystem, directory: GuestRootNode, name: [UInt8]) {
        let guestPath = try GuestPath.bytes(of: path)
        guard !guestPath.isEmpty else { throw SystemError(call: "guest path", errno: ENOENT) }
        guard let disk = roots.disk, let absolute = try diskPath(dirfd, guestPath), let writable = writableRoot else {
            throw SystemError(call: "change the root filesystem", errno: EROFS)
        }
        return try Self.entry(absolute, in: disk, writable, special: special)
    }

    /// Splits `absolute` into its resolved parent directory and last name.
    static func entry(_ absolute: [UInt8], in disk: any GuestRootFileSystem, _ writable: any GuestWritableRootFileSystem, special: Int32) throws(SystemError)
        -> (root: any GuestWritableRootFileSystem, directory: GuestRootNode, name: [UInt8]) {
        var trimmed = absolute
        while trimmed.count > 1, trimmed.last == GuestPath.slash { trimmed.removeLast() }
        guard trimmed.count > 1, let cut = trimmed.lastIndex(of: GuestPath.slash) else { throw SystemError(call: "change the root folder", errno: special) }
        let name = Array(trimmed[(cut + 1)...])
        guard name.count <= 255 else { throw SystemError(call: "guest path", errno: ENAMETOOLONG) }
        let parent = try disk.resolveInRoot(cut == 0 ? [GuestPath.slash] : Array(trimmed[..<cut]), followFinalSymlink: true)
        guard parent.node.isDirectory else { throw SystemError(call: "guest path", errno: ENOTDIR) }
        if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { throw SystemError(call: "guest path", errno: special) }
        return (writable, parent.node, name)
    }

    /// openat(O_CREAT) of a name that does not exist yet, on a writable disk root.
    func diskCreate(_ disk: any GuestRootFileSystem, _ absolute: [UInt8], _ request: OpenRequest, mode: UInt32) throws(SystemError) -> OpenFile {
        guard let writable = writableRoot else { throw SystemError(call: "openat(O_CREAT)", errno: EROFS) }
        if absolute.last == GuestPath.slash { throw SystemError(call: "openat(O_CREAT)", errno: EISDIR) }
        let (root, directory, name) = try Self.entry(absolute, in: disk, writable, special: EISDIR)
        let node = try root.createFile(name, in: directory, permissions: mode & 0o7777, creator: creator)
        let file = OpenFile(host: try root.openForWriting(node, accessFlags: request.flags, truncate: false), isInsideRootfs: true)
        if request.flags & O_ACCMODE != O_RDONLY { file.growth = root.growthBudget }
        var path = absolute
        while path.count > 1, path.last == GuestPath.slash { path.removeLast() }
        file.disk = DiskFileState(node: node, path: path)
        return file
    }

    /// openat for writing an existing regular file of a writable disk root (EROFS elsewhere).
    func diskOpenForWriting(_ node: GuestRootNode, _ request: OpenRequest) throws(SystemError) -> FileDescriptor {
        guard let writable = writableRoot else { throw SystemError(call: "openat", errno: EROFS) }
        return try writable.openForWriting(node, accessFlags: request.flags, truncate: request.flags & O_TRUNC != 0)
    }

    /// Whether the root takes writes (faccessat's W_OK).
    var rootIsWritable: Bool { writableRoot != nil }

    /// A disk node as it is now (a written file's size), for fstat.
    func current(_ node: GuestRootNode) throws(SystemError) -> GuestRootNode {
        guard let writable = writableRoot else { return node }
        return try writable.refreshed(node)
    }

    /// mkdirat(2); `mode` has the umask applied.
    public func mkdirat(dirfd: Int32, path: UnsafePointer<CChar>, mode: UInt32) -> Int {
        linuxResult { () throws(SystemError) in
            let (root, directory, name) = try writableEntry(dirfd, path, special: EEXIST)
            try root.makeDirectory(name, in: directory, permissions: mode & 0o7777, creator: creator)
            return 0
        }
    }

    /// unlinkat(2): AT_REMOVEDIR makes it rmdir.
    public func unlinkat(dirfd: Int32, path: UnsafePointer<CChar>, flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            guard flags & ~AT_REMOVEDIR == 0 else { throw SystemError(call: "unlinkat flags", errno: EINVAL) }
            let (root, directory, name) = try writableEntry(dirfd, path, special: flags & AT_REMOVEDIR != 0 ? EBUSY : EISDIR)
            try root.remove(name, in: directory, isDirectory: flags & AT_REMOVEDIR != 0)
            return 0
        }
    }

    /// renameat2(2) with flags 0 or RENAME_NOREPLACE.
    public func renameat2(oldDirfd: Int32, oldPath: UnsafePointer<CChar>, newDirfd: Int32, newPath: UnsafePointer<CChar>, flags: UInt32) -> Int {
        linuxResult { () throws(SystemError) in
            let noReplace: UInt32 = 1
            guard flags & ~noReplace == 0 else { throw SystemError(call: "renameat2 flags", errno: EINVAL) }
            let (root, from, name) = try writableEntry(oldDirfd, oldPath, special: EBUSY)
            let (_, to, newName) = try writableEntry(newDirfd, newPath, special: EBUSY)
            if flags & noReplace != 0, try root.child(newName, of: to) != nil { throw SystemError(call: "renameat2(RENAME_NOREPLACE)", errno: EEXIST) }
            try root.rename(name, in: from, to: newName, in: to)
            return 0
        }
    }

    /// symlinkat(2).
    public func symlinkat(target: UnsafePointer<CChar>, newDirfd: Int32, linkPath: UnsafePointer<CChar>) -> Int {
        linuxResult { () throws(SystemError) in
            let text = try GuestPath.bytes(of: target)
            guard !text.isEmpty else { throw SystemError(call: "symlinkat", errno: ENOENT) }
            let (root, directory, name) = try writableEntry(newDirfd, linkPath, special: EEXIST)
            if try GuestPath.bytes(of: linkPath).last == GuestPath.slash {
                // A new name with a trailing slash would be a folder's: ENOENT, as Linux (EEXIST if taken).
                throw SystemError(call: "symlinkat", errno: try root.child(name, of: directory) != nil ? EEXIST : ENOENT)
            }
            try root.makeSymlink(name, in: directory, target: text, creator: creator)
            return 0
        }
    }

    /// fchmodat(2) (chmod is this at AT_FDCWD); AT_SYMLINK_NOFOLLOW is refused as Linux does.
    public func fchmodat(dirfd: Int32, path: UnsafePointer<CChar>, mode: UInt32, flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            guard flags & ~(CSHIMS_AT_EMPTY_PATH) == 0 else { throw SystemError(call: "fchmodat flags", errno: flags & AT_SYMLINK_NOFOLLOW != 0 ? EOPNOTSUPP : EINVAL) }
            guard let target = try diskTarget(dirfd, path, followFinalSymlink: true, allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0),
                  let writable = writableRoot else { throw SystemError(call: "chmod", errno: EROFS) }
            try writable.setPermissions(of: target.node, mode)
            return 0
        }
    }

    /// fchmod(2).
    public func fchmod(_ fd: Int32, mode: UInt32) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            guard let state = file.disk, let writable = writableRoot else { throw SystemError(call: "fchmod", errno: file.isInsideRootfs ? EROFS : EPERM) }
            try writable.setPermissions(of: state.node, mode)
            return 0
        }
    }

    /// The caller of a chown or utimensat, for Linux's permission checks (root may do all).
    public struct Caller: Sendable {
        public var uid: UInt32
        public var gid: UInt32
        public init(uid: UInt32, gid: UInt32) {
            self.uid = uid
            self.gid = gid
        }
    }

    /// uid_t/gid_t -1: chown keeps that value.
    static let keepOwner = UInt32.max

    /// fchownat(2) (chown and lchown are this at AT_FDCWD, following the final symlink or
    /// not). Flags: AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH.
    public func fchownat(dirfd: Int32, path: UnsafePointer<CChar>, uid: UInt32, gid: UInt32, flags: Int32, caller: Caller) -> Int {
        linuxResult { () throws(SystemError) in
            guard flags & ~(AT_SYMLINK_NOFOLLOW | CSHIMS_AT_EMPTY_PATH) == 0 else { throw SystemError(call: "fchownat flags", errno: EINVAL) }
            guard let target = try diskTarget(dirfd, path, followFinalSymlink: flags & AT_SYMLINK_NOFOLLOW == 0, allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0),
                  let writable = writableRoot else { throw SystemError(call: "chown", errno: EROFS) }
            try Self.changeOwner(of: target.node, uid: uid, gid: gid, caller: caller, on: writable)
            return 0
        }
    }

    /// fchown(2): a descriptor of a disk file (EBADF for an O_PATH one, as Linux).
    public func fchown(_ fd: Int32, uid: UInt32, gid: UInt32, caller: Caller) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            if let flags = file.guestStatusFlags, flags & CSHIMS_O_PATH != 0 { throw SystemError(call: "fchown(O_PATH)", errno: EBADF) }
            guard let state = file.disk, let writable = writableRoot else { throw SystemError(call: "fchown", errno: file.isInsideRootfs ? EROFS : EPERM) }
            try Self.changeOwner(of: try current(state.node), uid: uid, gid: gid, caller: caller, on: writable)
            return 0
        }
    }

    /// chown_ok and chgrp_ok of Linux's setattr_prepare, then the change.
    static func changeOwner(of node: GuestRootNode, uid: UInt32, gid: UInt32, caller: Caller, on writable: any GuestWritableRootFileSystem) throws(SystemError) {
        let newUID = uid == keepOwner ? nil : uid
        let newGID = gid == keepOwner ? nil : gid
        if caller.uid != 0 {
            let owns = node.uid == caller.uid
            if let newUID, !(owns && newUID == node.uid) { throw SystemError(call: "chown", errno: EPERM) }
            if let newGID, !(owns && (newGID == node.gid || newGID == caller.gid)) { throw SystemError(call: "chown", errno: EPERM) }
        }
        try writable.setOwner(of: node, uid: newUID, gid: newGID)
    }

    /// utimensat(2) (and utimes, utime, futimesat, futimens made into it): `times` nil sets
    /// both to now; each `nanoseconds` may be UTIME_NOW or UTIME_OMIT. A nil `path` with a
    /// descriptor is futimens (flags must be 0); with AT_FDCWD it is EFAULT, as Linux.
    public func utimensat(dirfd: Int32, path: UnsafePointer<CChar>?, times: [(seconds: Int64, nanoseconds: Int64)]?, flags: Int32, caller: Caller) -> Int {
        linuxResult { () throws(SystemError) in
            if let times {
                guard times.count == 2 else { throw SystemError(call: "utimensat times", errno: EINVAL) }
                // Nothing to do: Linux does not even look the path up.
                if times[0].nanoseconds == Self.utimeOmit, times[1].nanoseconds == Self.utimeOmit { return 0 }
            }
            let target: GuestRootNode
            let writable: (any GuestWritableRootFileSystem)?
            if let path {
                guard flags & ~(AT_SYMLINK_NOFOLLOW | CSHIMS_AT_EMPTY_PATH) == 0 else { throw SystemError(call: "utimensat flags", errno: EINVAL) }
                guard let resolved = try diskTarget(dirfd, path, followFinalSymlink: flags & AT_SYMLINK_NOFOLLOW == 0, allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0) else {
                    throw SystemError(call: "utimensat", errno: EROFS)
                }
                target = resolved.node
                writable = writableRoot
            } else {
                guard dirfd != AT_FDCWD else { throw SystemError(call: "utimensat", errno: EFAULT) }
                guard flags == 0 else { throw SystemError(call: "futimens flags", errno: EINVAL) }
                let file = try openFile(dirfd)
                if let status = file.guestStatusFlags, status & CSHIMS_O_PATH != 0 { throw SystemError(call: "futimens(O_PATH)", errno: EBADF) }
                guard let state = file.disk else { throw SystemError(call: "futimens", errno: file.isInsideRootfs ? EROFS : EPERM) }
                target = try current(state.node)
                writable = writableRoot
            }
            var stamps: [GuestTimestamp] = [.now, .now]
            if let times {
                for (index, time) in times.enumerated() {
                    switch time.nanoseconds {
                    case Self.utimeNow: stamps[index] = .now
                    case Self.utimeOmit: stamps[index] = .omit
                    case 0..<1_000_000_000: stamps[index] = .at(seconds: time.seconds, nanoseconds: UInt32(time.nanoseconds))
                    default: throw SystemError(call: "utimensat times", errno: EINVAL)
                    }
                }
            }
            guard let writable else { throw SystemError(call: "utimensat", errno: EROFS) }
            if caller.uid != 0, target.uid != caller.uid {
                // Another's file: given times need its owner (EPERM); now needs write permission.
                if stamps.contains(where: { if case .at = $0 { return true } else { return false } }) { throw SystemError(call: "utimensat", errno: EPERM) }
                let bits = target.gid == caller.gid ? (target.mode >> 3) & 7 : target.mode & 7
                if bits & 2 == 0 { throw SystemError(call: "utimensat", errno: EACCES) }
            }
            try writable.setTimes(of: target, access: stamps[0], modification: stamps[1])
            return 0
        }
    }

    /// UTIME_NOW and UTIME_OMIT: (1 << 30) - 1 and (1 << 30) - 2.
    static let utimeNow: Int64 = (1 << 30) - 1
    static let utimeOmit: Int64 = (1 << 30) - 2

    /// linkat(2) (link is this at AT_FDCWD without flags). Flags: AT_SYMLINK_FOLLOW,
    /// AT_EMPTY_PATH (the descriptor's own file).
    public func linkat(oldDirfd: Int32, oldPath: UnsafePointer<CChar>, newDirfd: Int32, newPath: UnsafePointer<CChar>, flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            guard flags & ~(Self.atSymlinkFollow | CSHIMS_AT_EMPTY_PATH) == 0 else { throw SystemError(call: "linkat flags", errno: EINVAL) }
            let old = try diskTarget(oldDirfd, oldPath, followFinalSymlink: flags & Self.atSymlinkFollow != 0, allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0)
            let (root, directory, name) = try writableEntry(newDirfd, newPath, special: EEXIST)
            if try root.child(name, of: directory) != nil { throw SystemError(call: "linkat", errno: EEXIST) }
            // A new name with a trailing slash would be a folder's: ENOENT, as Linux.
            if try GuestPath.bytes(of: newPath).last == GuestPath.slash { throw SystemError(call: "linkat", errno: ENOENT) }
            // Not on the disk (a host device of the allowlist): another file system.
            guard let old else { throw SystemError(call: "linkat", errno: EXDEV) }
            if old.node.isDirectory { throw SystemError(call: "linkat", errno: EPERM) }
            try root.link(old.node, as: name, in: directory)
            return 0
        }
    }

    /// AT_SYMLINK_FOLLOW.
    static let atSymlinkFollow: Int32 = 0x400

    /// truncate(2).
    public func truncate(path: UnsafePointer<CChar>, length: Int64) -> Int {
        linuxResult { () throws(SystemError) in
            guard length >= 0 else { throw SystemError(call: "truncate", errno: EINVAL) }
            guard let target = try diskTarget(AT_FDCWD, path, followFinalSymlink: true, allowEmptyPath: false),
                  let writable = writableRoot else { throw SystemError(call: "truncate", errno: EROFS) }
            if target.node.isDirectory { throw SystemError(call: "truncate", errno: EISDIR) }
            guard target.node.isRegular else { throw SystemError(call: "truncate", errno: EINVAL) }
            try writable.truncate(target.node, to: length)
            return 0
        }
    }

    /// ftruncate(2): a file of a writable disk open for writing (its memfd); EINVAL for
    /// anything else, as for a descriptor Linux cannot truncate (the standard streams are
    /// the engine's files, never the guest's to truncate).
    public func ftruncate(_ fd: Int32, length: Int64) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            guard length >= 0, file.disk?.node.isRegular == true, let writable = writableRoot else { throw SystemError(call: "ftruncate", errno: EINVAL) }
            try writable.truncate(descriptor: file.hostFD, of: file.disk!.node, to: length)
            return 0
        }
    }

    /// fsync(2), fdatasync(2) and syncfs(2) of an open descriptor, and sync(2) (`fd` nil):
    /// every change of a writable disk root reaches its disk before they return.
    public func sync(_ fd: Int32?) -> Int {
        linuxResult { () throws(SystemError) in
            if let fd { _ = try openFile(fd) }
            try writableRoot?.sync()
            return 0
        }
    }

    /// Writes the container's changes to its disk: its clean end.
    public func syncRoot() throws(SystemError) {
        try writableRoot?.sync()
    }
}
