import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// eventfd, timerfd and epoll: host objects of the same kind behind guest descriptors, set
/// O_NONBLOCK for the engine (a guest that waits on one waits in poll, interruptibly); the
/// guest's own O_NONBLOCK is kept in the file's status flags, as for pipes.
extension GuestFiles {
    /// Installs a host object the guest made at the lowest free descriptor.
    private func installObject(_ fd: Int32, kind: GuestObjectKind, guestFlags: Int32, closeOnExec: Bool) throws(SystemError) -> Int {
        let host = FileDescriptor(adopting: fd)
        let index = try lowestFreeDescriptor(from: 0)
        let file = OpenFile(host: host, isInsideRootfs: false, access: .nonBlocking, guestStatusFlags: O_RDWR | guestFlags & O_NONBLOCK)
        file.kind = kind
        return install(file, at: index, closeOnExec: closeOnExec)
    }

    /// eventfd2(initial, flags): EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE.
    func makeEventFD(initial: UInt32, flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            let semaphore = GuestObjectKind.eventSemaphoreFlag
            guard flags & ~(O_CLOEXEC | O_NONBLOCK | semaphore) == 0 else { throw SystemError(call: "eventfd2 flags", errno: EINVAL) }
            try GuestDescriptorBudget.requireRoom()
            let fd = cshims_eventfd(initial, flags & semaphore)
            guard fd >= 0 else { throw SystemError(call: "eventfd2", errno: errno == EMFILE ? ENFILE : errno) }
            return try installObject(fd, kind: .eventFD(semaphore: flags & semaphore != 0), guestFlags: flags, closeOnExec: flags & O_CLOEXEC != 0)
        }
    }

    /// timerfd_create(clock, flags): CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME (the
    /// alarm clocks need CAP_WAKE_ALARM: EPERM); TFD_CLOEXEC, TFD_NONBLOCK.
    func makeTimerFD(clock: Int32, flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            guard flags & ~(O_CLOEXEC | O_NONBLOCK) == 0 else { throw SystemError(call: "timerfd_create flags", errno: EINVAL) }
            switch clock {
            case CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME: break
            case CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM: throw SystemError(call: "timerfd_create alarm clock", errno: EPERM)
            default: throw SystemError(call: "timerfd_create clock", errno: EINVAL)
            }
            try GuestDescriptorBudget.requireRoom()
            let fd = cshims_timerfd_create(clock)
            guard fd >= 0 else { throw SystemError(call: "timerfd_create", errno: errno == EMFILE ? ENFILE : errno) }
            return try installObject(fd, kind: .timerFD(clock: clock), guestFlags: flags, closeOnExec: flags & O_CLOEXEC != 0)
        }
    }

    /// The host timerfd behind guest descriptor `fd`, or EINVAL when it is not one (EBADF
    /// when it is not open), as Linux answers.
    func timerHost(_ fd: Int32) throws(SystemError) -> Int32 {
        let file = try openFile(fd)
        guard case .timerFD = file.kind else { throw SystemError(call: "timerfd", errno: EINVAL) }
        return file.hostFD
    }

    /// epoll_create1(flags): EPOLL_CLOEXEC only.
    func makeEpoll(flags: Int32) -> Int {
        linuxResult { () throws(SystemError) in
            guard flags & ~O_CLOEXEC == 0 else { throw SystemError(call: "epoll_create1 flags", errno: EINVAL) }
            try GuestDescriptorBudget.requireRoom()
            let fd = cshims_epoll_create()
            guard fd >= 0 else { throw SystemError(call: "epoll_create1", errno: errno == EMFILE ? ENFILE : errno) }
            return try installObject(fd, kind: .epoll(EpollInterestList()), guestFlags: 0, closeOnExec: flags & O_CLOEXEC != 0)
        }
    }

    /// The host epoll behind guest descriptor `fd` and its registrations; EINVAL when it is
    /// not an epoll instance.
    func epollHost(_ fd: Int32) throws(SystemError) -> (host: Int32, list: EpollInterestList) {
        let file = try openFile(fd)
        guard case .epoll(let list) = file.kind else { throw SystemError(call: "epoll", errno: EINVAL) }
        return (file.hostFD, list)
    }

    /// epoll_ctl(epfd, op, fd, event): the host's epoll_ctl on the files behind them (which
    /// refuses regular files and folders with EPERM, a loop with ELOOP, as Linux does); the
    /// guest's event mask and data are kept for copies of the instance.
    func epollControl(_ epfd: Int32, operation: Int32, target fd: Int32, events: UInt32, data: UInt64) -> Int {
        linuxResult { () throws(SystemError) in
            let (host, list) = try epollHost(epfd)
            let target = try openFile(fd)
            guard epfd != fd else { throw SystemError(call: "epoll_ctl on itself", errno: EINVAL) }
            guard cshims_epoll_ctl(host, operation, target.hostFD, events, data) == 0 else {
                throw SystemError(call: "epoll_ctl", errno: errno)
            }
            if operation == CSHIMS_EPOLL_CTL_DEL { list.remove(target) } else { list.set(target, events: events, data: data) }
            return 0
        }
    }
}
