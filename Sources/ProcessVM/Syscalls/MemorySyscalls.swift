/// Memory system calls: brk and the mmap family, over the engine-built page tables. Every
/// address and length is checked against the user range before a page is touched.
extension ProcessVM {
    static let memorySyscalls: [(Int, SyscallHandler)] = [
        (9, { vm, c in vm.mmap(c) }),
        (10, { vm, c in vm.mprotect(c) }),
        (11, { vm, c in vm.munmap(c) }),
        (12, { vm, c in vm.brk(c.a0) }),
        (25, { vm, c in vm.mremap(c) }),
        (28, { _, _ in .success }), // madvise: advice only
    ]

    private static let mapShared: Int32 = 0x01
    private static let mapPrivate: Int32 = 0x02
    private static let mapSharedValidate: Int32 = 0x03
    private static let mapFixed: Int32 = 0x10
    private static let mapAnonymous: Int32 = 0x20
    private static let mapFixedNoReplace: Int32 = 0x10_0000
    private static let protWrite: Int32 = 0x2
    private static let protExec: Int32 = 0x4

    /// A page-aligned range inside the user address space, or the errno that rejects it.
    private func userRange(_ address: UInt64, _ length: UInt64) -> Result<UInt64, LinuxErrno> {
        guard address % AddressSpace.pageSize == 0 else { return .failure(.EINVAL) }
        guard length > 0, let rounded = AddressSpace.pageUp(length) else { return .failure(.EINVAL) }
        let (end, overflow) = address.addingReportingOverflow(rounded)
        guard !overflow, end <= AddressSpace.userTop, address >= 0x10000 else { return .failure(.ENOMEM) }
        return .success(rounded)
    }

    private func mmap(_ c: SystemCall) -> SyscallOutcome {
        let flags = c.int(c.a3), prot = c.int(c.a2), fd = c.int(c.a4)
        let sharing = flags & 0x3
        guard sharing == Self.mapShared || sharing == Self.mapPrivate || sharing == Self.mapSharedValidate else { return .error(.EINVAL) }
        guard c.a1 > 0, let length = AddressSpace.pageUp(c.a1), length <= UInt64(memory.size) else { return .error(c.a1 == 0 ? .EINVAL : .ENOMEM) }
        guard c.a5 % AddressSpace.pageSize == 0 else { return .error(.EINVAL) }
        let anonymous = flags & Self.mapAnonymous != 0
        var hostFile: Int32 = -1
        if !anonymous {
            guard let host = files.hostDescriptor(of: fd) else { return .error(.EBADF) }
            // The rootfs is read-only: a shared writable mapping could never be written back.
            if sharing != Self.mapPrivate, prot & Self.protWrite != 0 { return .error(.EACCES) }
            hostFile = host
        }

        let address: UInt64
        if flags & (Self.mapFixed | Self.mapFixedNoReplace) != 0 {
            guard case .success = userRange(c.a0, length) else { return .error(c.a0 % AddressSpace.pageSize != 0 ? .EINVAL : .ENOMEM) }
            if flags & Self.mapFixedNoReplace != 0, !space.isFree(c.a0, c.a0 + length) { return .error(.EEXIST) }
            space.unmap(c.a0, length: length)
            address = c.a0
        } else if c.a0 != 0, case .success = userRange(c.a0, length), space.isFree(c.a0, c.a0 + length) {
            address = c.a0
        } else {
            guard let free = space.findFree(length: length) else { return .error(.ENOMEM) }
            address = free
        }
        do {
            try space.mapAnonymous(at: address, length: length, PagePermissions(prot: prot))
        } catch {
            return .error(.ENOMEM)
        }
        // A private file mapping is a copy of the file's bytes, read straight into its frames;
        // past the end it is zero.
        if hostFile >= 0, !space.readFile(hostFile, offset: c.a5, into: address, length: length) {
            space.unmap(address, length: length)
            return .error(.EACCES)
        }
        // A library's code, as ld.so maps it: its system calls skip PVM's SYSCALL switch too.
        if hostFile >= 0, configuration.rewritesSystemCalls, prot & Self.protExec != 0, prot & Self.protWrite == 0 {
            _ = try? SyscallRewriter.rewrite(mapping: address..<(address + length), in: space)
        }
        return .value(Int64(bitPattern: address))
    }

