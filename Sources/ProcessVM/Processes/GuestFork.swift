import CShims
import Foundation
import Glibc
import HostSystem
import KVM

/// fork(2), vfork(2) and clone(2) without CLONE_VM: the child is a copy of the calling
/// process in a VM of its own (`GuestMemory(forkOf:)`: the warm parent mapped copy-on-write
/// plus the process's own pages, or a snapshot of a process's own memfd), with the same
/// registers, a copy of its descriptor table sharing its open files (and their offsets), its
/// signal dispositions, mask, umask and working directory, and a pid of its own. It returns 0
/// from the call; the parent gets the child's pid.
extension ProcessVM {
    /// clone(2) flags (include/uapi/linux/sched.h).
    enum CloneFlag {
        static let exitSignalMask: UInt64 = 0xFF
        static let vm: UInt64 = 0x100
        static let fs: UInt64 = 0x200
        static let files: UInt64 = 0x400
        static let sighand: UInt64 = 0x800
        static let pidfd: UInt64 = 0x1000
        static let ptrace: UInt64 = 0x2000
        static let vfork: UInt64 = 0x4000
        static let parent: UInt64 = 0x8000
        static let thread: UInt64 = 0x10000
        static let sysvsem: UInt64 = 0x40000
        static let settls: UInt64 = 0x80000
        static let parentSettid: UInt64 = 0x100000
        static let childCleartid: UInt64 = 0x200000
        static let detached: UInt64 = 0x400000
        static let untraced: UInt64 = 0x800000
        static let childSettid: UInt64 = 0x100_0000
        static let io: UInt64 = 0x8000_0000
        /// What a copy of the process serves: vfork's CLONE_VM is served by a copy too (the
        /// parent and child then do not share memory; a vfork child only execs or exits).
        static let served: UInt64 = exitSignalMask | vfork | sysvsem | settls | parentSettid | childCleartid | detached
            | untraced | childSettid | io | ptrace
    }

    /// The `out` the system-call stub exits with is two bytes (`E6 F0`): a child resumes
    /// after it, as its parent does once the call is served.
    static let syscallExitLength: UInt64 = 2

    /// clone(2): flags, child stack, parent tid address, child tid address, TLS.
    func clone(_ c: SystemCall) -> SyscallOutcome {
        let flags = c.a0
        if flags & CloneFlag.thread != 0 {
            return cloneThread(flags: flags, stack: c.a1, parentTidAddress: c.a2, childTidAddress: c.a3, tls: c.a4)
        }
        // Shared tables and namespaces are not a process copy.
        if flags & CloneFlag.vm != 0 && flags & CloneFlag.vfork == 0 || flags & (CloneFlag.thread | CloneFlag.sighand | CloneFlag.files | CloneFlag.fs) != 0 {
            recordMissing(56)
            return .error(.ENOSYS)
        }
        guard flags & ~CloneFlag.served == 0, flags & CloneFlag.exitSignalMask <= 64 else { return .error(.EINVAL) }
        return forkProcess(stack: c.a1 == 0 ? nil : c.a1,
                           parentTidAddress: flags & CloneFlag.parentSettid != 0 ? c.a2 : nil,
                           childTidAddress: flags & CloneFlag.childSettid != 0 ? c.a3 : nil,
                           tls: flags & CloneFlag.settls != 0 ? c.a4 : nil)
    }

    /// The fork itself. EAGAIN at the container's process limit; ENOMEM when the host
    /// cannot make the child's VM or memory.
    func forkProcess(stack: UInt64? = nil, parentTidAddress: UInt64? = nil, childTidAddress: UInt64? = nil, tls: UInt64? = nil) -> SyscallOutcome {
        if let stack, stack >= AddressSpace.userTop { return .error(.EINVAL) }
        if let tls, tls >= AddressSpace.userTop { return .error(.EPERM) }
        let pid: Int32
        do { pid = try tree.reservePid(parent: identity.pid) } catch { return .error(error) }
        let child: ProcessVM
        do {
            child = try makeChild(pid: pid, stack: stack, tls: tls)
        } catch {
            tree.releasePid(pid)
            EngineDiagnostics.write("vmfork: fork of process \(identity.pid) failed: \(error)\n")
            return .error(.ENOMEM)
        }
        // As the kernel does for CLONE_CHILD_SETTID (in the child) and CLONE_PARENT_SETTID
        // (in the parent); an address the program cannot write gets nothing.
        // unsafe: the pid's four bytes are copied into an array before the closure returns.
        let pidBytes = withUnsafeBytes(of: pid.littleEndian) { Array($0) }
        if let childTidAddress { child.space.write(childTidAddress, pidBytes) }
        if let parentTidAddress { space.write(parentTidAddress, pidBytes) }
        guard tree.start(child, pid: pid) else { return .error(.EAGAIN) }
        return .int(Int(pid))
    }

