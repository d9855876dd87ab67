import Foundation
import HostSystem
import KVM

/// Threads: clone with CLONE_THREAD (and clone3, which glibc's pthread_create tries first)
/// makes another vCPU of the process's VM, run by a host thread of its own; exit ends one
/// thread, exit_group all; tgkill and tkill reach one thread; set_robust_list and
/// get_robust_list keep the list's head, walked when the thread exits (`RobustList.swift`).
extension ProcessVM {
    enum ThreadCall {
        static let tkill = 200, setRobustList = 273, getRobustList = 274, clone3 = 435
    }

    /// struct clone_args (include/uapi/linux/sched.h): its fields' offsets and sizes.
    enum CloneArguments {
        static let flags = 0, childTid = 16, parentTid = 24, exitSignal = 32, stack = 40, stackSize = 48, tls = 56
        static let setTid = 64, setTidSize = 72, cgroup = 80
        /// CLONE_ARGS_SIZE_VER0, and the size of the version this reads (VER2).
        static let smallest = 64, known = 88
        /// Past a page Linux gives E2BIG.
        static let largest = 4096
    }

    /// The size of struct robust_list_head, the only length set_robust_list takes.
    static let robustListHeadSize: UInt64 = 24

    /// The flags a thread must have: same memory, filesystem information, descriptors and
    /// signal handlers (what pthread_create passes), and those it may have besides.
    static let threadFlagsRequired = CloneFlag.vm | CloneFlag.fs | CloneFlag.files | CloneFlag.sighand | CloneFlag.thread
    static let threadFlagsAllowed = threadFlagsRequired | CloneFlag.sysvsem | CloneFlag.settls | CloneFlag.parentSettid
        | CloneFlag.childCleartid | CloneFlag.childSettid | CloneFlag.detached | CloneFlag.untraced | CloneFlag.io

    static let threadSyscalls: [(Int, SyscallHandler)] = [
        (ThreadCall.tkill, { vm, c in vm.threadKill(group: nil, thread: c.int(c.a0), signal: c.int(c.a1)) }),
        (ThreadCall.setRobustList, { vm, c in
            guard c.a1 == robustListHeadSize else { return .error(.EINVAL) }
            vm.current.robustList = (c.a0, c.a1)
            return .success
        }),
        (ThreadCall.getRobustList, { vm, c in vm.getRobustList(c) }),
        (ThreadCall.clone3, { vm, c in vm.clone3(c) }),
    ]

    /// clone with CLONE_THREAD: a new thread starting at the call's return with `stack`
    /// (the caller's when 0) and, with CLONE_SETTLS, `tls` as its fs base.
    func cloneThread(flags: UInt64, stack: UInt64, parentTidAddress: UInt64, childTidAddress: UInt64, tls: UInt64) -> SyscallOutcome {
        // CLONE_THREAD needs CLONE_SIGHAND, which needs CLONE_VM (as Linux checks).
        guard flags & CloneFlag.sighand != 0, flags & CloneFlag.vm != 0 else { return .error(.EINVAL) }
        guard flags & Self.threadFlagsRequired == Self.threadFlagsRequired, flags & ~(Self.threadFlagsAllowed | CloneFlag.exitSignalMask) == 0 else {
            // A thread with its own descriptor table or filesystem information is not served.
            recordMissing(ProcessCall.clone)
            return .error(.ENOSYS)
        }
        guard stack < AddressSpace.userTop else { return .error(.EINVAL) }
        let tls: UInt64? = flags & CloneFlag.settls != 0 ? tls : nil
        if let tls, tls >= AddressSpace.userTop { return .error(.EPERM) }
        // A warm parent is forked as one vCPU: it gets no threads while it is made.
        guard !stopsAtFirstStandardInputRead, stopsAtMain == nil else {
            recordMissing(ProcessCall.clone)
            return .error(.ENOSYS)
        }
        let tid: Int32
        do { tid = try tree.reserveThreadID() } catch { return .error(error) }
        let threadVCPU: VCPU
        do {
            threadVCPU = try makeThreadVCPU(stack: stack == 0 ? vcpu.syncRegisters.pointee.regs.rsp : stack, tls: tls)
        } catch {
            tree.releaseThreadID(tid)
            EngineDiagnostics.write("vmfork: a thread of process \(identity.pid) could not be made: \(error)\n")
            return .error(.EAGAIN)
        }
        let thread = GuestThread(tid: tid, vcpu: threadVCPU)
        thread.blockedSignals = current.blockedSignals
        thread.interrupts.setBlocked(thread.blockedSignals)
        // unsafe: the tid's four bytes are copied into an array before the closure returns.
        let tidBytes = withUnsafeBytes(of: tid.littleEndian) { Array($0) }
        // As the kernel does: an address the program cannot write gets nothing.
        if flags & CloneFlag.parentSettid != 0 { space.write(parentTidAddress, tidBytes) }
        if flags & CloneFlag.childSettid != 0 { space.write(childTidAddress, tidBytes) }
        if flags & CloneFlag.childCleartid != 0 { thread.clearChildTID = childTidAddress }
        // The mailbox page is one per VM: a process with threads makes every call by exit.
        if let poller, pollerMailbox != nil {
            poller.unregister(self)
            pollerMailbox = nil
        }
        threads.add(thread)
        let host = Thread { [self] in runThread(thread) }
        host.stackSize = 1 << 20
        host.start()
        return .int(Int(tid))
    }

