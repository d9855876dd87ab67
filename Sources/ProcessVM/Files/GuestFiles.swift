import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// The root filesystem's folder and the host's /dev, opened once and shared by every copy of
/// a descriptor table: they only ever serve as bases for openat2, so forks need not
/// duplicate them.
final class FileSystemRoots: Sendable {
    let root: FileDescriptor
    /// The root folder's canonical host path, to turn host paths of guest directories back
    /// into guest paths.
    let hostPath: [UInt8]
    let device: UInt64
    let inode: UInt64
    /// The host's /dev, the only base for the allowlisted devices.
    let hostDevices: FileDescriptor
    /// Set when the rootfs is not a host folder but a disk chain (`GuestFiles+Disk`); `root`
    /// is then an empty, removed folder.
    let disk: (any GuestRootFileSystem)?

    /// The same folders (descriptors of their own) with `disk` as the root filesystem.
    func with(disk: any GuestRootFileSystem) throws(SystemError) -> FileSystemRoots {
        try FileSystemRoots(root: try HostFileCalls.duplicate(root.rawValue), hostDevices: try HostFileCalls.duplicate(hostDevices.rawValue), disk: disk)
    }

    init(root: consuming FileDescriptor, hostDevices: consuming FileDescriptor, disk: (any GuestRootFileSystem)? = nil) throws(SystemError) {
        self.disk = disk
        let info = try HostFileCalls.status(root.rawValue)
        hostPath = try HostFileCalls.path(of: root.rawValue)
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        self.root = root
        self.hostDevices = hostDevices
    }
}

/// The file-system personality of one process VM: the guest's descriptor table, working
/// directory and read-only root filesystem, served from real host files.
///
/// The guest is untrusted, so every descriptor, flag and path it hands over is checked here
/// and every call answers the way Linux x86-64 does: a result `>= 0`, or `-errno`. Paths are
/// resolved by the kernel itself (openat2 with RESOLVE_IN_ROOT), so no guest path, `..` or
/// symlink reaches outside the root.
///
/// `@unchecked Sendable`: a process VM has one vCPU thread, which is the only caller of its
/// `GuestFiles`; the table is handed between threads only whole (for example to a forked
/// child), never used from two at once, so it takes no lock.
public final class GuestFiles: @unchecked Sendable {
    /// A guest's RLIMIT_NOFILE unless its configuration says otherwise: Linux's usual soft
    /// limit, which programs expect (select() handles descriptors below 1,024 only). A VM
    /// then costs the engine at most about 1,030 host descriptors, and all guests together
    /// stay within `GuestDescriptorBudget`, so they never take the engine's own.
    public static let defaultDescriptorLimit = 1024

    let roots: FileSystemRoots
    let descriptorLimit: Int
    var slots: [DescriptorSlot?]
    /// The guest's working directory as the guest sees it: absolute, without symlinks.
    var workingDirectory: [UInt8]
    /// Whose the files and folders the guest creates on a writable disk root are (its uid
    /// and gid, as Linux's fsuid and fsgid): set by its `ProcessVM`.
    public var creator = Caller(uid: 0, gid: 0)

    /// Opens `rootfs` as the guest's root and installs the host descriptors `stdin`,
    /// `stdout`, `stderr` as guest descriptors 0, 1 and 2, each opened for the guest alone
    /// (`OpenFile.standardStream`); the caller keeps its own. Throws a `SystemError` naming
    /// the rootfs when it is missing or not a folder.
    public convenience init(rootfs: String, stdin: Int32, stdout: Int32, stderr: Int32,
                            descriptorLimit: Int = GuestFiles.defaultDescriptorLimit) throws(SystemError) {
        let root: FileDescriptor
        do {
            root = try FileDescriptor.open(rootfs, CSHIMS_O_PATH | O_DIRECTORY)
        } catch {
            throw SystemError(call: "open(rootfs \(rootfs))", errno: error.errno)
        }
        try self.init(root: root, disk: nil, stdin: stdin, stdout: stdout, stderr: stderr, descriptorLimit: descriptorLimit)
    }

