import Glibc

/// The calls that change files by name or size, and the syncs: served on a container's own
/// disk (`GuestFiles+DiskWrites`), EROFS on a read-only root. Modes get the umask here.
extension ProcessVM {
    /// x86-64 system-call numbers of the calls served here.
    enum FileChangeCall {
        static let fsync = 74, fdatasync = 75, truncate = 76, ftruncate = 77, rename = 82, mkdir = 83, rmdir = 84, creat = 85
        static let link = 86, unlink = 87, symlink = 88, chmod = 90, fchmod = 91, chown = 92, fchown = 93, lchown = 94
        static let utime = 132, sync = 162, utimes = 235, mkdirat = 258, fchownat = 260, futimesat = 261, unlinkat = 263
        static let renameat = 264, linkat = 265, symlinkat = 266, fchmodat = 268, utimensat = 280, syncfs = 306
        static let renameat2 = 316, fchmodat2 = 452
    }

    static let fileChangeSyscalls: [(Int, SyscallHandler)] = [
        (FileChangeCall.fsync, { vm, c in .int(vm.files.sync(c.int(c.a0))) }),
        (FileChangeCall.fdatasync, { vm, c in .int(vm.files.sync(c.int(c.a0))) }),
        (FileChangeCall.truncate, { vm, c in vm.withPath(c.a0) { .int(vm.files.truncate(path: $0, length: Int64(bitPattern: c.a1))) } }),
        (FileChangeCall.ftruncate, { vm, c in .int(vm.files.ftruncate(c.int(c.a0), length: Int64(bitPattern: c.a1))) }),
        (FileChangeCall.rename, { vm, c in vm.withTwoPaths(c.a0, c.a1) {
            .int(vm.files.renameat2(oldDirfd: atCurrentDirectory, oldPath: $0, newDirfd: atCurrentDirectory, newPath: $1, flags: 0))
        } }),
        (FileChangeCall.mkdir, { vm, c in vm.withPath(c.a0) { .int(vm.files.mkdirat(dirfd: atCurrentDirectory, path: $0, mode: UInt32(truncatingIfNeeded: c.a1) & ~vm.umask)) } }),
        (FileChangeCall.rmdir, { vm, c in vm.withPath(c.a0) { .int(vm.files.unlinkat(dirfd: atCurrentDirectory, path: $0, flags: AT_REMOVEDIR)) } }),
        (FileChangeCall.creat, { vm, c in vm.withPath(c.a0) {
            .int(vm.files.openat(dirfd: atCurrentDirectory, path: $0, flags: O_CREAT | O_WRONLY | O_TRUNC, mode: UInt32(truncatingIfNeeded: c.a1) & ~vm.umask))
        } }),
        (FileChangeCall.link, { vm, c in vm.withTwoPaths(c.a0, c.a1) {
            .int(vm.files.linkat(oldDirfd: atCurrentDirectory, oldPath: $0, newDirfd: atCurrentDirectory, newPath: $1, flags: 0))
        } }),
        (FileChangeCall.unlink, { vm, c in vm.withPath(c.a0) { .int(vm.files.unlinkat(dirfd: atCurrentDirectory, path: $0, flags: 0)) } }),
        (FileChangeCall.symlink, { vm, c in vm.withTwoPaths(c.a0, c.a1) { .int(vm.files.symlinkat(target: $0, newDirfd: atCurrentDirectory, linkPath: $1)) } }),
        (FileChangeCall.chmod, { vm, c in vm.withPath(c.a0) {
            .int(vm.files.fchmodat(dirfd: atCurrentDirectory, path: $0, mode: UInt32(truncatingIfNeeded: c.a1), flags: 0))
        } }),
        (FileChangeCall.fchmod, { vm, c in .int(vm.files.fchmod(c.int(c.a0), mode: UInt32(truncatingIfNeeded: c.a1))) }),
        (FileChangeCall.chown, { vm, c in vm.withPath(c.a0) {
            .int(vm.files.fchownat(dirfd: atCurrentDirectory, path: $0, uid: UInt32(truncatingIfNeeded: c.a1), gid: UInt32(truncatingIfNeeded: c.a2), flags: 0, caller: vm.caller))
        } }),
        (FileChangeCall.fchown, { vm, c in
            .int(vm.files.fchown(c.int(c.a0), uid: UInt32(truncatingIfNeeded: c.a1), gid: UInt32(truncatingIfNeeded: c.a2), caller: vm.caller))
        }),
        (FileChangeCall.lchown, { vm, c in vm.withPath(c.a0) {
            .int(vm.files.fchownat(dirfd: atCurrentDirectory, path: $0, uid: UInt32(truncatingIfNeeded: c.a1), gid: UInt32(truncatingIfNeeded: c.a2),
                                   flags: AT_SYMLINK_NOFOLLOW, caller: vm.caller))
        } }),
        (FileChangeCall.utime, { vm, c in
            // struct utimbuf: actime and modtime, whole seconds; NULL is now.
            var times: [(seconds: Int64, nanoseconds: Int64)]?
            if c.a1 != 0 {
                guard let bytes = vm.space.read(c.a1, count: 16) else { return .error(.EFAULT) }
                // unsafe: both loads are within the 16 bytes read; loadUnaligned needs no alignment.
                let words = bytes.withUnsafeBytes { [$0.loadUnaligned(as: Int64.self), $0.loadUnaligned(fromByteOffset: 8, as: Int64.self)] }
                times = words.map { (seconds: $0, nanoseconds: 0) }
            }
            return vm.withPath(c.a0) { .int(vm.files.utimensat(dirfd: atCurrentDirectory, path: $0, times: times, flags: 0, caller: vm.caller)) }
        }),
        (FileChangeCall.sync, { vm, _ in .int(vm.files.sync(nil)) }),
        (FileChangeCall.utimes, { vm, c in vm.futimesat(dirfd: atCurrentDirectory, path: c.a0, times: c.a1) }),
        (FileChangeCall.mkdirat, { vm, c in vm.withPath(c.a1) { .int(vm.files.mkdirat(dirfd: c.int(c.a0), path: $0, mode: UInt32(truncatingIfNeeded: c.a2) & ~vm.umask)) } }),
        (FileChangeCall.fchownat, { vm, c in vm.withPath(c.a1) {
            .int(vm.files.fchownat(dirfd: c.int(c.a0), path: $0, uid: UInt32(truncatingIfNeeded: c.a2), gid: UInt32(truncatingIfNeeded: c.a3), flags: c.int(c.a4), caller: vm.caller))
        } }),
        (FileChangeCall.futimesat, { vm, c in vm.futimesat(dirfd: c.int(c.a0), path: c.a1, times: c.a2) }),
        (FileChangeCall.unlinkat, { vm, c in vm.withPath(c.a1) { .int(vm.files.unlinkat(dirfd: c.int(c.a0), path: $0, flags: c.int(c.a2))) } }),
        (FileChangeCall.renameat, { vm, c in vm.withTwoPaths(c.a1, c.a3) {
            .int(vm.files.renameat2(oldDirfd: c.int(c.a0), oldPath: $0, newDirfd: c.int(c.a2), newPath: $1, flags: 0))
        } }),
        (FileChangeCall.linkat, { vm, c in vm.withTwoPaths(c.a1, c.a3) {
            .int(vm.files.linkat(oldDirfd: c.int(c.a0), oldPath: $0, newDirfd: c.int(c.a2), newPath: $1, flags: c.int(c.a4)))
        } }),
        (FileChangeCall.symlinkat, { vm, c in vm.withTwoPaths(c.a0, c.a2) { .int(vm.files.symlinkat(target: $0, newDirfd: c.int(c.a1), linkPath: $1)) } }),
        (FileChangeCall.fchmodat, { vm, c in vm.withPath(c.a1) {
            .int(vm.files.fchmodat(dirfd: c.int(c.a0), path: $0, mode: UInt32(truncatingIfNeeded: c.a2), flags: 0))
        } }),
        (FileChangeCall.utimensat, { vm, c in vm.utimensat(c) }),
        (FileChangeCall.syncfs, { vm, c in .int(vm.files.sync(c.int(c.a0))) }),
        (FileChangeCall.renameat2, { vm, c in vm.withTwoPaths(c.a1, c.a3) {
            .int(vm.files.renameat2(oldDirfd: c.int(c.a0), oldPath: $0, newDirfd: c.int(c.a2), newPath: $1, flags: UInt32(truncatingIfNeeded: c.a4)))
        } }),
        (FileChangeCall.fchmodat2, { vm, c in vm.withPath(c.a1) {
            .int(vm.files.fchmodat(dirfd: c.int(c.a0), path: $0, mode: UInt32(truncatingIfNeeded: c.a2), flags: c.int(c.a3)))
        } }),
    ]