    enum ForkFailure: Error {
        case system(SystemError)
        case kvm(KVMError)
    }

    /// The child's VM: memory copied, then a new VM and vCPU with this one's state.
    private func makeChild(pid: Int32, stack: UInt64?, tls: UInt64?) throws(ForkFailure) -> ProcessVM {
        let memory: GuestMemory
        let files: GuestFiles
        do throws(SystemError) {
            // Frames waiting for their translations to go become free first, so that the
            // child's allocator does not lose them.
            try space.dropStaleTranslations()
            memory = try GuestMemory(forkOf: self.memory)
            files = try self.files.copyForFork()
        } catch {
            throw .system(error)
        }
        // The vCPU kick (a SIGCHLD for this process, a stop) can interrupt a KVM call that
        // sleeps, KVM_CREATE_VM above all: the VM is made again then.
        var attempts = 0
        while true {
            do {
                return try makeChildVM(pid: pid, memory: memory, files: files, stack: stack, tls: tls)
            } catch .kvm(.system(let error)) where error.errno == EINTR && attempts < Self.interruptedForkAttempts {
                attempts += 1
            }
        }
    }

    /// How many times a fork makes its VM again after an interrupted KVM call.
    static let interruptedForkAttempts = 8

    private func makeChildVM(pid: Int32, memory: GuestMemory, files: GuestFiles, stack: UInt64?, tls: UInt64?) throws(ForkFailure) -> ProcessVM {
        do throws(KVMError) {
            let (system, cpuid) = try tree.kvmSystem()
            var registers = vcpu.syncRegisters.pointee.regs
            var special = try vcpu.specialRegisters()
            let xsave = try vcpu.xsave()
            let xcrs = try vcpu.xcrs()
            let msrValues = try vcpu.msrs(ForkPoint.capturedMSRs)
            var msrs = ForkPoint.capturedMSRs.compactMap { index in msrValues[index].map { (index: index, value: $0) } }
            if let tls {
                special.fs.base = tls
                msrs = msrs.map { $0.index == X86.MSR.fsBase ? (index: $0.index, value: tls) : $0 }
            }
            let vm = try system.createVM()
            // The memory slot goes in first: set later it costs milliseconds (see BlankVM).
            try vm.setMemoryRegion(slot: Self.memorySlot, guestPhysical: 0, size: memory.size, host: memory.mapping.base)
            let childVCPU = try vm.createVCPU()
            try childVCPU.setCPUID(cpuid)
            try childVCPU.setSpecialRegisters(special)
            try childVCPU.setMSRs(msrs)
            try childVCPU.setXCRs(xcrs)
            try childVCPU.setXSave(xsave)
            // The child returns from the call with 0, past the stub's `out`.
            registers.rax = 0
            registers.rip = SystemArea.syscallExit + Self.syscallExitLength
            if let stack { registers.rsp = stack }
            try childVCPU.setRegisters(registers)
            childVCPU.enableSyncRegisters()
            let childSpace = AddressSpace(copyOf: space, memory: memory)
            var childIdentity = identity
            childIdentity.pid = pid
            childIdentity.parentPid = identity.pid
            let child = ProcessVM(configuration: configuration, vm: vm, vcpu: childVCPU, memory: memory, space: childSpace, files: files,
                                  identity: childIdentity, programName: programName, exceptionStackFrame: exceptionStackFrame,
                                  entry: nil, tree: tree)
            child.signals = signals
            child.umask = umask
            child.executablePath = executablePath
            child.threadIDAddress = threadIDAddress
            child.handlesChildSignal.store(handlesChildSignal.load(ordering: .relaxed), ordering: .relaxed)
            child.ignoresChildStops.store(ignoresChildStops.load(ordering: .relaxed), ordering: .relaxed)
            return child
        } catch {
            throw .kvm(error)
        }
    }

    /// A child of this process ended: SIGCHLD when the process handles it, and a wake-up
    /// for a wait4 in progress either way.
    func childEnded() {
        if handlesChildSignal.load(ordering: .relaxed) {
            sendSignal(17)
        } else {
            // A wait4 may be in progress in any of its threads.
            for thread in [mainThread] + threads.all { thread.interrupts.wakeup.notify() }
        }
    }
}
