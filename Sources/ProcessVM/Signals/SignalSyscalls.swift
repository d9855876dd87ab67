/// Signal dispositions and masks, kept so the program sees consistent answers and so stop
/// can tell whether the program handles SIGTERM.
struct SignalState {
    /// Kernel `struct sigaction` per signal 1...64: handler, flags, restorer, mask.
    var actions = [(handler: UInt64, flags: UInt64, restorer: UInt64, mask: UInt64)](repeating: (0, 0, 0, 0), count: 65)
    var blocked: UInt64 = 0
    /// `stack_t` of sigaltstack: ss_sp, ss_flags, ss_size.
    var alternateStack: (base: UInt64, flags: Int32, size: UInt64) = (0, 2, 0) // SS_DISABLE

    static let ignore: UInt64 = 1
    static let unblockable: UInt64 = (1 << (9 - 1)) | (1 << (19 - 1)) // SIGKILL, SIGSTOP
}

extension ProcessVM {
    static let childSignal = 17

    static let signalSyscalls: [(Int, SyscallHandler)] = [
        (13, { vm, c in vm.sigaction(c) }),
        (14, { vm, c in vm.sigprocmask(c) }),
        (15, { vm, _ in vm.signalReturn() }),
        (131, { vm, c in vm.sigaltstack(c) }),
        // kill and tgkill: `processTreeSyscalls` (they reach the container's other processes too).
    ]

    private func sigaction(_ c: SystemCall) -> SyscallOutcome {
        let signal = Int(c.int(c.a0))
        guard (1...64).contains(signal), c.a3 == 8 else { return .error(.EINVAL) }
        var newAction: (UInt64, UInt64, UInt64, UInt64)?
        if c.a1 != 0 {
            guard signal != 9, signal != 19 else { return .error(.EINVAL) }
            guard let bytes = space.read(c.a1, count: 32) else { return .error(.EFAULT) }
            // unsafe: 32 bytes read, loads at 0/8/16/24, unaligned loads (no alignment assumed).
            newAction = bytes.withUnsafeBytes { ($0.loadUnaligned(as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self), $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self), $0.loadUnaligned(fromByteOffset: 24, as: UInt64.self)) }
        }
        if c.a2 != 0 {
            let old = signals.actions[signal]
            // unsafe: four UInt64s are 32 contiguous bytes (the kernel's sigaction), copied into an array in the closure.
            guard space.write(c.a2, withUnsafeBytes(of: (old.handler, old.flags, old.restorer, old.mask)) { Array($0) }) else { return .error(.EFAULT) }
        }
        if let newAction {
            signals.actions[signal] = newAction
            if signal == Self.childSignal {
                // SIG_IGN or SA_NOCLDWAIT: children leave no zombies; a handler: SIGCHLD is sent.
                let noChildWait: UInt64 = 2
                tree.setAutoReaping(identity.pid, newAction.0 == SignalState.ignore || newAction.1 & noChildWait != 0)
                handlesChildSignal.store(newAction.0 > SignalState.ignore, ordering: .relaxed)
                let noChildStop: UInt64 = 1
                ignoresChildStops.store(newAction.1 & noChildStop != 0, ordering: .relaxed)
            }
        }
        return .success
    }

    private func sigprocmask(_ c: SystemCall) -> SyscallOutcome {
        guard c.a3 == 8 else { return .error(.EINVAL) }
        let old = signals.blocked
        if c.a1 != 0 {
            guard let set = space.readValue(c.a1, as: UInt64.self) else { return .error(.EFAULT) }
            switch c.int(c.a0) {
            case 0: signals.blocked |= set
            case 1: signals.blocked &= ~set
            case 2: signals.blocked = set
            default: return .error(.EINVAL)
            }
            signals.blocked &= ~SignalState.unblockable
        }
        // unsafe: the UInt64 mask's eight bytes are copied into an array before the closure returns.
        if c.a2 != 0, !space.write(c.a2, withUnsafeBytes(of: old) { Array($0) }) { return .error(.EFAULT) }
        return .success
    }

    private func sigaltstack(_ c: SystemCall) -> SyscallOutcome {
        let old = signals.alternateStack
        if c.a0 != 0 {
            guard let bytes = space.read(c.a0, count: 24) else { return .error(.EFAULT) }
            // unsafe: 24 bytes read, loads at 0/8/16 end by 24, unaligned loads (no alignment assumed).
            let (base, flags, size) = bytes.withUnsafeBytes { ($0.loadUnaligned(as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: Int32.self), $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self)) }
            guard flags & ~2 == 0 else { return .error(.EINVAL) }
            signals.alternateStack = (base, flags, size)
        }
        // unsafe: (UInt64, Int32, Int32, UInt64) is laid out as stack_t, 24 bytes without padding, copied into an array in the closure.
        if c.a1 != 0, !space.write(c.a1, withUnsafeBytes(of: (old.base, old.flags, Int32(0), old.size)) { Array($0) }) { return .error(.EFAULT) }
        return .success
    }

    /// kill/tgkill aimed at the program itself: signal 0 probes; an ignored signal does
    /// nothing; a handled one runs its handler when the call returns; any other ends the
    /// program as its default action would (abort() ends in 134).
    func signalSelf(pid: Int32, signal: Int32) -> SyscallOutcome {
        guard pid == identity.pid || pid == 0 else { return .error(.ESRCH) }
        guard (0...64).contains(signal) else { return .error(.EINVAL) }
        if signal == 0 { return .success }
        if JobControl.stoppingByDefault.contains(signal) { jobControl.stopSent() }
        switch disposition(of: signal) {
        case .ignore: return .success
        case .terminate: return .exit(.signaled(signal))
        case .handler, .stop:
            // Taken when the call returns: a handler runs, or the process stops there.
            pendingSignal = signal
            return .success
        }
    }
}
