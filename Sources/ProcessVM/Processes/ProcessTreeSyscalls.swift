import CShims
import Foundation
import Glibc

/// System calls between the processes of a container: fork, exec, wait, kill, process
/// groups and sessions, pipes (see `ProcessTree`).
extension ProcessVM {
    /// x86-64 system-call numbers served here.
    enum ProcessCall {
        static let pipe = 22, dup2 = 33, clone = 56, fork = 57, vfork = 58, execve = 59, wait4 = 61, kill = 62
        static let setpgid = 109, getppid = 110, getpgrp = 111, setsid = 112, getpgid = 121, getsid = 124
        static let tgkill = 234, waitid = 247, pipe2 = 293, closeRange = 436
    }

    static let processTreeSyscalls: [(Int, SyscallHandler)] = [
        (ProcessCall.pipe, { vm, c in vm.pipe(c.a0, flags: 0) }),
        (ProcessCall.pipe2, { vm, c in vm.pipe(c.a0, flags: c.int(c.a1)) }),
        (ProcessCall.closeRange, { vm, c in
            .int(vm.files.closeRange(first: UInt32(truncatingIfNeeded: c.a0), last: UInt32(truncatingIfNeeded: c.a1), flags: UInt32(truncatingIfNeeded: c.a2)))
        }),
        (ProcessCall.clone, { vm, c in vm.clone(c) }),
        (ProcessCall.fork, { vm, _ in vm.forkProcess() }),
        (ProcessCall.vfork, { vm, _ in vm.forkProcess() }),
        (ProcessCall.execve, { vm, c in vm.execve(path: c.a0, arguments: c.a1, environment: c.a2) }),
        (ProcessCall.wait4, { vm, c in vm.wait4(c) }),
        (ProcessCall.waitid, { vm, c in vm.waitid(c) }),
        (ProcessCall.kill, { vm, c in vm.kill(pid: c.int(c.a0), signal: c.int(c.a1)) }),
        (ProcessCall.tgkill, { vm, c in vm.threadKill(group: c.int(c.a0), thread: c.int(c.a1), signal: c.int(c.a2)) }),
        (ProcessCall.getppid, { vm, _ in .int(Int(vm.tree.parent(of: vm.identity.pid) ?? vm.identity.parentPid)) }),
        (ProcessCall.setpgid, { vm, c in
            do throws(LinuxErrno) { try vm.tree.setProcessGroup(caller: vm.identity.pid, pid: c.int(c.a0), group: c.int(c.a1)) } catch { return .error(error) }
            return .success
        }),
        (ProcessCall.getpgrp, { vm, _ in .int(Int(vm.tree.processGroup(of: vm.identity.pid) ?? vm.identity.pid)) }),
        (ProcessCall.getpgid, { vm, c in vm.lookUp(c.int(c.a0)) { vm.tree.processGroup(of: $0) } }),
        (ProcessCall.getsid, { vm, c in vm.lookUp(c.int(c.a0)) { vm.tree.session(of: $0) } }),
        (ProcessCall.setsid, { vm, _ in
            do throws(LinuxErrno) { return .int(Int(try vm.tree.newSession(vm.identity.pid))) } catch { return .error(error) }
        }),
    ]

    /// getpgid and getsid: of the caller (0) or of a process of the container, else ESRCH.
    private func lookUp(_ pid: Int32, _ value: (Int32) -> Int32?) -> SyscallOutcome {
        guard pid >= 0, let found = value(pid == 0 ? identity.pid : pid) else { return .error(.ESRCH) }
        return .int(Int(found))
    }

    // MARK: - kill

    /// kill(2) inside the container: the caller itself (see `signalSelf`), another process,
    /// a process group (-pgid, 0 for the caller's) or all but the first process (-1).
    /// Signal 0 only checks that the target exists; SIGKILL ends it at once; any other
    /// signal goes to its handler or takes its default action there.
    func kill(pid: Int32, signal: Int32) -> SyscallOutcome {
        guard (0...64).contains(signal) else { return .error(.EINVAL) }
        if pid == identity.pid { return signalSelf(pid: pid, signal: signal) }
        let targets: [ProcessVM?]
        do { targets = try tree.signalTargets(caller: identity.pid, pid: pid) } catch { return .error(error) }
        var includesCaller = false
        for target in targets {
            guard let target else { continue }
            if target === self {
                includesCaller = true
                continue
            }
            switch signal {
            case 0: break
            case 9: target.kill()
            default: target.sendSignal(signal)
            }
        }
        return includesCaller ? signalSelf(pid: identity.pid, signal: signal) : .success
    }