    /// A table whose root is `root` (and `disk`, when the rootfs is a disk chain).
    convenience init(root: consuming FileDescriptor, disk: (any GuestRootFileSystem)?, stdin: Int32, stdout: Int32, stderr: Int32,
                     descriptorLimit: Int) throws(SystemError) {
        // The first VM raises the engine's own descriptor limit (see `GuestDescriptorBudget`).
        _ = GuestDescriptorBudget.limit
        var streams: [DescriptorSlot?] = []
        for hostFD in [stdin, stdout, stderr] {
            streams.append(DescriptorSlot(file: try OpenFile.standardStream(hostFD), closeOnExec: false))
        }
        self.init(roots: try FileSystemRoots(root: root, hostDevices: try FileDescriptor.open("/dev", CSHIMS_O_PATH | O_DIRECTORY), disk: disk),
                  descriptorLimit: max(descriptorLimit, streams.count), slots: streams, workingDirectory: [GuestPath.slash])
    }

    private init(roots: FileSystemRoots, descriptorLimit: Int, slots: [DescriptorSlot?], workingDirectory: [UInt8]) {
        self.roots = roots
        self.descriptorLimit = descriptorLimit
        self.slots = slots
        self.workingDirectory = workingDirectory
    }

    /// The host descriptor behind a guest descriptor, for the caller's file-backed mmap (it
    /// preads the file into guest memory). Valid until the guest closes `guestFD`.
    public func hostDescriptor(of guestFD: Int32) -> Int32? {
        try? openFile(guestFD).hostFD
    }

    /// True when transfers through `guestFD` never wait (a regular file, a folder, an
    /// allowlisted device): the shared poller may serve them.
    public func transfersNeverWait(_ guestFD: Int32) -> Bool {
        (try? openFile(guestFD).access) == .neverWaits
    }

    /// True when writes to `guestFD` may be buffered in the program (`OutputBuffer`): a host
    /// file open for writing whose transfers never wait (a regular file, an allowlisted
    /// device), not a terminal, not a disk rootfs file (its writes are charged to a budget and
    /// may fail), not shared with another process.
    func mayBufferWrites(_ guestFD: Int32) -> Bool {
        guard guestFD >= 0, Int(guestFD) < slots.count, let file = slots[Int(guestFD)]?.file else { return false }
        return file.access == .neverWaits && file.terminal == nil && file.disk == nil && !file.isInsideRootfs && !file.sharedWithAnotherProcess
            && file.isOpenForWriting
    }

    /// True when `guestFD` is open and the guest wants its transfers to wait until they can
    /// be made (no O_NONBLOCK) on a file where they may have to.
    func guestWaits(_ guestFD: Int32) -> Bool {
        (try? openFile(guestFD).guestWaits) ?? false
    }

    /// A forked child's table: the same descriptor numbers, close-on-exec flags and working
    /// directory. Each open file is dup()ed on the host once (descriptors that share an open
    /// file here share one in the child too), so parent and child share offsets and status
    /// flags exactly as Linux fork() does, while closing a descriptor in one leaves the other's intact.
    public func copyForFork() throws(SystemError) -> GuestFiles {
        var copies: [ObjectIdentifier: OpenFile] = [:]
        return try copy(skipping: 0, copies: &copies) { file throws(SystemError) in try file.duplicated() }
    }

    /// A table for a new container forked from a warm parent: unlike fork(), each open file is
    /// reopened so siblings never move each other's offsets (containers stay independent),
    /// and descriptors 0, 1 and 2 are the child's own host streams, opened as a new VM's are.
    /// `rootFileSystem`, when given, is the child's own root (its writable disk, whose files
    /// start as the parent's): the parent's is read-only and shared.
    public func copyForChildContainer(standardStreams: (input: Int32, output: Int32, error: Int32),
                                      rootFileSystem: (any GuestRootFileSystem)? = nil) throws(SystemError) -> GuestFiles {
        // Kernel objects the guest made get fresh ones in the same state (a pipe's both ends
        // one fresh pipe); every other file is reopened.
        var pipes: [UInt64: PipeCopy] = [:]
        var copies: [ObjectIdentifier: OpenFile] = [:]
        let newRoots = try rootFileSystem.map { disk throws(SystemError) in try roots.with(disk: disk) }
        let child = try copy(skipping: 3, roots: newRoots, copies: &copies) { file throws(SystemError) -> OpenFile in
            if let fresh = try file.freshForAnotherContainer(pipes: &pipes) { return fresh }
            return try file.reopenedForAnotherContainer()
        }
        for slot in slots.compactMap({ $0 }) {
            copies[ObjectIdentifier(slot.file)]?.replayRegistrations(of: slot.file, copies: copies)
        }
        for (index, stream) in [standardStreams.input, standardStreams.output, standardStreams.error].enumerated() {
            child.slots[index] = DescriptorSlot(file: try OpenFile.standardStream(stream), closeOnExec: false)
        }
        return child
    }

