import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

extension GuestFiles {
    /// Resolves a guest (dirfd, path) to the host: the one place guest paths meet host
    /// descriptors. Relative paths are joined to the guest path of the working directory or
    /// of `dirfd`, so that the kernel walks every path from the root with RESOLVE_IN_ROOT:
    /// starting the walk at `dirfd` instead would make that folder the root for `..` and for
    /// absolute symlinks. An empty `path` names the starting folder itself.
    func locate(_ dirfd: Int32, _ path: [UInt8]) throws(SystemError) -> HostLocation {
        var absolute: [UInt8]
        if path.first == GuestPath.slash {
            absolute = path
        } else {
            absolute = dirfd == AT_FDCWD ? workingDirectory : try guestDirectoryPath(ofHost: openFile(dirfd).hostFD)
            if !path.isEmpty {
                if absolute.last != GuestPath.slash { absolute.append(GuestPath.slash) }
                absolute += path
            }
        }
        guard absolute.count < Int(PATH_MAX) else { throw SystemError(call: "guest path", errno: ENAMETOOLONG) }
        if let device = GuestPath.allowlistedDevice(absolute) {
            return HostLocation(base: roots.hostDevices.rawValue, path: device,
                                resolve: CSHIMS_RESOLVE_BENEATH | CSHIMS_RESOLVE_NO_SYMLINKS, isInsideRootfs: false)
        }
        return HostLocation(base: roots.root.rawValue, path: absolute,
                            resolve: CSHIMS_RESOLVE_IN_ROOT | CSHIMS_RESOLVE_NO_MAGICLINKS, isInsideRootfs: true)
    }

    /// The guest path of a folder opened from the root (ENOTDIR for anything else; ENOENT
    /// for a folder outside the root, such as one passed in as a standard stream).
    func guestDirectoryPath(ofHost fd: Int32) throws(SystemError) -> [UInt8] {
        guard try HostFileCalls.fileType(fd) == S_IFDIR else { throw SystemError(call: "guest directory", errno: ENOTDIR) }
        let host = try HostFileCalls.path(of: fd)
        if host == roots.hostPath { return [GuestPath.slash] }
        if roots.hostPath == [GuestPath.slash] { return host }
        guard host.count > roots.hostPath.count, host.starts(with: roots.hostPath), host[roots.hostPath.count] == GuestPath.slash else {
            throw SystemError(call: "guest directory", errno: ENOENT)
        }
        return Array(host[roots.hostPath.count...])
    }

    /// Runs `body` on a host descriptor for what (dirfd, path) names, the way the *at()
    /// calls look things up: the final symlink followed or not; an empty path, where allowed
    /// (AT_EMPTY_PATH), naming `dirfd` itself or the working directory.
    func withTarget(_ dirfd: Int32, _ path: UnsafePointer<CChar>, followFinalSymlink: Bool, allowEmptyPath: Bool,
                    _ body: (_ hostFD: Int32, _ isInsideRootfs: Bool) throws(SystemError) -> Int) throws(SystemError) -> Int {
        let guestPath = try GuestPath.bytes(of: path)
        if guestPath.isEmpty {
            guard allowEmptyPath else { throw SystemError(call: "guest path", errno: ENOENT) }
            if dirfd != AT_FDCWD {
                let file = try openFile(dirfd)
                return try body(file.hostFD, file.isInsideRootfs)
            }
        }
        let location = try locate(dirfd, guestPath)
        let target = try location.open(flags: CSHIMS_O_PATH | (followFinalSymlink ? 0 : O_NOFOLLOW))
        return try body(target.rawValue, location.isInsideRootfs)
    }

    // MARK: - Opening

