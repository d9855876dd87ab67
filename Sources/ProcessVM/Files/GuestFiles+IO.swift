import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

extension GuestFiles {
    /// read(2), without ever waiting: EAGAIN when the file has nothing yet (the caller
    /// waits for it, see `OpenFile.read`).
    public func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        linuxResult { () throws(SystemError) in try openFile(fd).read(into: buffer) }
    }

    /// write(2), without ever waiting, as `read`. Files of the root filesystem are only ever
    /// open read-only, so the host answers EBADF for them, as Linux does for a descriptor not
    /// open for writing.
    public func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> Int {
        linuxResult { () throws(SystemError) in try openFile(fd).write(from: buffer) }
    }

    /// pread64(2).
    public func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int) -> Int {
        linuxResult { () throws(SystemError) in try openFile(fd).pread(into: buffer, offset: offset) }
    }

    /// pwrite64(2).
    public func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int) -> Int {
        linuxResult { () throws(SystemError) in try openFile(fd).pwrite(from: buffer, offset: offset) }
    }

    /// lseek(2); the kernel checks `whence` (SEEK_SET through SEEK_HOLE) and the offset.
    public func lseek(_ fd: Int32, offset: Int, whence: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            guard file.terminal == nil else { throw SystemError(call: "lseek(terminal)", errno: ESPIPE) }
            if let state = file.disk, state.node.isDirectory {
                guard whence == SEEK_SET, offset >= 0 else { throw SystemError(call: "lseek(disk folder)", errno: EINVAL) }
                state.position = offset
                return offset
            }
            return Int(try retryingSyscall("lseek") { Glibc.lseek(file.hostFD, off_t(offset), whence) })
        }
    }

    /// fstat(2): the kernel's struct stat bytes (144).
    public func fstat(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            try requireRoom(buffer, CSHIMS_STAT_SIZE)
            if file.terminal != nil {
                GuestStatBytes.terminal(into: buffer)
                return 0
            }
            if let disk = roots.disk, let state = file.disk {
                GuestStatBytes.stat(try current(state.node), device: disk.device, into: buffer)
                return 0
            }
            return Int(try retryingSyscall("fstat") { cshims_fstatat_bytes(file.hostFD, "", buffer.baseAddress, CSHIMS_AT_EMPTY_PATH) })
        }
    }

    /// getdents64(2): the host's linux_dirent64 records, except that ".." of the root names
    /// the root itself, as it does for a real root (the host's parent folder stays unseen).
    public func getdents64(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            if let disk = roots.disk, let state = file.disk {
                guard buffer.baseAddress != nil else { throw SystemError(call: "getdents64", errno: EFAULT) }
                return try diskDirectoryEntries(disk, state, into: buffer)
            }
            let length = min(buffer.count, Int(Int32.max))
            let written = try retryingSyscall("getdents64") { cshims_getdents64(file.hostFD, buffer.baseAddress, length) }
            if written > 0 { try hideParentOfRoot(in: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<written]), listing: file.hostFD) }
            return written
        }
    }

    /// Rewrites the inode of a ".." record to the root's own when `directory` is the root.
    private func hideParentOfRoot(in records: UnsafeMutableRawBufferPointer, listing directory: Int32) throws(SystemError) {
        let inodeOffset = 0, recordLengthOffset = 16, nameOffset = 19
        let parentName = Array("..\0".utf8)
        var offset = 0
        while offset + nameOffset + parentName.count <= records.count {
            let recordLength = Int(records.loadUnaligned(fromByteOffset: offset + recordLengthOffset, as: UInt16.self))
            guard recordLength > 0 else { return }
            if records[(offset + nameOffset)..<(offset + nameOffset + parentName.count)].elementsEqual(parentName) {
                let info = try HostFileCalls.status(directory)
                if UInt64(info.st_dev) == roots.device, UInt64(info.st_ino) == roots.inode {
                    records.storeBytes(of: roots.inode, toByteOffset: offset + inodeOffset, as: UInt64.self)
                }
                return
            }
            offset += recordLength
        }
    }

    /// The kernel's struct termios that TCGETS writes: four flag words, c_line and 19
    /// control characters (Glibc's termios is larger).
    private static let kernelTermiosSize = 4 * MemoryLayout<UInt32>.size + 1 + 19

    /// How many argument bytes an ioctl request this layer serves reads or writes, so the
    /// dispatch knows how much guest memory to make available; nil for any other request.
    public static func ioctlArgumentSize(request: UInt32) -> Int? {
        switch request {
        case UInt32(TCGETS): return Self.kernelTermiosSize
        case UInt32(TIOCGWINSZ): return MemoryLayout<winsize>.size
        default: return nil
        }
    }

    /// ioctl(2): TCGETS and TIOCGWINSZ, passed to the host when the descriptor is a
    /// terminal; ENOTTY otherwise and for every other request (EFAULT if `argument` is
    /// smaller than `ioctlArgumentSize(request:)`). `request` is 32 bits, as the kernel's
    /// `unsigned int cmd`.
    public func ioctl(_ fd: Int32, request: UInt32, argument: UnsafeMutableRawBufferPointer) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            guard let size = Self.ioctlArgumentSize(request: request), isatty(file.hostFD) == 1 else {
                throw SystemError(call: "ioctl(\(request))", errno: ENOTTY)
            }
            try requireRoom(argument, size)
            return Int(try retryingSyscall("ioctl(\(request))") { cshims_ioctl_ptr(file.hostFD, UInt(request), argument.baseAddress) })
        }
    }
}
