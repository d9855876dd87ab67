import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// The one place guest data moves through a host descriptor: each call is made so that it
/// cannot block (see `HostAccess`); one that would gives EAGAIN, for the caller to wait
/// interruptibly or to hand to a non-blocking guest. Every buffer here comes from
/// `AddressSpace.withUserBuffer` (checked guest memory, or a bounce buffer), valid for the
/// whole call, so handing its pointer and count to the host is sound.
extension OpenFile {
    /// Opens a host descriptor the caller gave as a standard stream, for the guest alone.
    ///
    /// - Regular files (folders, and devices such as /dev/null that never wait) are shared
    ///   with the caller, as a Linux child shares its parent's: the offset then moves for
    ///   both, so `> log 2>&1` and a caller writing after the container see the guest's
    ///   output where Linux would put it. Transfers on them never wait, and the guest's status
    ///   flags are kept here, so the only thing of the caller's description the guest can
    ///   change is the offset (a reopened description would have its own offset: stdout and
    ///   stderr on one file would overwrite each other).
    /// - Pipes, FIFOs, terminals and other devices are reopened through /proc/self/fd with
    ///   the caller's access mode and O_APPEND: a new open file description of the same
    ///   file, set O_NONBLOCK for the engine, so no fcntl of the guest's reaches the caller's.
    /// - What cannot be reopened — a socket (ENXIO), a pipe whose reader is gone (ENXIO) — is
    ///   shared, with the guest's status flags kept here and transfers made without waiting
    ///   (MSG_DONTWAIT on a socket; after poll, PIPE_BUF at most, on anything else).
    static func standardStream(_ fd: Int32) throws(SystemError) -> OpenFile {
        let flags = try retryingSyscall("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        let info = try HostFileCalls.status(fd)
        let type = info.st_mode & S_IFMT
        if type == S_IFREG || type == S_IFDIR || type == S_IFCHR && isMemoryDevice(UInt64(info.st_rdev)) {
            return OpenFile(host: try HostFileCalls.duplicate(fd), isInsideRootfs: false, access: .neverWaits, guestStatusFlags: flags)
        }
        if type != S_IFSOCK,
           let reopened = try? FileDescriptor.open("/proc/self/fd/\(fd)", flags & (O_ACCMODE | O_APPEND) | O_NONBLOCK | O_NOCTTY) {
            return OpenFile(host: reopened, isInsideRootfs: false, access: .nonBlocking, guestStatusFlags: flags)
        }
        return OpenFile(host: try HostFileCalls.duplicate(fd), isInsideRootfs: false,
                        access: type == S_IFSOCK ? .socket : .sharedDescription, guestStatusFlags: flags)
    }

    /// /dev/null, /dev/zero, /dev/full, /dev/random and /dev/urandom (major 1, the memory
    /// devices), which never wait: shared like a regular file, which spares a fork the
    /// reopen of the usual /dev/null stdin.
    private static func isMemoryDevice(_ device: UInt64) -> Bool {
        let memoryMajor: UInt64 = 1
        // Linux's dev_t: major in bits 8-19 and 32-43, minor in bits 0-7 and 20-31.
        let major = (device >> 8) & 0xFFF | (device >> 32) & ~0xFFF
        let minor = device & 0xFF | (device >> 12) & ~0xFF
        switch (major, minor) {
        case (memoryMajor, 3), (memoryMajor, 5), (memoryMajor, 7), (memoryMajor, 8), (memoryMajor, 9): return true
        default: return false
        }
    }

    /// A copy of this open file for another container: the same file, its own description.
    func reopenedForAnotherContainer() throws(SystemError) -> OpenFile {
        if guestStatusFlags != nil {
            let copy = try OpenFile.standardStream(hostFD)
            copy.guestStatusFlags = guestStatusFlags
            return copy
        }
        let copy = OpenFile(host: try HostFileCalls.reopenIndependently(hostFD), isInsideRootfs: isInsideRootfs, access: access)
        copy.disk = disk?.copy()
        copy.growth = growth
        return copy
    }

    /// A duplicate sharing this file's host description (fork(2) semantics).
    func duplicated() throws(SystemError) -> OpenFile {
        let copy = OpenFile(host: try HostFileCalls.duplicate(hostFD), isInsideRootfs: isInsideRootfs, access: access, guestStatusFlags: guestStatusFlags)
        copy.disk = disk?.copy()
        copy.growth = growth
        // The same kernel object: an epoll instance keeps one list of registrations.
        copy.kind = kind
        copy.logTimes = logTimes
        copy.terminal = terminal
        sharedWithAnotherProcess = true
        copy.sharedWithAnotherProcess = true
        return copy
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        if let terminal { return try terminal.read(into: buffer, from: self) }
        return try readHost(into: buffer)
    }

    /// A read of the host file itself (for a terminal, its raw input).
    func readHost(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        switch access {
        case .neverWaits, .nonBlocking:
            return try retryingSyscall("read") { Glibc.read(hostFD, buffer.baseAddress, buffer.count) }
        case .socket:
            return try retryingSyscall("recv") { recv(hostFD, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT)) }
        case .sharedDescription:
            try requireReady(Int16(POLLIN))
            return try retryingSyscall("read") { Glibc.read(hostFD, buffer.baseAddress, buffer.count) }
        }
    }

