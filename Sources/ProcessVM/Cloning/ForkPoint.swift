import CShims
import HostSystem
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// Everything a child needs from a warm parent stopped at its fork point: the CPU state
/// (general, segment and control registers, XSAVE, XCRs, MSRs), the engine-side process
/// state (descriptor table, memory map, brk, signal dispositions, cwd), and the parent's
/// guest memory, which no one writes again — children map it copy-on-write.
public final class ForkPoint: @unchecked Sendable {
    /// Where the parent stopped.
    public enum Kind: Sendable, Equatable {
        /// At its entry point, program loaded: each child gets its own argv, envp and AT_RANDOM.
        case entry
        /// About to read standard input for the first time: each child reads its own.
        case firstStandardInputRead
    }

    public let kind: Kind
    public let configuration: ProcessVMConfiguration
    public let memory: GuestMemory
    let space: AddressSpace
    let files: GuestFiles
    let registers: kvm_regs
    let specialRegisters: kvm_sregs
    let xsave: kvm_xsave
    let xcrs: kvm_xcrs
    let modelSpecificRegisters: [(index: UInt32, value: UInt64)]
    let cpuid: CPUIDTable
    let identity: GuestIdentity
    let signals: SignalState
    let umask: UInt32
    let programName: [UInt8]
    let exceptionStackFrame: UInt64
    let entry: ProcessVM.EntryState?

    static let capturedMSRs: [UInt32] = [
        X86.MSR.star, X86.MSR.lstar, X86.MSR.cstar, X86.MSR.syscallMask, X86.MSR.fsBase, X86.MSR.gsBase, X86.MSR.kernelGSBase,
    ]

    init(kind: Kind, parent: ProcessVM, cpuid: CPUIDTable) throws(GuestError) {
        self.kind = kind
        configuration = parent.configuration
        memory = parent.memory
        space = parent.space
        files = parent.files
        do {
            var registers = try parent.vcpu.registers()
            if kind == .firstStandardInputRead {
                // The parent stopped at the stub's `out` with the call unserved; a child
                // executes that `out` again (RAX still holds the call number) and so
                // serves the read itself, from its own standard input.
                registers.rip = SystemArea.stubPage
            }
            self.registers = registers
            specialRegisters = try parent.vcpu.specialRegisters()
            xsave = try parent.vcpu.xsave()
            xcrs = try parent.vcpu.xcrs()
            let msrs = try parent.vcpu.msrs(Self.capturedMSRs)
            modelSpecificRegisters = Self.capturedMSRs.compactMap { index in msrs[index].map { (index, $0) } }
        } catch {
            throw .kvm(error)
        }
        self.cpuid = cpuid
        identity = parent.identity
        signals = parent.signals
        umask = parent.umask
        programName = parent.programName
        exceptionStackFrame = parent.exceptionStackFrame
        entry = kind == .entry ? parent.entry : nil
    }
}

extension ProcessVM {
    /// Turns a freshly loaded program into a warm parent stopped at `kind`. For
    /// `.firstStandardInputRead` the program runs (with this VM's streams) until it first
    /// reads standard input; nil if it ended before that. The parent's VM is closed; its
    /// memory lives on in the fork point.
    public static func makeForkPoint(system: KVMSystem, configuration: ProcessVMConfiguration, executable: String,
                                     arguments: [String], environment: [String], kind: ForkPoint.Kind,
                                     streams: StandardStreams = StandardStreams()) throws(GuestError) -> ForkPoint? {
        let parent = try ProcessVM(system: system, configuration: configuration, executable: executable,
                                   arguments: arguments, environment: environment, streams: streams)
        let cpuid: CPUIDTable
        do { cpuid = try system.supportedCPUID() } catch { throw .kvm(error) }
        if kind == .firstStandardInputRead {
            parent.stopsAtFirstStandardInputRead = true
            guard case .atFirstStandardInputRead = try parent.runUntilStop() else { return nil }
        }
        return try ForkPoint(kind: kind, parent: parent, cpuid: cpuid)
    }

    /// A child of `forkPoint` in `prepared`, a VM made ready for it ahead of time: it shares
    /// the parent's memory copy-on-write, copies its process state, and gets its own
    /// identity and streams — and, for an entry-point parent, its own argv and environment.
    public convenience init(forking forkPoint: ForkPoint, into prepared: PreparedVM, identity: GuestIdentity,
                            arguments: [String]?, environment: [String]?, streams: StandardStreams) throws(GuestError) {
        precondition(prepared.forkPoint === forkPoint, "a prepared VM serves the fork point it was made for")
        let files: GuestFiles
        do throws(SystemError) {
            files = try forkPoint.files.copyForChildContainer(standardStreams: (streams.input, streams.output, streams.error))
        } catch {
            throw .system(error)
        }
        let space = AddressSpace(copyOf: forkPoint.space, memory: prepared.memory)
        self.init(configuration: forkPoint.configuration, vm: prepared.vm, vcpu: prepared.vcpu, memory: prepared.memory,
                  space: space, files: files, identity: identity, programName: forkPoint.programName,
                  exceptionStackFrame: forkPoint.exceptionStackFrame, entry: forkPoint.entry)
        signals = forkPoint.signals
        umask = forkPoint.umask
        // The registers go in through the synced area, loaded by KVM on the first entry.
        let sync = vcpu.syncRegisters
        sync.pointee.regs = forkPoint.registers
        sync.pointee.sregs = forkPoint.specialRegisters
        if forkPoint.kind == .entry {
            sync.pointee.regs.rsp = try writeInitialStack(arguments: arguments ?? [], environment: environment ?? [])
        }
        vcpu.markDirty(regs: true)
    }
}

/// A VM created ahead of a fork, off the critical path: memory slot first, then the vCPU,
/// CPUID and every register of the fork point set, so that a fork only writes the child's
/// stack and general registers before it runs.
public final class PreparedVM: @unchecked Sendable {
    public let forkPoint: ForkPoint
    let vm: VirtualMachine
    let vcpu: VCPU
    public let memory: GuestMemory

    public init(system: KVMSystem, forkPoint: ForkPoint) throws(GuestError) {
        self.forkPoint = forkPoint
        do throws(SystemError) {
            memory = try GuestMemory(copyOnWriteOf: forkPoint.memory)
        } catch {
            throw .system(error)
        }
        do throws(KVMError) {
            vm = try system.createVM()
            try vm.setMemoryRegion(slot: ProcessVM.memorySlot, guestPhysical: 0, size: memory.size, host: memory.mapping.base)
            vcpu = try vm.createVCPU()
            try vcpu.setCPUID(forkPoint.cpuid)
            try vcpu.setSpecialRegisters(forkPoint.specialRegisters)
            try vcpu.setMSRs(forkPoint.modelSpecificRegisters)
            try vcpu.setXCRs(forkPoint.xcrs)
            try vcpu.setXSave(forkPoint.xsave)
            // A first entry costs a new vCPU a few hundred microseconds under PVM; pay it
            // here by entering once at the system-call stub, whose `out` exits at once.
            var warmUp = forkPoint.registers
            warmUp.rip = SystemArea.stubPage
            try vcpu.setRegisters(warmUp)
            vcpu.enableSyncRegisters()
            guard case .io(SystemArea.syscallPort, true, _, _, _) = try vcpu.run() else {
                throw KVMError.system(SystemError(call: "KVM_RUN (warm-up of a prepared VM)", errno: EIO))
            }
        } catch {
            throw .kvm(error)
        }
    }
}