    /// The guest's identity for the permission checks of chown and utimensat.
    var caller: GuestFiles.Caller { GuestFiles.Caller(uid: identity.uid, gid: identity.gid) }

    /// utimensat(dirfd, path, times[2], flags): a NULL path with a descriptor is futimens;
    /// NULL times is now for both.
    private func utimensat(_ c: SystemCall) -> SyscallOutcome {
        var times: [(seconds: Int64, nanoseconds: Int64)]?
        if c.a2 != 0 {
            guard let bytes = space.read(c.a2, count: 32) else { return .error(.EFAULT) }
            // unsafe: every load is within the 32 bytes read; loadUnaligned needs no alignment.
            times = (0..<2).map { index in
                bytes.withUnsafeBytes { (seconds: $0.loadUnaligned(fromByteOffset: index * 16, as: Int64.self),
                                         nanoseconds: $0.loadUnaligned(fromByteOffset: index * 16 + 8, as: Int64.self)) }
            }
        }
        guard c.a1 != 0 else { return .int(files.utimensat(dirfd: c.int(c.a0), path: nil, times: times, flags: c.int(c.a3), caller: caller)) }
        return withPath(c.a1) { .int(files.utimensat(dirfd: c.int(c.a0), path: $0, times: times, flags: c.int(c.a3), caller: caller)) }
    }