    /// Makes guest descriptors 1 and 2, as installed for a new VM or child container, note
    /// their writes in `output` and `error` (a container's log time indexes).
    func attachLogTimes(output: LogTimeIndex?, error: LogTimeIndex?) {
        if let output { slots[1]?.file.logTimes = output }
        if let error { slots[2]?.file.logTimes = error }
    }

    /// Makes guest descriptors 0, 1 and 2, as installed for a new VM or child container, one
    /// open file on `terminal` (reading descriptor 0's host file as its input), as a
    /// terminal's slave is a container's three standard streams.
    func attachTerminal(_ terminal: GuestTerminal?) {
        guard let terminal, let input = slots[0]?.file else { return }
        input.terminal = terminal
        input.logTimes = nil
        slots[1] = DescriptorSlot(file: input, closeOnExec: false)
        slots[2] = DescriptorSlot(file: input, closeOnExec: false)
    }

    /// The terminal `fd` is open on; nil when it is not open or not a terminal.
    func terminal(of fd: Int32) -> GuestTerminal? {
        try? openFile(fd).terminal
    }

    /// The terminal of descriptor 0 as installed (the container's), for its first process.
    var standardTerminal: GuestTerminal? { slots.first??.file.terminal }

    /// The same descriptor numbers, close-on-exec flags and working directory, with each open
    /// file copied once by `copyFile` (descriptors that share an open file here share one in
    /// the copy too). The first `skipped` slots are left empty for the caller to fill;
    /// `copies` gets each original's copy; `newRoots`, when given, are the copy's roots.
    private func copy(skipping skipped: Int, roots newRoots: FileSystemRoots? = nil, copies: inout [ObjectIdentifier: OpenFile],
                      _ copyFile: (OpenFile) throws(SystemError) -> OpenFile) throws(SystemError) -> GuestFiles {
        var childSlots: [DescriptorSlot?] = []
        childSlots.reserveCapacity(max(slots.count, skipped))
        for (index, slot) in slots.enumerated() {
            guard let slot, index >= skipped else {
                childSlots.append(nil)
                continue
            }
            let key = ObjectIdentifier(slot.file)
            if copies[key] == nil { copies[key] = try copyFile(slot.file) }
            childSlots.append(DescriptorSlot(file: copies[key]!, closeOnExec: slot.closeOnExec))
        }
        while childSlots.count < skipped { childSlots.append(nil) }
        return GuestFiles(roots: newRoots ?? roots, descriptorLimit: descriptorLimit, slots: childSlots, workingDirectory: workingDirectory)
    }

    /// Closes every descriptor marked close-on-exec, as execve(2) does before the new program runs.
    public func closeDescriptorsMarkedCloseOnExec() {
        for index in slots.indices where slots[index]?.closeOnExec == true {
            slots[index] = nil
        }
    }

    // MARK: - Descriptor table