    // MARK: - wait4, waitid

    /// wait option bits (include/uapi/linux/wait.h).
    enum WaitOption {
        static let noHang: Int32 = 1
        static let untraced: Int32 = 2
        static let stopped: Int32 = 2
        static let exited: Int32 = 4
        static let continued: Int32 = 8
        static let noWait: Int32 = 0x0100_0000
        static let noThread: Int32 = 0x2000_0000
        static let all: Int32 = 0x4000_0000
        static let clone: Int32 = Int32(bitPattern: 0x8000_0000)
        static let modifiers = noThread | all | clone
    }

    /// The status word wait4 reports (exit code in bits 8-15, or the signal in bits 0-6).
    static func waitStatus(_ status: ExitStatus) -> Int32 {
        switch status {
        case .exited(let code): return (code & 0xFF) << 8
        case .signaled(let signal): return signal & 0x7F
        }
    }

    /// What a wait found: a child that ended, stopped or went on.
    enum WaitFound {
        case ended(ExitStatus)
        case stopped(Int32)
        case continued

        /// wait4's status word: WIFSTOPPED's 0x7f with the signal above it, WIFCONTINUED's 0xffff.
        var statusWord: Int32 {
            switch self {
            case .ended(let status): ProcessVM.waitStatus(status)
            case .stopped(let signal): (signal & 0xFF) << 8 | 0x7F
            case .continued: 0xFFFF
            }
        }
    }

    /// Which changes a wait takes: ended children, stopped ones, ones that went on.
    struct WaitKinds {
        var exited = true
        var stopped = false
        var continued = false
    }

    /// wait4(pid, status, options, rusage).
    private func wait4(_ c: SystemCall) -> SyscallOutcome {
        let pid = c.int(c.a0), options = c.int(c.a2)
        guard options & ~(WaitOption.noHang | WaitOption.untraced | WaitOption.continued | WaitOption.modifiers) == 0 else {
            return .error(.EINVAL)
        }
        let selection: ProcessTree.Selection
        switch pid {
        case Int32.min: return .error(.ESRCH)
        case -1: selection = .any
        case 0: selection = .ownGroup
        case ..<0: selection = .group(-pid)
        default: selection = .pid(pid)
        }
        let found: (pid: Int32, found: WaitFound)?
        let kinds = WaitKinds(exited: true, stopped: options & WaitOption.untraced != 0, continued: options & WaitOption.continued != 0)
        switch waitForChild(selection, kinds: kinds, noHang: options & WaitOption.noHang != 0, keep: false) {
        case .failure(let error): return .error(error)
        case .success(let child): found = child
        }
        guard let found else { return .success }
        // unsafe: the Int32 status word's four bytes are copied into an array before the closure returns.
        if c.a1 != 0, !space.write(c.a1, withUnsafeBytes(of: found.found.statusWord) { Array($0) }) { return .error(.EFAULT) }
        if c.a3 != 0, !space.write(c.a3, [UInt8](repeating: 0, count: Self.rusageSize)) { return .error(.EFAULT) }
        return .int(Int(found.pid))
    }

    /// struct rusage on x86-64: two timevals and fourteen longs (usage is not counted).
    static let rusageSize = 144
    /// siginfo_t's size and the offsets of the fields waitid fills.
    static let siginfoSize = 128

