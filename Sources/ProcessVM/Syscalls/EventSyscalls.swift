import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// eventfd, timerfd and epoll (issue #14's event loops): reads and writes of eventfds and
/// timerfds go through the ordinary transfer path (waiting, when the guest waits, in an
/// interruptible poll); epoll_wait waits the same way on the host epoll.
extension ProcessVM {
    enum EventCall {
        static let epollCreate = 213, epollWait = 232, epollControl = 233, epollPwait = 281, timerfdCreate = 283
        static let eventfd = 284, timerfdSettime = 286, timerfdGettime = 287, eventfd2 = 290, epollCreate1 = 291
        static let epollPwait2 = 441
    }

    /// Bytes of a guest `struct epoll_event` (packed on x86-64: u32 events, u64 data).
    static let epollEventSize = 12
    /// Events one epoll_wait returns at most (the rest wait for the next call, as Linux's
    /// round robin would give them): the engine's buffer stays small whatever maxevents is.
    static let epollEventsPerCall = 1024
    /// Linux's bound on maxevents: INT_MAX / sizeof(struct epoll_event).
    static let epollMaxEvents = Int(Int32.max) / 12

    static let eventSyscalls: [(Int, SyscallHandler)] = [
        (EventCall.eventfd, { vm, c in .int(vm.files.makeEventFD(initial: UInt32(truncatingIfNeeded: c.a0), flags: 0)) }),
        (EventCall.eventfd2, { vm, c in .int(vm.files.makeEventFD(initial: UInt32(truncatingIfNeeded: c.a0), flags: c.int(c.a1))) }),
        (EventCall.timerfdCreate, { vm, c in .int(vm.files.makeTimerFD(clock: c.int(c.a0), flags: c.int(c.a1))) }),
        (EventCall.timerfdSettime, { vm, c in vm.timerfdSettime(c) }),
        (EventCall.timerfdGettime, { vm, c in vm.timerfdGettime(c) }),
        (EventCall.epollCreate, { vm, c in c.int(c.a0) <= 0 ? .error(.EINVAL) : .int(vm.files.makeEpoll(flags: 0)) }),
        (EventCall.epollCreate1, { vm, c in .int(vm.files.makeEpoll(flags: c.int(c.a0))) }),
        (EventCall.epollControl, { vm, c in vm.epollControl(c) }),
        (EventCall.epollWait, { vm, c in vm.epollWait(c.int(c.a0), c.a1, c.int(c.a2), timeout: c.int(c.a3) < 0 ? nil : Double(c.int(c.a3)) / 1000) }),
        (EventCall.epollPwait, { vm, c in vm.epollWait(c.int(c.a0), c.a1, c.int(c.a2), timeout: c.int(c.a3) < 0 ? nil : Double(c.int(c.a3)) / 1000) }),
        (EventCall.epollPwait2, { vm, c in
            guard c.a3 != 0 else { return vm.epollWait(c.int(c.a0), c.a1, c.int(c.a2), timeout: nil) }
            guard let timeout = vm.space.read(c.a3, count: 16) else { return .error(.EFAULT) }
            // unsafe: 16 bytes read, loads at 0 and 8, unaligned loads (no alignment assumed).
            let (seconds, nanoseconds) = timeout.withUnsafeBytes { ($0.loadUnaligned(as: Int64.self), $0.loadUnaligned(fromByteOffset: 8, as: Int64.self)) }
            guard seconds >= 0, (0..<1_000_000_000).contains(nanoseconds) else { return .error(.EINVAL) }
            return vm.epollWait(c.int(c.a0), c.a1, c.int(c.a2), timeout: Double(seconds) + Double(nanoseconds) / 1e9)
        }),
    ]

