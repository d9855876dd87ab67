import HostSystem
import Synchronization

/// A root filesystem the guest may change (a container's own child disk): the primitives
/// the guest's creating, removing, renaming, chmod, truncating and syncing calls are built
/// on. As for reads, `GuestFiles` resolves every path inside the root first and hands over
/// a directory node and one checked name. Implementations answer `SystemError`s carrying
/// the guest's errno.
public protocol GuestWritableRootFileSystem: GuestRootFileSystem {
    /// Makes the empty regular file `name` in `directory` (EEXIST if the name is taken).
    /// New files, folders and symlinks are `creator`'s, with the folder's group instead when
    /// it has the set-group-ID bit (which a new folder then gets too), as Linux does.
    func createFile(_ name: [UInt8], in directory: GuestRootNode, permissions: UInt32, creator: GuestFiles.Caller) throws(SystemError) -> GuestRootNode
    func makeDirectory(_ name: [UInt8], in directory: GuestRootNode, permissions: UInt32, creator: GuestFiles.Caller) throws(SystemError)
    func makeSymlink(_ name: [UInt8], in directory: GuestRootNode, target: [UInt8], creator: GuestFiles.Caller) throws(SystemError)
    /// unlink (`isDirectory` false) or rmdir (true).
    func remove(_ name: [UInt8], in directory: GuestRootNode, isDirectory: Bool) throws(SystemError)
    func rename(_ name: [UInt8], in from: GuestRootNode, to newName: [UInt8], in to: GuestRootNode) throws(SystemError)
    func setPermissions(of node: GuestRootNode, _ permissions: UInt32) throws(SystemError)
    /// chown: the owner and group of `node` (nil keeps one); the ctime moves.
    func setOwner(of node: GuestRootNode, uid: UInt32?, gid: UInt32?) throws(SystemError)
    /// utimensat: the atime and mtime of `node`; the ctime moves. A written file's mtime
    /// stays what this sets until it is written again.
    func setTimes(of node: GuestRootNode, access: GuestTimestamp, modification: GuestTimestamp) throws(SystemError)
    /// link: `name` in `directory` becomes another name of `node` (not a directory).
    func link(_ node: GuestRootNode, as name: [UInt8], in directory: GuestRootNode) throws(SystemError)
    /// A new host descriptor of the regular file's contents opened with `accessFlags`
    /// (O_WRONLY or O_RDWR, O_APPEND), emptied first when `truncate`: the guest's writes
    /// go to it and reach the disk at the next `sync`.
    func openForWriting(_ node: GuestRootNode, accessFlags: Int32, truncate: Bool) throws(SystemError) -> FileDescriptor
    func truncate(_ node: GuestRootNode, to length: Int64) throws(SystemError)
    /// ftruncate: the open host descriptor `descriptor` of `node`'s contents resized to
    /// `length`, its growth charged to `growthBudget` and its shrinking given back — unless
    /// its file lost its last name (its bytes were given back then).
    func truncate(descriptor: Int32, of node: GuestRootNode, to length: Int64) throws(SystemError)
    /// The node as it is now (a written file's size and times).
    func refreshed(_ node: GuestRootNode) throws(SystemError) -> GuestRootNode
    /// Writes every change so far to the disk and flushes it (fsync, sync, the end of the container).
    func sync() throws(SystemError)
    /// How far the container's files may still grow: what its disk has free.
    var growthBudget: DiskGrowthBudget { get }
}

/// One time utimensat sets: a given one (checked: nanoseconds under a second), the root's
/// clock now (UTIME_NOW), or the time as it is (UTIME_OMIT).
public enum GuestTimestamp: Sendable, Equatable {
    case omit
    case now
    case at(seconds: Int64, nanoseconds: UInt32)
}

/// The bytes a container's written files may still grow by: its file system's free space
/// when it first changed something. A write or truncate that would grow a file past it gets
/// ENOSPC, so that a guest cannot fill the engine's memory (its files live in memfds until
/// they are synced) or write more than its disk holds.
public final class DiskGrowthBudget: Sendable {
    private let remaining = Atomic<Int64>(0)

    public init() {}

    public func set(_ bytes: Int64) { remaining.store(bytes, ordering: .relaxed) }

    /// Takes `bytes` if that many are left.
    public func take(_ bytes: Int64) -> Bool {
        guard bytes > 0 else { return true }
        var current = remaining.load(ordering: .relaxed)
        while current >= bytes {
            let (exchanged, original) = remaining.compareExchange(expected: current, desired: current - bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    public func giveBack(_ bytes: Int64) {
        if bytes > 0 { remaining.add(bytes, ordering: .relaxed) }
    }

    public var left: Int64 { remaining.load(ordering: .relaxed) }
}