    /// A vCPU for a new thread (one an ended thread left, or a new one) with the caller's
    /// special registers, MSRs, FPU state and general registers, returning 0 from the call.
    private func makeThreadVCPU(stack: UInt64, tls: UInt64?) throws(KVMError) -> VCPU {
        let caller = vcpu
        var registers = caller.syncRegisters.pointee.regs
        var special = try caller.specialRegisters()
        let xsave = try caller.xsave()
        let xcrs = try caller.xcrs()
        let values = try caller.msrs(ForkPoint.capturedMSRs)
        var msrs = ForkPoint.capturedMSRs.compactMap { index in values[index].map { (index: index, value: $0) } }
        if let tls {
            special.fs.base = tls
            msrs = msrs.map { $0.index == X86.MSR.fsBase ? (index: $0.index, value: tls) : $0 }
        }
        let threadVCPU: VCPU
        if let idle = threads.idleVCPUs.popLast() {
            threadVCPU = idle
            threadVCPU.discardSyncedChanges()
        } else {
            threadVCPU = try vm.createVCPU(id: threads.nextVCPUID)
            threads.nextVCPUID += 1
            try threadVCPU.setCPUID(try tree.kvmSystem().cpuid)
        }
        do throws(KVMError) {
            try threadVCPU.setSpecialRegisters(special)
            try threadVCPU.setMSRs(msrs)
            try threadVCPU.setXCRs(xcrs)
            try threadVCPU.setXSave(xsave)
            // The thread returns from the call with 0, past the stub's `out`, on its own stack
            // (the stub's return builds its iretq frame below the red zone there).
            registers.rax = 0
            registers.rip = SystemArea.syscallExit + Self.syscallExitLength
            registers.rsp = stack
            try threadVCPU.setRegisters(registers)
            threadVCPU.enableSyncRegisters()
        } catch {
            threads.idleVCPUs.append(threadVCPU)
            throw error
        }
        return threadVCPU
    }

