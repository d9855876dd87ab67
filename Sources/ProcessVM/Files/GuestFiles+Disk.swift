import CShims
import Foundation
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// The guest's file system calls on a rootfs that is not a host folder (`GuestRootFileSystem`,
/// an image's disk chain): the same Linux answers as the host-folder path gives, with paths
/// resolved here, inside the root (`resolveInRoot`). Each public call of `GuestFiles` takes
/// this path first when the VM has such a rootfs and the call concerns it; the host-folder
/// path is untouched by it.
extension GuestFiles {
    /// A table for a rootfs served by `rootFileSystem`, with the host descriptors `stdin`,
    /// `stdout`, `stderr` as guest descriptors 0, 1 and 2, as `init(rootfs:...)`.
    public convenience init(rootFileSystem: any GuestRootFileSystem, stdin: Int32, stdout: Int32, stderr: Int32,
                            descriptorLimit: Int = GuestFiles.defaultDescriptorLimit) throws(SystemError) {
        // The host root of such a table is a removed empty folder: nothing can be found in it,
        // so no host path lookup can ever reach a host file.
        var template = Array((NSTemporaryDirectory() + "/vmfork-diskroot-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError(call: "mkdtemp", errno: errno) }
        let folder = String(cString: made)
        let root: FileDescriptor
        do {
            root = try FileDescriptor.open(folder, CSHIMS_O_PATH | O_DIRECTORY)
        } catch {
            rmdir(folder)
            throw error
        }
        rmdir(folder)
        try self.init(root: root, disk: rootFileSystem, stdin: stdin, stdout: stdout, stderr: stderr, descriptorLimit: descriptorLimit)
    }

    /// The absolute guest path (dirfd, path) names on the disk rootfs, or nil when the call
    /// is not the disk's: no disk rootfs, an allowlisted host device, or an empty path on a
    /// descriptor that is not a disk file (a standard stream).
    func diskPath(_ dirfd: Int32, _ path: [UInt8], allowEmptyPath: Bool = false) throws(SystemError) -> [UInt8]? {
        guard roots.disk != nil else { return nil }
        var absolute: [UInt8]
        if path.first == GuestPath.slash {
            absolute = path
        } else {
            if dirfd == AT_FDCWD {
                absolute = workingDirectory
            } else {
                let file = try openFile(dirfd)
                guard let state = file.disk else {
                    if path.isEmpty, allowEmptyPath { return nil }
                    throw SystemError(call: "guest directory", errno: ENOTDIR)
                }
                guard state.node.isDirectory || path.isEmpty else { throw SystemError(call: "guest directory", errno: ENOTDIR) }
                absolute = state.path
            }
            if !path.isEmpty {
                if absolute.last != GuestPath.slash { absolute.append(GuestPath.slash) }
                absolute += path
            }
        }
        guard absolute.count < Int(PATH_MAX) else { throw SystemError(call: "guest path", errno: ENAMETOOLONG) }
        if GuestPath.allowlistedDevice(absolute) != nil { return nil }
        return absolute
    }

    /// What (dirfd, path) names on the disk, for the *at calls; nil as for `diskPath`.
    func diskTarget(_ dirfd: Int32, _ path: UnsafePointer<CChar>, followFinalSymlink: Bool, allowEmptyPath: Bool) throws(SystemError) -> ResolvedNode? {
        guard let disk = roots.disk else { return nil }
        let guestPath = try GuestPath.bytes(of: path)
        if guestPath.isEmpty {
            guard allowEmptyPath else { throw SystemError(call: "guest path", errno: ENOENT) }
            if dirfd != AT_FDCWD {
                guard let state = try openFile(dirfd).disk else { return nil }
                return ResolvedNode(node: try current(state.node), path: state.path)
            }
        }
        guard let absolute = try diskPath(dirfd, guestPath, allowEmptyPath: allowEmptyPath) else { return nil }
        return try disk.resolveInRoot(absolute, followFinalSymlink: followFinalSymlink)
    }

    /// openat(2) on the disk rootfs: an image's chain is read-only, as the host-folder rootfs
    /// (EROFS for writes and creation), a container's own disk takes them
    /// (`GuestFiles+DiskWrites`); EACCES for device nodes and FIFOs, ENXIO for sockets.
    func diskOpen(_ disk: any GuestRootFileSystem, _ absolute: [UInt8], _ request: OpenRequest, mode: UInt32 = 0o644) throws(SystemError) -> OpenFile {
        let resolved: ResolvedNode
        do {
            resolved = try disk.resolveInRoot(absolute, followFinalSymlink: request.flags & O_NOFOLLOW == 0)
        } catch {
            guard error.errno == ENOENT, request.creates else { throw error }
            var parent = absolute
            while parent.count > 1, parent.last == GuestPath.slash { parent.removeLast() }
            if let cut = parent.lastIndex(of: GuestPath.slash) { parent = Array(parent[...cut]) }
            guard try disk.resolveInRoot(parent, followFinalSymlink: true).node.isDirectory else { throw SystemError(call: "openat", errno: ENOTDIR) }
            if request.makesTemporaryFile { throw SystemError(call: "openat(O_TMPFILE)", errno: rootIsWritable ? EOPNOTSUPP : EROFS) }
            return try diskCreate(disk, absolute, request, mode: mode)
        }
        let node = resolved.node
        if request.isPathOnly {
            if request.flags & O_DIRECTORY != 0, !node.isDirectory { throw SystemError(call: "openat(O_DIRECTORY)", errno: ENOTDIR) }
            let file = OpenFile(host: try HostFileCalls.duplicate(roots.root.rawValue), isInsideRootfs: true, guestStatusFlags: CSHIMS_O_PATH)
            file.disk = DiskFileState(node: node, path: resolved.path)
            return file
        }
        if node.isSymlink { throw SystemError(call: "openat(O_NOFOLLOW)", errno: ELOOP) }
        if request.makesTemporaryFile { throw SystemError(call: "openat(O_TMPFILE)", errno: rootIsWritable ? EOPNOTSUPP : EROFS) }
        if request.creates, request.flags & O_EXCL != 0 { throw SystemError(call: "openat(O_EXCL)", errno: EEXIST) }
        if node.isDirectory, request.mayWrite || request.creates { throw SystemError(call: "openat", errno: EISDIR) }
        if request.flags & O_DIRECTORY != 0, !node.isDirectory { throw SystemError(call: "openat(O_DIRECTORY)", errno: ENOTDIR) }
        switch node.type {
        case GuestRootNode.FileType.characterDevice, GuestRootNode.FileType.blockDevice: throw SystemError(call: "openat(device in rootfs)", errno: EACCES)
        case GuestRootNode.FileType.fifo: throw SystemError(call: "openat(FIFO in rootfs)", errno: EACCES)
        case GuestRootNode.FileType.socket: throw SystemError(call: "openat(socket in rootfs)", errno: ENXIO)
        default: break
        }
        let file: OpenFile
        if request.mayWrite {
            file = OpenFile(host: try diskOpenForWriting(node, request), isInsideRootfs: true)
            if request.flags & O_ACCMODE != O_RDONLY { file.growth = (roots.disk as? any GuestWritableRootFileSystem)?.growthBudget }
        } else if node.isDirectory {
            file = OpenFile(host: try HostFileCalls.duplicate(roots.root.rawValue), isInsideRootfs: true,
                            guestStatusFlags: O_RDONLY | CSHIMS_O_LARGEFILE | O_DIRECTORY | (request.flags & O_NONBLOCK))
        } else {
            file = OpenFile(host: try disk.openContents(of: node), isInsideRootfs: true)
        }
        file.disk = DiskFileState(node: node, path: resolved.path)
        return file
    }

    /// getdents64(2) of a disk folder: linux_dirent64 records from the listing, as many as fit.
    func diskDirectoryEntries(_ disk: any GuestRootFileSystem, _ state: DiskFileState, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        guard state.node.isDirectory else { throw SystemError(call: "getdents64", errno: ENOTDIR) }
        if state.listing == nil { state.listing = try disk.entries(of: state.node) }
        let listing = state.listing!
        var written = 0
        while state.position < listing.count {
            var entry = listing[state.position]
            // ".." of the root is the root itself.
            if state.path == [GuestPath.slash], entry.name == [UInt8(ascii: "."), UInt8(ascii: ".")] { entry.inode = state.node.inode }
            let length = (19 + entry.name.count + 1 + 7) & ~7
            guard written + length <= buffer.count else {
                if written == 0 { throw SystemError(call: "getdents64", errno: EINVAL) }
                break
            }
            // unsafe: written + length <= buffer.count (checked above); stores are unaligned-safe.
            let record = UnsafeMutableRawBufferPointer(rebasing: buffer[written..<written + length])
            record.initializeMemory(as: UInt8.self, repeating: 0)
            record.storeBytes(of: entry.inode, toByteOffset: 0, as: UInt64.self)
            record.storeBytes(of: Int64(state.position + 1), toByteOffset: 8, as: Int64.self)
            record.storeBytes(of: UInt16(length), toByteOffset: 16, as: UInt16.self)
            record.storeBytes(of: entry.type, toByteOffset: 18, as: UInt8.self)
            for (index, byte) in entry.name.enumerated() { record[19 + index] = byte }
            written += length
            state.position += 1
        }
        return written
    }

    /// faccessat on a disk file: W_OK gives EROFS (the rootfs is read-only); the engine
    /// answers as root does otherwise (X_OK needs an execute bit on files).
    func diskAccess(_ node: GuestRootNode, mode: Int32) throws(SystemError) -> Int {
        if mode & W_OK != 0, !rootIsWritable, node.isRegular || node.isDirectory || node.isSymlink { throw SystemError(call: "faccessat(W_OK)", errno: EROFS) }
        if mode & X_OK != 0, !node.isDirectory, node.mode & 0o111 == 0 { throw SystemError(call: "faccessat(X_OK)", errno: EACCES) }
        return 0
    }
}