    private func munmap(_ c: SystemCall) -> SyscallOutcome {
        switch userRange(c.a0, c.a1) {
        case .failure(let errno): return .error(errno == .ENOMEM ? .EINVAL : errno)
        case .success(let length):
            space.unmap(c.a0, length: length)
            return .success
        }
    }

    private func mprotect(_ c: SystemCall) -> SyscallOutcome {
        if c.a1 == 0 { return c.a0 % AddressSpace.pageSize == 0 ? .success : .error(.EINVAL) }
        switch userRange(c.a0, c.a1) {
        case .failure(let errno): return .error(errno)
        case .success(let length):
            return space.protect(c.a0, length: length, PagePermissions(prot: c.int(c.a2))) ? .success : .error(.ENOMEM)
        }
    }

    private func brk(_ requested: UInt64) -> SyscallOutcome {
        let current = space.heapEnd
        guard requested >= space.heapStart, let newTop = AddressSpace.pageUp(requested), newTop < AddressSpace.mmapTop else {
            return .value(Int64(bitPattern: current))
        }
        let mappedTop = AddressSpace.pageUp(current)!
        if newTop > mappedTop {
            guard space.isFree(mappedTop, newTop) else { return .value(Int64(bitPattern: current)) }
            do { try space.mapAnonymous(at: mappedTop, length: newTop - mappedTop, [.read, .write, .user]) } catch {
                return .value(Int64(bitPattern: current))
            }
        } else if newTop < mappedTop {
            space.unmap(newTop, length: mappedTop - newTop)
        }
        space.heapEnd = requested
        return .value(Int64(bitPattern: requested))
    }

    /// mremap without MREMAP_FIXED: shrink in place, grow in place when the pages above are
    /// free, or move (MREMAP_MAYMOVE) to the top of the mmap area. Every length is checked
    /// before any address is computed from it; the old range must be mapped (EFAULT).
    private func mremap(_ c: SystemCall) -> SyscallOutcome {
        let mayMove: Int32 = 1
        let flags = c.int(c.a3)
        guard flags & ~mayMove == 0 else { return .error(.EINVAL) }
        guard case .success(let oldLength) = userRange(c.a0, c.a1) else { return .error(.EINVAL) }
        guard c.a2 > 0, let newLength = AddressSpace.pageUp(c.a2) else { return .error(.EINVAL) }
        guard newLength <= UInt64(memory.size) else { return .error(.ENOMEM) }
        guard space.isFullyMapped(c.a0, oldLength), let permissions = space.permissions(at: c.a0) else { return .error(.EFAULT) }
        if newLength <= oldLength {
            space.unmap(c.a0 + newLength, length: oldLength - newLength)
            return .value(Int64(bitPattern: c.a0))
        }
        let growth = newLength - oldLength
        if case .success = userRange(c.a0, newLength), space.isFree(c.a0 + oldLength, c.a0 + newLength) {
            do { try space.mapAnonymous(at: c.a0 + oldLength, length: growth, permissions) } catch { return .error(.ENOMEM) }
            return .value(Int64(bitPattern: c.a0))
        }
        guard flags & mayMove != 0, let destination = space.findFree(length: newLength) else { return .error(.ENOMEM) }
        do {
            try space.mapAnonymous(at: destination + oldLength, length: growth, permissions)
            try space.move(c.a0, length: oldLength, to: destination)
        } catch {
            return .error(.ENOMEM)
        }
        return .value(Int64(bitPattern: destination))
    }
}

import Glibc