    /// openat(2). The root filesystem is read-only: opening one of its files for writing,
    /// truncating or creating gives EROFS, and its device nodes cannot be opened (EACCES, as
    /// on a nodev mount). Nor can its FIFOs (EACCES) or sockets (ENXIO, as Linux answers):
    /// the rootfs is shared by every container of an image and with the host, so a FIFO in
    /// it would be a channel between tenants, and opening one waits for the other end, a
    /// wait no host call of the engine may make. `mode` only matters when a file is
    /// created, which never happens. No open waits: the file is examined through an O_PATH
    /// descriptor first, and only regular files and folders are opened for real.
    /// `chargedToBudget` false is for the engine's own opens (the program it loads), which
    /// the guests' shared budget must not refuse (see `GuestDescriptorBudget`).
    public func openat(dirfd: Int32, path: UnsafePointer<CChar>, flags: Int32, mode: UInt32, chargedToBudget: Bool = true) -> Int {
        linuxResult { () throws(SystemError) in
            let request = OpenRequest(guestFlags: flags)
            try request.validate()
            let index = try lowestFreeDescriptor(from: 0)
            if chargedToBudget { try GuestDescriptorBudget.requireRoom() }
            let guestPath = try GuestPath.bytes(of: path)
            guard !guestPath.isEmpty else { throw SystemError(call: "openat", errno: ENOENT) }
            if let terminal = try terminalToOpen(path, flags: flags) {
                return install(terminal, at: index, closeOnExec: flags & O_CLOEXEC != 0)
            }
            if let disk = roots.disk, let absolute = try diskPath(dirfd, guestPath) {
                return install(try diskOpen(disk, absolute, request, mode: mode), at: index, closeOnExec: flags & O_CLOEXEC != 0)
            }
            let location = try locate(dirfd, guestPath)
            let file = OpenFile(host: try open(location, request), isInsideRootfs: location.isInsideRootfs)
            return install(file, at: index, closeOnExec: flags & O_CLOEXEC != 0)
        }
    }

    /// Opens `location` for `request` in two steps: an O_PATH descriptor from the confined
    /// walk, whose type decides the Linux answer without opening the file for real (opening a
    /// device runs its driver), then, if allowed, a reopen of that very inode through
    /// /proc/self/fd with the guest's access mode.
    private func open(_ location: HostLocation, _ request: OpenRequest) throws(SystemError) -> FileDescriptor {
        let probe: FileDescriptor
        do {
            probe = try location.open(flags: CSHIMS_O_PATH | (request.flags & (O_NOFOLLOW | O_DIRECTORY)))
        } catch {
            guard error.errno == ENOENT, request.creates, location.isInsideRootfs else { throw error }
            _ = try location.parent.open(flags: CSHIMS_O_PATH | O_DIRECTORY)
            throw SystemError(call: "openat(O_CREAT)", errno: EROFS)
        }
        if request.isPathOnly { return probe }
        let type = try HostFileCalls.fileType(probe.rawValue)
        if type == S_IFLNK { throw SystemError(call: "openat(O_NOFOLLOW)", errno: ELOOP) }
        if request.makesTemporaryFile {
            throw SystemError(call: "openat(O_TMPFILE)", errno: location.isInsideRootfs ? EROFS : ENOTDIR)
        }
        if request.creates, request.flags & O_EXCL != 0 { throw SystemError(call: "openat(O_EXCL)", errno: EEXIST) }
        if type == S_IFDIR, request.mayWrite || request.creates { throw SystemError(call: "openat", errno: EISDIR) }
        if location.isInsideRootfs {
            if type == S_IFCHR || type == S_IFBLK { throw SystemError(call: "openat(device in rootfs)", errno: EACCES) }
            if type == S_IFIFO { throw SystemError(call: "openat(FIFO in rootfs)", errno: EACCES) }
            if type == S_IFSOCK { throw SystemError(call: "openat(socket in rootfs)", errno: ENXIO) }
            if request.mayWrite { throw SystemError(call: "openat", errno: EROFS) }
        }
        return try FileDescriptor.open("/proc/self/fd/\(probe.rawValue)", request.reopenFlags)
    }

    // MARK: - Looking at files

