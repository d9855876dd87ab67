import CShims
import Glibc
import KVM

/// Delivery of a signal sent to the container (stop's SIGTERM) to the program's own
/// handler, the way Linux does it: a `rt_sigframe` (return address, ucontext, siginfo) is
/// pushed below the red zone, the handler runs with (signal, &info, &context), and its
/// return through `sa_restorer` calls rt_sigreturn, which restores the saved registers.
/// FPU state is not saved in the frame (fpstate is NULL), so a handler must not rely on
/// the interrupted code's floating-point registers surviving — a documented gap.
extension ProcessVM {
    private static let frameSize = 8 + 304 + 128 // pretcode, ucontext, siginfo
    private static let ucontextOffset = 8
    private static let siginfoOffset = 8 + 304
    private static let sigcontextOffset = 40 // within ucontext: flags, link, stack_t
    private static let saRestorer: UInt64 = 0x0400_0000

    /// What the program does with `signal` now.
    enum Disposition {
        case terminate
        case ignore
        case handler(UInt64)
        /// A job-control stop (see `JobControl`).
        case stop
    }

    func disposition(of signal: Int32) -> Disposition {
        if signal == JobControl.stopSignal { return .stop }
        let action = signals.actions[Int(signal)]
        if action.handler == SignalState.ignore { return .ignore }
        if action.handler == 0 {
            let ignoredByDefault: Set<Int32> = [17, 18, 23, 28] // SIGCHLD, SIGCONT, SIGURG, SIGWINCH
            if JobControl.stoppingByDefault.contains(signal) { return .stop }
            return ignoredByDefault.contains(signal) ? .ignore : .terminate
        }
        return .handler(action.handler)
    }

    /// Saves `interrupted` (the registers the program resumes with after its handler) in a
    /// signal frame and points the vCPU at the handler. False if the frame cannot be
    /// written (a bad stack), in which case Linux kills the program with SIGSEGV.
    func enterHandler(of signal: Int32, handler: UInt64, interrupted: kvm_regs) -> Bool {
        let action = signals.actions[Int(signal)]
        guard action.flags & Self.saRestorer != 0 else { return false }
        let frame = ((interrupted.rsp &- 128 &- UInt64(Self.frameSize)) & ~15) &- 8
        var bytes = [UInt8](repeating: 0, count: Self.frameSize)
        func put<T>(_ value: T, _ offset: Int) {
            // unsafe: every `put` passes a trivial integer, whose bytes replaceSubrange copies (range-checked) into `bytes` inside the closure.
            withUnsafeBytes(of: value) { bytes.replaceSubrange(offset..<(offset + $0.count), with: $0) }
        }
        put(action.restorer, 0)
        let context = Self.ucontextOffset + Self.sigcontextOffset
        let general: [UInt64] = [interrupted.r8, interrupted.r9, interrupted.r10, interrupted.r11, interrupted.r12, interrupted.r13,
                                 interrupted.r14, interrupted.r15, interrupted.rdi, interrupted.rsi, interrupted.rbp, interrupted.rbx,
                                 interrupted.rdx, interrupted.rax, interrupted.rcx, interrupted.rsp, interrupted.rip, interrupted.rflags]
        for (index, value) in general.enumerated() { put(value, context + index * 8) }
        put(UInt16(X86.Selector.userCode), context + 144)
        put(UInt16(X86.Selector.userData), context + 150)
        put(signals.blocked, Self.ucontextOffset + 40 + 256) // uc_sigmask
        put(signal, Self.siginfoOffset) // si_signo
        put(identity.pid, Self.siginfoOffset + 16) // si_pid: sent by "the engine", as if by pid 1's parent
        guard space.write(frame, bytes) else { return false }

        signals.blocked |= action.mask | (1 << UInt64(signal - 1))
        var regs = interrupted
        regs.rip = handler
        regs.rsp = frame
        regs.rdi = UInt64(signal)
        regs.rsi = frame + UInt64(Self.siginfoOffset)
        regs.rdx = frame + UInt64(Self.ucontextOffset)
        regs.rax = 0
        regs.rflags &= ~(1 << 10) // DF clear on handler entry
        resumeInUserMode(with: regs)
        return true
    }

    /// rt_sigreturn: the registers and mask saved by `enterHandler`, read back from the
    /// frame the handler returned through (RSP points at its ucontext).
    func signalReturn() -> SyscallOutcome {
        let current = vcpu.syncRegisters.pointee.regs
        guard let bytes = space.read(current.rsp, count: 304) else { return .exit(.signaled(11)) }
        // unsafe: `bytes` is the 304 bytes read, and the last load (the mask at 296) ends at 304; loadUnaligned needs no alignment.
        func load(_ offset: Int) -> UInt64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) } }
        let context = Self.sigcontextOffset
        var regs = current
        (regs.r8, regs.r9, regs.r10, regs.r11) = (load(context), load(context + 8), load(context + 16), load(context + 24))
        (regs.r12, regs.r13, regs.r14, regs.r15) = (load(context + 32), load(context + 40), load(context + 48), load(context + 56))
        (regs.rdi, regs.rsi, regs.rbp, regs.rbx) = (load(context + 64), load(context + 72), load(context + 80), load(context + 88))
        (regs.rdx, regs.rax, regs.rcx, regs.rsp) = (load(context + 96), load(context + 104), load(context + 112), load(context + 120))
        regs.rip = load(context + 128)
        // The program may not set privileged flags (IOPL, VM, ...): keep only the arithmetic,
        // direction, trap and alignment bits, as Linux does.
        regs.rflags = (load(context + 136) & 0x4_0DD5) | X86.rflagsReserved | (1 << 9)
        guard regs.rip < AddressSpace.userTop, regs.rsp < AddressSpace.userTop else { return .exit(.signaled(11)) }
        signals.blocked = load(256 + 40) & ~SignalState.unblockable
        resumeInUserMode(with: regs)
        return .resumed
    }

    /// Sets every general register and user-mode segments: for returns that do not go back
    /// through the system-call stub (handler entry, rt_sigreturn).
    func resumeInUserMode(with regs: kvm_regs) {
        let sync = vcpu.syncRegisters
        sync.pointee.regs = regs
        sync.pointee.sregs.cs = CPUSetup.segment(selector: X86.Selector.userCode, code: true)
        sync.pointee.sregs.ss = CPUSetup.segment(selector: X86.Selector.userData, code: false)
        vcpu.markDirty(regs: true, sregs: true)
    }
}

/// The engine's own signal set-up, done once per process: a signal with an empty handler
/// (no SA_RESTART) that kicks a vCPU thread out of KVM_RUN with EINTR, and SIGPIPE ignored
/// so that a guest writing to a closed pipe gets EPIPE instead of killing the engine.
enum EngineSignals {
    static let vcpuKick = SIGUSR2
    static let installed: Bool = {
        signal(SIGPIPE, SIG_IGN)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        return sigaction(vcpuKick, &action, nil) == 0
    }()
}