    /// clone3: the same as clone, the arguments in a struct. The stack is given as its lowest
    /// address and size; set_tid and cgroups are not served.
    private func clone3(_ c: SystemCall) -> SyscallOutcome {
        let size = Int(min(c.a1, UInt64(CloneArguments.largest + 1)))
        guard size >= CloneArguments.smallest else { return .error(.EINVAL) }
        guard size <= CloneArguments.largest else { return .error(.E2BIG) }
        // Read once: another thread may change the struct meanwhile.
        guard let bytes = space.read(c.a0, count: size) else { return .error(.EFAULT) }
        if size > CloneArguments.known, bytes[CloneArguments.known...].contains(where: { $0 != 0 }) { return .error(.E2BIG) }
        let fields = bytes + [UInt8](repeating: 0, count: max(0, CloneArguments.known - size))
        // unsafe: `fields` holds at least `known` (88) bytes and every offset + 8 <= 88; loadUnaligned needs no alignment.
        func field(_ offset: Int) -> UInt64 { fields.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) } }
        let flags = field(CloneArguments.flags), stack = field(CloneArguments.stack), stackSize = field(CloneArguments.stackSize)
        let exitSignal = field(CloneArguments.exitSignal)
        guard field(CloneArguments.setTid) == 0, field(CloneArguments.setTidSize) == 0, field(CloneArguments.cgroup) == 0 else {
            return .error(.EINVAL)
        }
        // The exit signal has a field of its own here; a stack needs its size.
        guard flags & CloneFlag.exitSignalMask == 0, exitSignal <= 64, (stack == 0) == (stackSize == 0) else { return .error(.EINVAL) }
        let (top, overflow) = stack.addingReportingOverflow(stackSize)
        guard !overflow else { return .error(.EINVAL) }
        if flags & CloneFlag.thread != 0 {
            return cloneThread(flags: flags, stack: top, parentTidAddress: field(CloneArguments.parentTid),
                               childTidAddress: field(CloneArguments.childTid), tls: field(CloneArguments.tls))
        }
        return clone(SystemCall(number: ProcessCall.clone, arguments: (flags | exitSignal, top, field(CloneArguments.parentTid),
                                                                         field(CloneArguments.childTid), field(CloneArguments.tls), 0)))
    }

    /// exit(2): ends the calling thread. The first thread's exit ends the process once the
    /// other threads have ended, with its status (Linux keeps it a zombie meanwhile).
    func exitThread(status: Int32) -> SyscallOutcome {
        if current !== mainThread {
            current.hasExited = true
            return .resumed
        }
        // The process lives on while its other threads run: the first thread's robust
        // mutexes are released as dead now, as Linux does at its exit.
        releaseRobustFutexes(of: mainThread)
        releasingMachineState { threads.waitUntilEmpty() }
        // An exit_group or a fatal signal in another thread meanwhile, or a kill, prevails.
        return .exit(endRequest ?? .exited(status))
    }

    /// tgkill (`group` given) and tkill: a signal for one thread of this process, or for
    /// another process's first thread. A fatal signal ends the whole process, as on Linux.
    func threadKill(group: Int32?, thread tid: Int32, signal: Int32) -> SyscallOutcome {
        guard tid > 0, group.map({ $0 > 0 }) ?? true else { return .error(.EINVAL) }
        guard (0...64).contains(signal) else { return .error(.EINVAL) }
        let ownProcess = group == nil || group == identity.pid
        let target: GuestThread? = !ownProcess ? nil : tid == mainThread.tid ? mainThread : threads.thread(tid)
        guard let target else {
            // Another process's first thread (its tid is its pid).
            guard group == nil || group == tid else { return .error(.ESRCH) }
            return kill(pid: tid, signal: signal)
        }
        if target === current { return signalSelf(pid: identity.pid, signal: signal) }
        if signal == 0 { return .success }
        if JobControl.stoppingByDefault.contains(signal) { jobControl.stopSent() }
        if signal == JobControl.continueSignal { jobControl.resume() }
        switch disposition(of: signal) {
        case .ignore: return .success
        case .terminate: return .exit(.signaled(signal))
        case .handler, .stop:
            target.interrupts.raiseSignal(signal)
            target.vcpu.requestImmediateExit()
            target.slot.kick()
            return .success
        }
    }

    /// get_robust_list(pid, head pointer, length pointer): of the caller (0) or of one of
    /// this process's threads.
    private func getRobustList(_ c: SystemCall) -> SyscallOutcome {
        let tid = c.int(c.a0)
        let target: GuestThread? = tid == 0 ? current : tid == mainThread.tid ? mainThread : threads.thread(tid)
        guard let target else { return .error(.ESRCH) }
        let list = target.robustList
        // unsafe: each UInt64's eight bytes are copied into an array before its closure returns.
        guard space.write(c.a1, withUnsafeBytes(of: list.head.littleEndian) { Array($0) }),
              space.write(c.a2, withUnsafeBytes(of: list.length.littleEndian) { Array($0) }) else { return .error(.EFAULT) }
        return .success
    }
}