    /// newfstatat(2): the kernel's struct stat bytes (144) for what (dirfd, path) names.
    /// Flags: AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH, AT_NO_AUTOMOUNT.
    public func fstatat(dirfd: Int32, path: UnsafePointer<CChar>, into buffer: UnsafeMutableRawBufferPointer, flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            guard flags & ~(AT_SYMLINK_NOFOLLOW | CSHIMS_AT_EMPTY_PATH | CSHIMS_AT_NO_AUTOMOUNT) == 0 else {
                throw SystemError(call: "fstatat flags", errno: EINVAL)
            }
            try requireRoom(buffer, CSHIMS_STAT_SIZE)
            if namesTerminal(dirfd: dirfd, path: path, emptyPathAllowed: flags & CSHIMS_AT_EMPTY_PATH != 0, followsLink: flags & AT_SYMLINK_NOFOLLOW == 0) {
                GuestStatBytes.terminal(into: buffer)
                return 0
            }
            if let disk = roots.disk, let target = try diskTarget(dirfd, path, followFinalSymlink: flags & AT_SYMLINK_NOFOLLOW == 0,
                                                                 allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0) {
                GuestStatBytes.stat(target.node, device: disk.device, into: buffer)
                return 0
            }
            return try withTarget(dirfd, path, followFinalSymlink: flags & AT_SYMLINK_NOFOLLOW == 0,
                                  allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0) { (hostFD, _) throws(SystemError) in
                Int(try retryingSyscall("fstatat") { cshims_fstatat_bytes(hostFD, "", buffer.baseAddress, CSHIMS_AT_EMPTY_PATH) })
            }
        }
    }

    /// statx(2): the kernel's struct statx bytes (256). Flags: AT_SYMLINK_NOFOLLOW,
    /// AT_EMPTY_PATH, AT_NO_AUTOMOUNT and the AT_STATX_* sync type.
    public func statx(dirfd: Int32, path: UnsafePointer<CChar>, flags: Int32, mask: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        linuxResult { () throws(SystemError) in
            let syncType = flags & CSHIMS_AT_STATX_SYNC_TYPE
            guard flags & ~(AT_SYMLINK_NOFOLLOW | CSHIMS_AT_EMPTY_PATH | CSHIMS_AT_NO_AUTOMOUNT | CSHIMS_AT_STATX_SYNC_TYPE) == 0,
                  syncType != CSHIMS_AT_STATX_SYNC_TYPE, mask & CSHIMS_STATX_RESERVED == 0 else {
                throw SystemError(call: "statx flags", errno: EINVAL)
            }
            try requireRoom(buffer, CSHIMS_STATX_SIZE)
            if namesTerminal(dirfd: dirfd, path: path, emptyPathAllowed: flags & CSHIMS_AT_EMPTY_PATH != 0, followsLink: flags & AT_SYMLINK_NOFOLLOW == 0) {
                GuestStatBytes.terminalStatx(into: buffer)
                return 0
            }
            if let disk = roots.disk, let target = try diskTarget(dirfd, path, followFinalSymlink: flags & AT_SYMLINK_NOFOLLOW == 0,
                                                                 allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0) {
                GuestStatBytes.statx(target.node, device: disk.device, into: buffer)
                return 0
            }
            return try withTarget(dirfd, path, followFinalSymlink: flags & AT_SYMLINK_NOFOLLOW == 0,
                                  allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0) { (hostFD, _) throws(SystemError) in
                Int(try retryingSyscall("statx") {
                    cshims_statx_bytes(hostFD, "", CSHIMS_AT_EMPTY_PATH | syncType, mask, buffer.baseAddress)
                })
            }
        }
    }

    /// readlinkat(2): the link's text as stored (absolute links read as the guest wrote
    /// them), truncated to the buffer, without a NUL.
    public func readlinkat(dirfd: Int32, path: UnsafePointer<CChar>, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        linuxResult { () throws(SystemError) in
            guard let base = buffer.baseAddress, buffer.count > 0 else { throw SystemError(call: "readlinkat", errno: EINVAL) }
            let emptyPath = path.pointee == 0
            if let link = terminalLink(path) {
                let count = min(link.count, buffer.count)
                // unsafe: count is at most the buffer's size and the link's length.
                link.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: count) }
                return count
            }
            if let disk = roots.disk, let target = try diskTarget(dirfd, path, followFinalSymlink: false, allowEmptyPath: true) {
                guard target.node.isSymlink else { throw SystemError(call: "readlinkat", errno: emptyPath ? ENOENT : EINVAL) }
                let text = try disk.symlinkTarget(target.node)
                let count = min(text.count, buffer.count)
                // unsafe: count is at most the buffer's size and the target's length.
                base.copyMemory(from: text, byteCount: count)
                return count
            }
            return try withTarget(dirfd, path, followFinalSymlink: false, allowEmptyPath: true) { (hostFD, _) throws(SystemError) in
                guard try HostFileCalls.fileType(hostFD) == S_IFLNK else {
                    throw SystemError(call: "readlinkat", errno: emptyPath ? ENOENT : EINVAL)
                }
                return try retryingSyscall("readlinkat") {
                    // unsafe: `base` starts the non-empty guest buffer (checked above) and readlinkat writes at most buffer.count raw bytes into it.
                    Glibc.readlinkat(hostFD, "", base.assumingMemoryBound(to: CChar.self), buffer.count)
                }
            }
        }
    }

    /// faccessat2(2) (faccessat(2) is this with `flags` 0). Asking for write access to a
    /// file, folder or symlink of the root filesystem gives EROFS, as on a read-only mount.
    public func faccessat(dirfd: Int32, path: UnsafePointer<CChar>, mode: Int32, flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            guard mode & ~(R_OK | W_OK | X_OK) == 0,
                  flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | CSHIMS_AT_EMPTY_PATH) == 0 else {
                throw SystemError(call: "faccessat", errno: EINVAL)
            }
            if roots.disk != nil, let target = try diskTarget(dirfd, path, followFinalSymlink: flags & AT_SYMLINK_NOFOLLOW == 0,
                                                             allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0) {
                return try diskAccess(target.node, mode: mode)
            }
            return try withTarget(dirfd, path, followFinalSymlink: flags & AT_SYMLINK_NOFOLLOW == 0,
                                  allowEmptyPath: flags & CSHIMS_AT_EMPTY_PATH != 0) { (hostFD, isInsideRootfs) throws(SystemError) in
                if mode & W_OK != 0, isInsideRootfs, [S_IFREG, S_IFDIR, S_IFLNK].contains(try HostFileCalls.fileType(hostFD)) {
                    throw SystemError(call: "faccessat(W_OK)", errno: EROFS)
                }
                return Int(try retryingSyscall("faccessat") {
                    Glibc.faccessat(hostFD, "", mode, CSHIMS_AT_EMPTY_PATH | (flags & AT_EACCESS))
                })
            }
        }
    }

    // MARK: - Working directory

    /// getcwd(2): the guest's working directory, rooted at "/"; the result is its length
    /// including the NUL, as the Linux system call returns (ERANGE if it does not fit).
    public func getcwd(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let needed = workingDirectory.count + 1
        guard let base = buffer.baseAddress, buffer.count >= needed else { return -Int(ERANGE) }
        base.copyMemory(from: workingDirectory, byteCount: workingDirectory.count)
        base.storeBytes(of: 0, toByteOffset: workingDirectory.count, as: UInt8.self)
        return needed
    }

    /// chdir(2).
    public func chdir(_ path: UnsafePointer<CChar>) -> Int {
        linuxResult { () throws(SystemError) in
            let guestPath = try GuestPath.bytes(of: path)
            guard !guestPath.isEmpty else { throw SystemError(call: "chdir", errno: ENOENT) }
            if let disk = roots.disk, let absolute = try diskPath(AT_FDCWD, guestPath) {
                let target = try disk.resolveInRoot(absolute, followFinalSymlink: true)
                guard target.node.isDirectory else { throw SystemError(call: "chdir", errno: ENOTDIR) }
                workingDirectory = target.path
                return 0
            }
            let directory = try locate(AT_FDCWD, guestPath).open(flags: CSHIMS_O_PATH | O_DIRECTORY)
            workingDirectory = try guestDirectoryPath(ofHost: directory.rawValue)
            return 0
        }
    }

    /// fchdir(2).
    public func fchdir(_ fd: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            if let state = file.disk {
                guard state.node.isDirectory else { throw SystemError(call: "fchdir", errno: ENOTDIR) }
                workingDirectory = state.path
                return 0
            }
            workingDirectory = try guestDirectoryPath(ofHost: file.hostFD)
            return 0
        }
    }
}
