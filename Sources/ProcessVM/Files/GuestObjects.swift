import CShims
import Foundation
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// Kernel objects a guest makes for itself — pipes, eventfds, timerfds, epoll instances —
/// each backed by a host object of the same kind that only its container reaches. Forked
/// processes of the container share them as Linux's fork does (host dup); a container forked
/// from a warm parent gets fresh ones in the same state (see `freshForAnotherContainer`),
/// never the parent's, which every sibling would share.
enum GuestObjectKind {
    /// Anything else: a file of the rootfs, a standard stream, an allowlisted device.
    case file
    /// One end of a pipe the guest made (the host pipe's inode ties the two ends together).
    case pipe
    case eventFD(semaphore: Bool)
    case timerFD(clock: Int32)
    case epoll(EpollInterestList)

    /// EFD_SEMAPHORE (Swift's Glibc module lacks sys/eventfd.h).
    static let eventSemaphoreFlag: Int32 = 1
}

/// The two ends of a fresh pipe made for another container, shared by the copies of both
/// ends of the original (closed when the copies are made: each copy holds a dup).
final class PipeCopy {
    let read: FileDescriptor
    let write: FileDescriptor

    init(read: consuming FileDescriptor, write: consuming FileDescriptor) {
        self.read = read
        self.write = write
    }
}

/// The registrations of one guest epoll instance, as the guest made them: the engine replays
/// them on a fresh host epoll for a container forked from a warm parent. A target that has
/// been closed everywhere is gone from the host's list too; its entry here goes with it
/// (weak), as Linux drops the registration when the file is closed.
final class EpollInterestList {
    struct Registration {
        weak var target: OpenFile?
        var events: UInt32
        var data: UInt64
    }

    private(set) var registrations: [ObjectIdentifier: Registration] = [:]

    func set(_ target: OpenFile, events: UInt32, data: UInt64) {
        registrations[ObjectIdentifier(target)] = Registration(target: target, events: events, data: data)
    }

    func remove(_ target: OpenFile) {
        registrations[ObjectIdentifier(target)] = nil
    }
}

extension OpenFile {
    /// A fresh object for a container forked from a warm parent, in the state this one has
    /// now: a pipe end of a fresh pipe holding the same bytes (`pipes` pairs the two ends
    /// of one host pipe by inode), an eventfd with the same count, a timerfd armed for what
    /// is left of the same timer, an empty epoll instance (its registrations are replayed
    /// by `replayRegistrations` once every file of the table has its copy). Nil for `.file`.
    func freshForAnotherContainer(pipes: inout [UInt64: PipeCopy]) throws(SystemError) -> OpenFile? {
        switch kind {
        case .file:
            return nil
        case .pipe:
            let inode = UInt64(try HostFileCalls.status(hostFD).st_ino)
            if pipes[inode] == nil {
                var ends: [Int32] = [-1, -1]
                guard cshims_pipe_nonblocking(&ends) == 0 else { throw SystemError(call: "pipe2", errno: errno) }
                let fresh = PipeCopy(read: FileDescriptor(adopting: ends[0]), write: FileDescriptor(adopting: ends[1]))
                // The bytes waiting in the parent's pipe, copied without taking them (tee):
                // possible from the read end only; without one nobody can read them anyway.
                if let flags = guestStatusFlags, flags & O_ACCMODE == O_RDONLY {
                    _ = cshims_pipe_tee(hostFD, fresh.write.rawValue)
                }
                pipes[inode] = fresh
            }
            let isReadEnd = (guestStatusFlags ?? 0) & O_ACCMODE == O_RDONLY
            guard let fresh = pipes[inode] else { throw SystemError(call: "pipe copy", errno: EBADF) }
            let copy = OpenFile(host: try HostFileCalls.duplicate(isReadEnd ? fresh.read.rawValue : fresh.write.rawValue), isInsideRootfs: false,
                                access: .nonBlocking, guestStatusFlags: guestStatusFlags)
            copy.kind = .pipe
            return copy
        case .eventFD(let semaphore):
            let count = Self.eventCount(hostFD)
            let fresh = cshims_eventfd(UInt32(min(count, UInt64(UInt32.max))), semaphore ? 1 : 0)
            guard fresh >= 0 else { throw SystemError(call: "eventfd", errno: errno) }
            if count > UInt64(UInt32.max) {
                var rest = count - UInt64(UInt32.max)
                _ = Glibc.write(fresh, &rest, 8)
            }
            let copy = OpenFile(host: FileDescriptor(adopting: fresh), isInsideRootfs: false, access: .nonBlocking, guestStatusFlags: guestStatusFlags)
            copy.kind = kind
            return copy
        case .timerFD(let clock):
            let fresh = cshims_timerfd_create(clock)
            guard fresh >= 0 else { throw SystemError(call: "timerfd_create", errno: errno) }
            var setting = [Int64](repeating: 0, count: 4)
            // What is left of the parent's timer, armed relative to now.
            if cshims_timerfd_gettime(hostFD, &setting) == 0, setting[2] != 0 || setting[3] != 0 {
                _ = cshims_timerfd_settime(fresh, 0, setting, nil)
            }
            let copy = OpenFile(host: FileDescriptor(adopting: fresh), isInsideRootfs: false, access: .nonBlocking, guestStatusFlags: guestStatusFlags)
            copy.kind = kind
            return copy
        case .epoll:
            let fresh = cshims_epoll_create()
            guard fresh >= 0 else { throw SystemError(call: "epoll_create1", errno: errno) }
            let copy = OpenFile(host: FileDescriptor(adopting: fresh), isInsideRootfs: false, access: .nonBlocking, guestStatusFlags: guestStatusFlags)
            copy.kind = .epoll(EpollInterestList())
            return copy
        }
    }

    /// An eventfd's count, from the kernel's fdinfo ("eventfd-count: <hex>"), without
    /// reading it (a read would take it, or one of it in semaphore mode).
    static func eventCount(_ fd: Int32) -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("eventfd-count:") {
            return UInt64(line.dropFirst("eventfd-count:".count).trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
        }
        return 0
    }

    /// For a fresh epoll instance made by `freshForAnotherContainer` from `original`: adds
    /// the original's registrations whose targets have copies (`copies`, by original).
    func replayRegistrations(of original: OpenFile, copies: [ObjectIdentifier: OpenFile]) {
        guard case .epoll(let originalList) = original.kind, case .epoll(let list) = kind else { return }
        for (key, registration) in originalList.registrations {
            guard registration.target != nil, let target = copies[key] else { continue }
            if cshims_epoll_ctl(hostFD, CSHIMS_EPOLL_CTL_ADD, target.hostFD, registration.events, registration.data) == 0 {
                list.set(target, events: registration.events, data: registration.data)
            }
        }
    }
}
