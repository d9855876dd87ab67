import CShims
import HostSystem
import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A VM with no program yet: guest memory registered as its memory slot, empty page tables,
/// the system area, and a vCPU in user mode with the host's CPUID. None of it depends on
/// the program, so a cold start can take one made ahead of time, off its critical path.
/// One process VM takes it over; it cannot be used twice.
///
/// `@unchecked Sendable`: every field is a `let` set in init; `taken` (an Atomic) lets one process VM take it over
/// (`markTaken`), which then uses its VM, vCPU, memory and space alone.
public final class BlankVM: @unchecked Sendable {
    let memory: GuestMemory
    let space: AddressSpace
    /// Guest-physical frame of the exception stack's top page.
    let exceptionStackFrame: UInt64
    let vm: VirtualMachine
    let vcpu: VCPU
    let cpuid: CPUIDTable
    private let taken = Atomic<Bool>(false)

    /// With `entersOnce` the vCPU runs once now, at the system-call stub's `out`: a vCPU's
    /// first entry costs a few hundred microseconds under PVM, which a VM made ahead of
    /// time should pay before its program, not during it.
    public init(system: KVMSystem, memoryBytes: Int, entersOnce: Bool = false) throws(GuestError) {
        do {
            memory = try GuestMemory(size: memoryBytes)
        } catch {
            throw .system(error)
        }
        space = try AddressSpace(memory: memory)
        exceptionStackFrame = try SystemArea.build(in: space)
        do throws(KVMError) {
            vm = try system.createVM()
            // The memory slot goes in before anything else: set later it costs milliseconds.
            try vm.setMemoryRegion(slot: ProcessVM.memorySlot, guestPhysical: 0, size: memory.size, host: memory.mapping.base)
            vcpu = try vm.createVCPU()
            cpuid = try system.supportedCPUID()
            try CPUSetup.prepare(vcpu, cpuid: cpuid, pageTableRoot: space.tables.root)
            if entersOnce {
                var registers = kvm_regs()
                registers.rip = SystemArea.syscallExit
                registers.rflags = X86.rflagsReserved
                try vcpu.setRegisters(registers)
                guard case .io(SystemArea.syscallPort, true, _, _, _) = try vcpu.run() else {
                    throw KVMError.system(SystemError(call: "KVM_RUN (first entry of a blank VM)", errno: EIO))
                }
            }
        } catch {
            throw .kvm(error)
        }
    }

    func markTaken() {
        let (exchanged, _) = taken.compareExchange(expected: false, desired: true, ordering: .relaxed)
        precondition(exchanged, "a blank VM was handed to a second process VM")
    }
}