    /// utimes and futimesat: struct timeval[2] (microseconds 0 to 999,999, else EINVAL),
    /// or NULL for now; a NULL path with a descriptor is that descriptor's file.
    private func futimesat(dirfd: Int32, path: UInt64, times address: UInt64) -> SyscallOutcome {
        var times: [(seconds: Int64, nanoseconds: Int64)]?
        if address != 0 {
            guard let bytes = space.read(address, count: 32) else { return .error(.EFAULT) }
            // unsafe: every load is within the 32 bytes read; loadUnaligned needs no alignment.
            let values = (0..<2).map { index in
                bytes.withUnsafeBytes { (seconds: $0.loadUnaligned(fromByteOffset: index * 16, as: Int64.self),
                                         microseconds: $0.loadUnaligned(fromByteOffset: index * 16 + 8, as: Int64.self)) }
            }
            guard values.allSatisfy({ (0..<1_000_000).contains($0.microseconds) }) else { return .error(.EINVAL) }
            times = values.map { (seconds: $0.seconds, nanoseconds: $0.microseconds * 1000) }
        }
        guard path != 0 else { return .int(files.utimensat(dirfd: dirfd, path: nil, times: times, flags: 0, caller: caller)) }
        return withPath(path) { .int(files.utimensat(dirfd: dirfd, path: $0, times: times, flags: 0, caller: caller)) }
    }

    /// Two path arguments, each checked as `withPath` checks one.
    func withTwoPaths(_ first: UInt64, _ second: UInt64, _ body: (UnsafePointer<CChar>, UnsafePointer<CChar>) -> SyscallOutcome) -> SyscallOutcome {
        // The first path's buffer lives until its closure returns, which is after the second's.
        withPath(first) { one in withPath(second) { two in body(one, two) } }
    }
}
