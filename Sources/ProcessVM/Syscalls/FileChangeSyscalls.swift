import Glibc

/// The calls that change files by name or size, and the syncs: served on a container's own
/// disk (`GuestFiles+DiskWrites`), EROFS on a read-only root. Modes get the umask here.
extension ProcessVM {
    static let fileChangeSyscalls: [(Int, SyscallHandler)] = [
        (74, { vm, c in .int(vm.files.sync(c.int(c.a0))) }),  // fsync
        (75, { vm, c in .int(vm.files.sync(c.int(c.a0))) }),  // fdatasync
        (76, { vm, c in vm.withPath(c.a0) { .int(vm.files.truncate(path: $0, length: Int64(bitPattern: c.a1))) } }),
        (77, { vm, c in .int(vm.files.ftruncate(c.int(c.a0), length: Int64(bitPattern: c.a1))) }),
        (82, { vm, c in vm.withTwoPaths(c.a0, c.a1) { .int(vm.files.renameat2(oldDirfd: atCurrentDirectory, oldPath: $0, newDirfd: atCurrentDirectory, newPath: $1, flags: 0)) } }),
        (83, { vm, c in vm.withPath(c.a0) { .int(vm.files.mkdirat(dirfd: atCurrentDirectory, path: $0, mode: UInt32(truncatingIfNeeded: c.a1) & ~vm.umask)) } }),
        (84, { vm, c in vm.withPath(c.a0) { .int(vm.files.unlinkat(dirfd: atCurrentDirectory, path: $0, flags: AT_REMOVEDIR)) } }),
        (85, { vm, c in vm.withPath(c.a0) {
            .int(vm.files.openat(dirfd: atCurrentDirectory, path: $0, flags: O_CREAT | O_WRONLY | O_TRUNC, mode: UInt32(truncatingIfNeeded: c.a1) & ~vm.umask))
        } }),  // creat
        (87, { vm, c in vm.withPath(c.a0) { .int(vm.files.unlinkat(dirfd: atCurrentDirectory, path: $0, flags: 0)) } }),
        (88, { vm, c in vm.withTwoPaths(c.a0, c.a1) { .int(vm.files.symlinkat(target: $0, newDirfd: atCurrentDirectory, linkPath: $1)) } }),
        (90, { vm, c in vm.withPath(c.a0) { .int(vm.files.fchmodat(dirfd: atCurrentDirectory, path: $0, mode: UInt32(truncatingIfNeeded: c.a1), flags: 0)) } }),
        (91, { vm, c in .int(vm.files.fchmod(c.int(c.a0), mode: UInt32(truncatingIfNeeded: c.a1))) }),
        (162, { vm, _ in .int(vm.files.sync(nil)) }),
        (258, { vm, c in vm.withPath(c.a1) { .int(vm.files.mkdirat(dirfd: c.int(c.a0), path: $0, mode: UInt32(truncatingIfNeeded: c.a2) & ~vm.umask)) } }),
        (263, { vm, c in vm.withPath(c.a1) { .int(vm.files.unlinkat(dirfd: c.int(c.a0), path: $0, flags: c.int(c.a2))) } }),
        (264, { vm, c in vm.withTwoPaths(c.a1, c.a3) { .int(vm.files.renameat2(oldDirfd: c.int(c.a0), oldPath: $0, newDirfd: c.int(c.a2), newPath: $1, flags: 0)) } }),
        (266, { vm, c in vm.withTwoPaths(c.a0, c.a2) { .int(vm.files.symlinkat(target: $0, newDirfd: c.int(c.a1), linkPath: $1)) } }),
        (268, { vm, c in vm.withPath(c.a1) { .int(vm.files.fchmodat(dirfd: c.int(c.a0), path: $0, mode: UInt32(truncatingIfNeeded: c.a2), flags: 0)) } }),
        (306, { vm, c in .int(vm.files.sync(c.int(c.a0))) }),  // syncfs
        (316, { vm, c in vm.withTwoPaths(c.a1, c.a3) {
            .int(vm.files.renameat2(oldDirfd: c.int(c.a0), oldPath: $0, newDirfd: c.int(c.a2), newPath: $1, flags: UInt32(truncatingIfNeeded: c.a4)))
        } }),
        (452, { vm, c in vm.withPath(c.a1) { .int(vm.files.fchmodat(dirfd: c.int(c.a0), path: $0, mode: UInt32(truncatingIfNeeded: c.a2), flags: c.int(c.a3))) } }),
    ]

    /// Two path arguments, each checked as `withPath` checks one.
    func withTwoPaths(_ first: UInt64, _ second: UInt64, _ body: (UnsafePointer<CChar>, UnsafePointer<CChar>) -> SyscallOutcome) -> SyscallOutcome {
        // The first path's buffer lives until its closure returns, which is after the second's.
        withPath(first) { one in withPath(second) { two in body(one, two) } }
    }
}
