import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// One open file description that guest descriptor slots point at. Slots made by dup share
/// one instance, so they share the host descriptor and with it the file offset and status
/// flags, as Linux's open file descriptions do; the host descriptor closes when the last
/// slot lets go.
final class OpenFile {
    let host: FileDescriptor
    /// True for files of the read-only root filesystem (writing them gives EROFS); false
    /// for the standard streams and the allowlisted host devices.
    let isInsideRootfs: Bool
    /// How the engine transfers data through it without ever blocking in a host call.
    let access: HostAccess
    /// The status flags (F_GETFL, F_SETFL) the guest sees, kept here and never passed to the
    /// host when the host's open file description is not the guest's alone or carries the
    /// engine's O_NONBLOCK (the standard streams); nil when the host's flags are the guest's.
    var guestStatusFlags: Int32?
    /// Set for files of a disk rootfs: what the guest opened there (the host descriptor then
    /// holds a regular file's bytes, or is a placeholder for a folder).
    var disk: DiskFileState?
    /// Set for a file of a container's own disk open for writing: what its growth is charged to.
    var growth: DiskGrowthBudget?
    /// What kernel object the guest made, when it made one (a pipe, an eventfd, a timerfd,
    /// an epoll instance): such an object is never handed to another container as it is.
    var kind: GuestObjectKind = .file
    /// Set for a container's stdout and stderr log: the time index each write notes itself in
    /// (shared by every descriptor and forked process writing that log).
    var logTimes: LogTimeIndex?
    /// Set for a container's terminal (guest descriptors 0, 1 and 2 of a `docker run -t`):
    /// reads go through its line discipline from `host` (the container's input), writes
    /// through its output processing to its log.
    var terminal: GuestTerminal?
    /// Set when a forked process holds this open file description too (`duplicated`): its
    /// writes must then reach the file in the order the processes make them, so the program
    /// never buffers them (`OutputBuffer`).
    var sharedWithAnotherProcess = false

    init(host: consuming FileDescriptor, isInsideRootfs: Bool, access: HostAccess = .neverWaits, guestStatusFlags: Int32? = nil) {
        self.host = host
        self.isInsideRootfs = isInsideRootfs
        self.access = access
        self.guestStatusFlags = guestStatusFlags
        GuestDescriptorBudget.held.add(1, ordering: .relaxed)
    }

    deinit {
        GuestDescriptorBudget.held.subtract(1, ordering: .relaxed)
    }

    var hostFD: Int32 { host.rawValue }

    /// True when the description was opened for writing (its access mode never changes): from
    /// the status flags kept for the guest (a standard stream's, read when it was opened), else
    /// asked of the host once.
    lazy var isOpenForWriting: Bool = {
        let flags = guestStatusFlags ?? fcntl(hostFD, F_GETFL)
        return flags >= 0 && (flags & O_ACCMODE == O_WRONLY || flags & O_ACCMODE == O_RDWR)
    }()

    /// True when a transfer may find nothing to do and the guest asked to wait for it then
    /// (its status flags lack O_NONBLOCK): the engine waits, interruptibly, on its behalf.
    var guestWaits: Bool {
        access != .neverWaits && (guestStatusFlags ?? 0) & O_NONBLOCK == 0
    }
}

/// A disk rootfs file's node, guest path, and for a folder the listing getdents64 walks.
final class DiskFileState {
    let node: GuestRootNode
    let path: [UInt8]
    var listing: [GuestRootEntry]?
    /// The next listing entry getdents64 returns (the directory's offset).
    var position = 0

    init(node: GuestRootNode, path: [UInt8]) {
        self.node = node
        self.path = path
    }

    func copy() -> DiskFileState {
        let copy = DiskFileState(node: node, path: path)
        copy.listing = listing
        copy.position = position
        return copy
    }
}

/// How the engine reaches an open file's data so that no host call it makes can block: a
/// blocked host call could not be interrupted by kill or stop, and one on the shared poller
/// thread would stall every VM. When the guest wants to wait, the engine waits for the file
/// and for the VM's interrupts together (`ProcessVM.waitingTransfer`).
enum HostAccess: Equatable {
    /// Regular files, folders and the allowlisted devices: a transfer never waits.
    case neverWaits
    /// The engine's own open file description (a standard stream reopened), set O_NONBLOCK:
    /// a transfer that would wait answers EAGAIN.
    case nonBlocking
    /// A socket shared with the caller (sockets cannot be reopened): each transfer passes
    /// MSG_DONTWAIT, which leaves the shared description as it is.
    case socket
    /// Another file shared with the caller that could not be reopened (a pipe whose reader
    /// had gone): a transfer is made only once poll finds the file ready, and a write moves
    /// at most PIPE_BUF bytes, which a ready pipe takes without waiting.
    case sharedDescription
}

/// A guest descriptor number's entry: the shared open file plus the per-descriptor
/// close-on-exec flag, which Linux keeps per descriptor rather than per open file.
struct DescriptorSlot {
    let file: OpenFile
    var closeOnExec: Bool
}
