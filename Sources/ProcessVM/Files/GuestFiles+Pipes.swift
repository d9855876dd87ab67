import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// Pipes between the processes of a container, and the descriptor-table calls processes
/// need: close_range, and closing everything when a process ends.
extension GuestFiles {
    /// pipe2(2): a host pipe, both ends set O_NONBLOCK for the engine (no host call waits:
    /// a guest that wants to wait waits in poll, interruptibly, see `HostAccess.nonBlocking`);
    /// the guest's own O_NONBLOCK is kept in the ends' status flags. Flags: O_CLOEXEC,
    /// O_NONBLOCK (anything else is EINVAL). Returns the read and write descriptors.
    func makePipe(flags: Int32) throws(SystemError) -> (read: Int32, write: Int32) {
        guard flags & ~(O_CLOEXEC | O_NONBLOCK) == 0 else { throw SystemError(call: "pipe2 flags", errno: EINVAL) }
        try GuestDescriptorBudget.requireRoom()
        let readIndex = try lowestFreeDescriptor(from: 0)
        var ends: [Int32] = [-1, -1]
        guard cshims_pipe_nonblocking(&ends) == 0 else {
            // The host's table being full is the system's, not the guest's (ENFILE).
            let error = errno
            throw SystemError(call: "pipe2", errno: error == EMFILE ? ENFILE : error)
        }
        let guestFlags = flags & O_NONBLOCK
        let reader = OpenFile(host: FileDescriptor(adopting: ends[0]), isInsideRootfs: false, access: .nonBlocking,
                              guestStatusFlags: O_RDONLY | guestFlags)
        let writer = OpenFile(host: FileDescriptor(adopting: ends[1]), isInsideRootfs: false, access: .nonBlocking,
                              guestStatusFlags: O_WRONLY | guestFlags)
        reader.kind = .pipe
        writer.kind = .pipe
        let closeOnExec = flags & O_CLOEXEC != 0
        _ = install(reader, at: readIndex, closeOnExec: closeOnExec)
        let writeIndex: Int
        do {
            writeIndex = try lowestFreeDescriptor(from: 0)
        } catch {
            slots[readIndex] = nil
            throw error
        }
        _ = install(writer, at: writeIndex, closeOnExec: closeOnExec)
        return (Int32(readIndex), Int32(writeIndex))
    }

    /// close_range(2): closes descriptors `first` through `last` (or, with
    /// CLOSE_RANGE_CLOEXEC, marks them close-on-exec); CLOSE_RANGE_UNSHARE changes nothing
    /// (no table is shared between processes here). The work is bounded by the table's size.
    func closeRange(first: UInt32, last: UInt32, flags: UInt32) -> Int {
        let unshare: UInt32 = 1 << 1, closeOnExec: UInt32 = 1 << 2
        guard flags & ~(unshare | closeOnExec) == 0, first <= last else { return -Int(EINVAL) }
        guard Int(first) < slots.count else { return 0 }
        let end = min(Int(last), slots.count - 1)
        for index in Int(first)...end where slots[index] != nil {
            if flags & closeOnExec != 0 {
                slots[index]!.closeOnExec = true
            } else {
                slots[index] = nil
            }
        }
        return 0
    }

    /// Closes every descriptor, as a process's end does.
    func closeAll() {
        slots.removeAll()
    }
}

extension ProcessVM {
    static let pipeSignal: Int32 = 13

    /// A write to a pipe without a reader gives EPIPE and SIGPIPE, as on Linux: the program
    /// ends (141) unless it ignores or handles the signal.
    func raisingPipeSignal(_ outcome: SyscallOutcome) -> SyscallOutcome {
        guard case .value(let result) = outcome, result == -Int64(EPIPE) else { return outcome }
        switch disposition(of: Self.pipeSignal) {
        case .ignore, .stop: return outcome
        case .terminate: return .exit(.signaled(Self.pipeSignal))
        case .handler:
            pendingSignal = Self.pipeSignal
            return outcome
        }
    }

    /// pipe(2) and pipe2(2): the two descriptors go to the guest's int[2]; if that cannot be
    /// written, both are closed again and the call gives EFAULT.
    func pipe(_ address: UInt64, flags: Int32) -> SyscallOutcome {
        let ends: (read: Int32, write: Int32)
        do {
            ends = try files.makePipe(flags: flags)
        } catch {
            return .value(-Int64(error.errno))
        }
        // unsafe: a tuple of two Int32s is 8 contiguous bytes (int[2]'s layout), copied into an array before the closure returns.
        guard space.write(address, withUnsafeBytes(of: (ends.read, ends.write)) { Array($0) }) else {
            _ = files.close(ends.read)
            _ = files.close(ends.write)
            return .error(.EFAULT)
        }
        return .success
    }
}