    /// timerfd_settime(fd, flags, new, old): the guest's itimerspec read once, checked by
    /// the host's call (tv_nsec in range, flags TFD_TIMER_ABSTIME and CANCEL_ON_SET).
    private func timerfdSettime(_ c: SystemCall) -> SyscallOutcome {
        let host: Int32
        do { host = try files.timerHost(c.int(c.a0)) } catch { return .value(-Int64(error.errno)) }
        guard let bytes = space.read(c.a2, count: 32) else { return .error(.EFAULT) }
        // unsafe: 32 bytes read and index * 8 + 8 <= 32; loadUnaligned needs no alignment.
        let setting = (0..<4).map { index in bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: index * 8, as: Int64.self) } }
        var old = [Int64](repeating: 0, count: 4)
        guard cshims_timerfd_settime(host, c.int(c.a1), setting, &old) == 0 else { return .value(-Int64(cshims_errno())) }
        // unsafe: `old` is four Int64s, 32 contiguous bytes, copied into an array in the closure.
        if c.a3 != 0, !space.write(c.a3, old.withUnsafeBytes { Array($0) }) { return .error(.EFAULT) }
        return .success
    }

    private func timerfdGettime(_ c: SystemCall) -> SyscallOutcome {
        let host: Int32
        do { host = try files.timerHost(c.int(c.a0)) } catch { return .value(-Int64(error.errno)) }
        var current = [Int64](repeating: 0, count: 4)
        guard cshims_timerfd_gettime(host, &current) == 0 else { return .value(-Int64(cshims_errno())) }
        // unsafe: `current` is four Int64s (an itimerspec's 32 bytes), copied into an array in the closure.
        return space.write(c.a1, current.withUnsafeBytes { Array($0) }) ? .success : .error(.EFAULT)
    }

    private func epollControl(_ c: SystemCall) -> SyscallOutcome {
        let operation = c.int(c.a1)
        guard [CSHIMS_EPOLL_CTL_ADD, CSHIMS_EPOLL_CTL_DEL, CSHIMS_EPOLL_CTL_MOD].contains(operation) else { return .error(.EINVAL) }
        var events: UInt32 = 0, data: UInt64 = 0
        if operation != CSHIMS_EPOLL_CTL_DEL {
            guard let bytes = space.read(c.a3, count: Self.epollEventSize) else { return .error(.EFAULT) }
            // unsafe: epollEventSize (12) bytes read: the UInt32 at 0 and the UInt64 at 4 end by 12; loadUnaligned needs no alignment.
            events = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            data = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt64.self) }
        }
        return .int(files.epollControl(c.int(c.a0), operation: operation, target: c.int(c.a2), events: events, data: data))
    }

    /// epoll_wait: up to `maxEvents` (at most `epollEventsPerCall`) ready events into the
    /// guest's array, waiting (interruptibly: kill, stop and signals end it with EINTR) until
    /// one is ready or the timeout passes. The sigmask of epoll_pwait is not applied (as
    /// ppoll's here).
    private func epollWait(_ epfd: Int32, _ address: UInt64, _ maxEvents: Int32, timeout: Double?) -> SyscallOutcome {
        // The open file is held for the whole call: another thread closing `epfd` meanwhile
        // cannot make its host number another file's.
        let epoll: OpenFile
        do {
            _ = try files.epollHost(epfd)
            epoll = try files.openFile(epfd)
        } catch {
            return .value(-Int64(error.errno))
        }
        defer { withExtendedLifetime(epoll) {} }
        let host = epoll.hostFD
        guard maxEvents > 0, Int(maxEvents) <= Self.epollMaxEvents else { return .error(.EINVAL) }
        let count = min(Int(maxEvents), Self.epollEventsPerCall)
        // The whole array must be writable, as Linux checks it first.
        guard space.withUserBuffer(address, count * Self.epollEventSize, writable: true, { _ in 0 }) != nil else { return .error(.EFAULT) }
        let deadline = timeout.map { Date(timeIntervalSinceNow: $0) }
        var out = [UInt8](repeating: 0, count: count * Self.epollEventSize)
        var found: Int32 = 0
        while true {
            found = cshims_epoll_collect(host, &out, Int32(count))
            if found < 0 && cshims_errno() != EINTR { return .value(-Int64(cshims_errno())) }
            if found > 0 { break }
            if deadline.map({ $0.timeIntervalSinceNow <= 0 }) ?? false { return .int(0) }
            if interrupts.hasPending { return .error(.EINTR) }
            let slice = deadline.map { Int32(max(0, min(3_600_000, ($0.timeIntervalSinceNow * 1000).rounded(.up)))) }
            // The calling thread's, captured under the lock; the process's other threads go on meanwhile.
            let waits = interrupts
            guard releasingMachineState({ waits.waitUntilReady(host, events: Int16(POLLIN), milliseconds: slice ?? -1) }) else { return .error(.EINTR) }
        }
        out.removeSubrange((Int(found) * Self.epollEventSize)...)
        return space.write(address, out) ? .int(Int(found)) : .error(.EFAULT)
    }
}