    /// close(2).
    public func close(_ fd: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            _ = try openFile(fd)
            slots[Int(fd)] = nil
            return 0
        }
    }

    /// dup(2): the lowest free descriptor, sharing `fd`'s open file, close-on-exec clear.
    public func dup(_ fd: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            return install(file, at: try lowestFreeDescriptor(from: 0), closeOnExec: false)
        }
    }

    /// dup2(2): makes `newFD` share `oldFD`'s open file, closing what `newFD` held.
    public func dup2(_ oldFD: Int32, _ newFD: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(oldFD)
            guard newFD >= 0, Int(newFD) < descriptorLimit else { throw SystemError(call: "dup2", errno: EBADF) }
            return oldFD == newFD ? Int(newFD) : install(file, at: Int(newFD), closeOnExec: false)
        }
    }

    /// dup3(2): dup2 with O_CLOEXEC as the only flag, and `oldFD == newFD` an error.
    public func dup3(_ oldFD: Int32, _ newFD: Int32, flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            guard flags & ~O_CLOEXEC == 0, oldFD != newFD else { throw SystemError(call: "dup3", errno: EINVAL) }
            guard newFD >= 0, Int(newFD) < descriptorLimit else { throw SystemError(call: "dup3", errno: EBADF) }
            let file = try openFile(oldFD)
            return install(file, at: Int(newFD), closeOnExec: flags & O_CLOEXEC != 0)
        }
    }

    /// fcntl(2) for F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL and F_SETFL; other
    /// commands give EINVAL. F_SETFL drops O_ASYNC, which would aim SIGIO at the engine, and
    /// changes only the guest's own flags of a standard stream, never the host's description.
    public func fcntl(_ fd: Int32, command: Int32, argument: Int) -> Int {
        linuxResult { () throws(SystemError) in
            let file = try openFile(fd)
            switch command {
            case F_DUPFD, F_DUPFD_CLOEXEC:
                guard argument >= 0, argument < descriptorLimit else { throw SystemError(call: "fcntl(F_DUPFD)", errno: EINVAL) }
                return install(file, at: try lowestFreeDescriptor(from: argument), closeOnExec: command == F_DUPFD_CLOEXEC)
            case F_GETFD:
                return slots[Int(fd)]!.closeOnExec ? Int(FD_CLOEXEC) : 0
            case F_SETFD:
                slots[Int(fd)]!.closeOnExec = argument & Int(FD_CLOEXEC) != 0
                return 0
            case F_GETFL:
                if let flags = file.guestStatusFlags { return Int(flags) }
                return Int(try retryingSyscall("fcntl(F_GETFL)") { Glibc.fcntl(file.hostFD, F_GETFL) })
            case F_SETFL:
                let statusFlags = Int32(truncatingIfNeeded: argument) & ~O_ASYNC
                if let flags = file.guestStatusFlags {
                    file.guestStatusFlags = flags & ~Self.changeableStatusFlags | statusFlags & Self.changeableStatusFlags
                    return 0
                }
                return Int(try retryingSyscall("fcntl(F_SETFL)") { Glibc.fcntl(file.hostFD, F_SETFL, statusFlags) })
            default:
                throw SystemError(call: "fcntl(\(command))", errno: EINVAL)
            }
        }
    }

    /// The status flags F_SETFL changes, as Linux's (O_ASYNC left out, see `fcntl`).
    private static let changeableStatusFlags = O_APPEND | O_NONBLOCK | CSHIMS_O_DIRECT | CSHIMS_O_NOATIME

    /// The open file behind guest descriptor `fd`, or EBADF.
    func openFile(_ fd: Int32) throws(SystemError) -> OpenFile {
        guard fd >= 0, Int(fd) < slots.count, let slot = slots[Int(fd)] else {
            throw SystemError(call: "guest descriptor \(fd)", errno: EBADF)
        }
        return slot.file
    }

    /// The lowest unused descriptor number `>= start`, as Linux allocates them, or EMFILE.
    func lowestFreeDescriptor(from start: Int) throws(SystemError) -> Int {
        for candidate in start..<max(start, descriptorLimit) where candidate >= slots.count || slots[candidate] == nil {
            return candidate
        }
        throw SystemError(call: "guest descriptor table", errno: EMFILE)
    }

    /// Puts `file` at descriptor `index`, releasing whatever was there; returns `index`.
    func install(_ file: OpenFile, at index: Int, closeOnExec: Bool) -> Int {
        if index >= slots.count {
            slots.append(contentsOf: repeatElement(nil, count: index - slots.count + 1))
        }
        slots[index] = DescriptorSlot(file: file, closeOnExec: closeOnExec)
        return index
    }

    /// Runs one guest call and turns its failure into Linux's result, `-errno`: the one
    /// place where errors become guest results.
    func linuxResult(_ body: () throws(SystemError) -> Int) -> Int {
        do {
            return try body()
        } catch {
            return -Int(error.errno)
        }
    }

    /// EFAULT unless the caller's buffer holds a whole kernel struct of `size` bytes.
    func requireRoom(_ buffer: UnsafeMutableRawBufferPointer, _ size: Int) throws(SystemError) {
        guard buffer.baseAddress != nil, buffer.count >= size else { throw SystemError(call: "guest buffer", errno: EFAULT) }
    }
}