    /// waitid(idtype, id, infop, options, rusage).
    private func waitid(_ c: SystemCall) -> SyscallOutcome {
        let idType = c.int(c.a0), id = c.int(c.a1), options = c.int(c.a3)
        let all: Int32 = 0, byPid: Int32 = 1, byGroup: Int32 = 2
        let known = WaitOption.noHang | WaitOption.stopped | WaitOption.exited | WaitOption.continued | WaitOption.noWait | WaitOption.modifiers
        guard options & ~known == 0, options & (WaitOption.exited | WaitOption.stopped | WaitOption.continued) != 0 else { return .error(.EINVAL) }
        let selection: ProcessTree.Selection
        switch idType {
        case all: selection = .any
        case byPid where id > 0: selection = .pid(id)
        case byGroup where id >= 0: selection = id == 0 ? .ownGroup : .group(id)
        default: return .error(.EINVAL)
        }
        let found: (pid: Int32, found: WaitFound)?
        let kinds = WaitKinds(exited: options & WaitOption.exited != 0, stopped: options & WaitOption.stopped != 0,
                              continued: options & WaitOption.continued != 0)
        switch waitForChild(selection, kinds: kinds, noHang: options & WaitOption.noHang != 0, keep: options & WaitOption.noWait != 0) {
        case .failure(let error): return .error(error)
        case .success(let child): found = child
        }
        if c.a2 != 0 {
            var info = [UInt8](repeating: 0, count: Self.siginfoSize)
            if let found {
                let childExited: Int32 = 1, childKilled: Int32 = 2, childStopped: Int32 = 5, childContinued: Int32 = 6
                let (code, value): (Int32, Int32) = switch found.found {
                case .ended(.exited(let status)): (childExited, status)
                case .ended(.signaled(let signal)): (childKilled, signal)
                case .stopped(let signal): (childStopped, signal)
                case .continued: (childContinued, JobControl.continueSignal)
                }
                let fields: [(Int, Int32)] = [(0, 17), (8, code), (16, found.pid), (20, Int32(bitPattern: identity.uid)), (24, value)]
                for (offset, field) in fields {
                    // unsafe: `field` is an Int32: its 4 bytes go to offset..<offset + 4 <= 28 of the 128-byte `info` (replaceSubrange checks too).
                    withUnsafeBytes(of: field) { info.replaceSubrange(offset..<(offset + 4), with: $0) }
                }
            }
            guard space.write(c.a2, info) else { return .error(.EFAULT) }
        }
        if c.a4 != 0, !space.write(c.a4, [UInt8](repeating: 0, count: Self.rusageSize)) { return .error(.EFAULT) }
        return .success
    }

    /// Waits for a child `selection` names to end (unless `noHang`), interruptibly: a kill
    /// or a signal ends the wait with EINTR. ECHILD when no child matches.
    private func waitForChild(_ selection: ProcessTree.Selection, kinds: WaitKinds, noHang: Bool, keep: Bool) -> Result<(pid: Int32, found: WaitFound)?, LinuxErrno> {
        // Made before the first look, so that a child ending between the look and the poll
        // wakes it.
        let wake = interrupts.wakeup.waitDescriptor()
        while true {
            do {
                switch try tree.reap(parent: identity.pid, selection, keep: keep, exited: kinds.exited, stopped: kinds.stopped, continued: kinds.continued) {
                case .child(let pid, let status): return .success((pid, .ended(status)))
                case .jobChange(let pid, .stopped(let signal)): return .success((pid, .stopped(signal)))
                case .jobChange(let pid, .continued): return .success((pid, .continued))
                case .noneYet: break
                }
            } catch {
                return .failure(error)
            }
            if noHang { return .success(nil) }
            if interrupts.hasPending { return .failure(.EINTR) }
            var entry = pollfd(fd: wake ?? -1, events: Int16(POLLIN), revents: 0)
            // Without an eventfd, look again every 10 ms; the other threads go on meanwhile.
            _ = releasingMachineState { Glibc.poll(&entry, 1, wake == nil ? 10 : -1) }
            if let wake, entry.revents != 0 { interrupts.wakeup.drain(wake) }
        }
    }
}

/// rt_sigsuspend and pause: wait for a signal the mask lets through.
extension ProcessVM {
    static let suspendSyscalls: [(Int, SyscallHandler)] = [
        (34, { vm, _ in vm.suspend(mask: nil) }), // pause
        (130, { vm, c in // rt_sigsuspend
            guard c.a1 == 8 else { return .error(.EINVAL) }
            guard let mask = vm.space.readValue(c.a0, as: UInt64.self) else { return .error(.EFAULT) }
            return vm.suspend(mask: mask)
        }),
    ]

    /// Waits, with `mask` as the signal mask meanwhile, until a signal it lets through (or a
    /// kill) arrives; that signal is taken for delivery under `mask`, and the call gives
    /// EINTR with the old mask back, which the handler's frame saves and restores.
    private func suspend(mask: UInt64?) -> SyscallOutcome {
        let old = signals.blocked
        if let mask { signals.blocked = mask & ~SignalState.unblockable }
        let wake = interrupts.wakeup.waitDescriptor()
        while pendingSignal == nil && !interrupts.hasPending {
            var entry = pollfd(fd: wake ?? -1, events: Int16(POLLIN), revents: 0)
            _ = releasingMachineState { Glibc.poll(&entry, 1, wake == nil ? 10 : -1) }
            if let wake, entry.revents != 0 { interrupts.wakeup.drain(wake) }
        }
        if pendingSignal == nil, let signal = interrupts.takeSignal() { pendingSignal = signal }
        signals.blocked = old
        return .error(.EINTR)
    }
}