    func write(from buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        if let terminal { return try terminal.write(buffer) }
        if let growth { try charge(growth, upTo: nil, count: buffer.count) }
        logTimes?.willWrite(to: hostFD)
        switch access {
        case .neverWaits, .nonBlocking:
            return try retryingSyscall("write") { Glibc.write(hostFD, buffer.baseAddress, buffer.count) }
        case .socket:
            return try retryingSyscall("send") { send(hostFD, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        case .sharedDescription:
            try requireReady(Int16(POLLOUT))
            return try retryingSyscall("write") { Glibc.write(hostFD, buffer.baseAddress, min(buffer.count, Int(PIPE_BUF))) }
        }
    }

    /// pread64 and pwrite64: files that could wait are never seekable, and the kernel
    /// answers ESPIPE for them before looking at the data; a socket gets ESPIPE here. A
    /// negative offset is EINVAL, as Linux checks first (the host's pread says so itself; a
    /// pwrite's is refused here, before `charge` reckons the growth from it).
    func pread(into buffer: UnsafeMutableRawBufferPointer, offset: Int) throws(SystemError) -> Int {
        guard access != .socket, terminal == nil else { throw SystemError(call: "pread", errno: ESPIPE) }
        return try retryingSyscall("pread") { Glibc.pread(hostFD, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    func pwrite(from buffer: UnsafeRawBufferPointer, offset: Int) throws(SystemError) -> Int {
        guard offset >= 0 else { throw SystemError(call: "pwrite", errno: EINVAL) }
        guard access != .socket, terminal == nil else { throw SystemError(call: "pwrite", errno: ESPIPE) }
        if let growth { try charge(growth, upTo: offset, count: buffer.count) }
        logTimes?.willWrite(to: hostFD)
        return try retryingSyscall("pwrite") { Glibc.pwrite(hostFD, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// Charges what a write of `count` bytes at `offset` (the file's offset when nil, its end
    /// with O_APPEND) grows the file by; ENOSPC when the container's disk has no room for it.
    private func charge(_ growth: DiskGrowthBudget, upTo offset: Int?, count: Int) throws(SystemError) {
        let size = Int64(try HostFileCalls.status(hostFD).st_size)
        let start: Int64
        if let offset {
            start = Int64(offset)
        } else if try retryingSyscall("fcntl(F_GETFL)", { fcntl(hostFD, F_GETFL) }) & O_APPEND != 0 {
            start = size
        } else {
            start = Int64(try retryingSyscall("lseek") { Glibc.lseek(hostFD, 0, SEEK_CUR) })
        }
        // Both reported, not trapped: the offset is the guest's (pwrite refuses a negative one
        // first, but a trap here would take down the engine and every container it serves).
        let (end, overflow) = start.addingReportingOverflow(Int64(count))
        let (grows, under) = end.subtractingReportingOverflow(size)
        guard !overflow, !under, growth.take(grows) else { throw SystemError(call: "write to the container's disk", errno: ENOSPC) }
    }

    /// EAGAIN unless poll finds the file ready for `events` now (or at its end: the
    /// transfer then reports that).
    private func requireReady(_ events: Int16) throws(SystemError) {
        var entry = pollfd(fd: hostFD, events: events, revents: 0)
        guard Glibc.poll(&entry, 1, 0) == 1 else { throw SystemError(call: "poll", errno: EAGAIN) }
    }
}
