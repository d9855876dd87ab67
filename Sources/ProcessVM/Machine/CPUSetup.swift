import CShims
import KVM

/// Puts a fresh vCPU in 64-bit user mode, with the system area's tables loaded, SYSCALL
/// pointed at the stub and the host's CPUID (`prepare`, before any program is known), then
/// at the program's entry point (`start`).
enum CPUSetup {
    static func segment(selector: UInt16, code: Bool) -> kvm_segment {
        var segment = kvm_segment()
        segment.base = 0
        segment.limit = 0xFFFF_FFFF
        segment.selector = selector
        segment.type = code ? 11 : 3
        segment.present = 1
        segment.dpl = UInt8(selector & 3)
        segment.db = code ? 0 : 1
        segment.s = 1
        segment.l = code ? 1 : 0
        segment.g = 1
        return segment
    }

    static func prepare(_ vcpu: VCPU, cpuid: CPUIDTable, pageTableRoot: UInt64) throws(KVMError) {
        try vcpu.setCPUID(cpuid)
        var sregs = try vcpu.specialRegisters()
        sregs.cr0 = X86.CR0.protectedMode | X86.CR0.monitorCoprocessor | X86.CR0.extensionType | X86.CR0.numericError | X86.CR0.writeProtect | X86.CR0.paging
        sregs.cr4 = X86.CR4.physicalAddressExtension | X86.CR4.osFXSR | X86.CR4.osXMMExceptions | X86.CR4.osXSAVE | X86.CR4.fsGSBase
        sregs.cr3 = pageTableRoot
        sregs.efer = X86.EFER.syscallEnable | X86.EFER.longModeEnable | X86.EFER.longModeActive | X86.EFER.noExecuteEnable
        sregs.cs = segment(selector: X86.Selector.userCode, code: true)
        let data = segment(selector: X86.Selector.userData, code: false)
        sregs.ds = data
        sregs.es = data
        sregs.fs = data
        sregs.gs = data
        sregs.ss = data
        var tr = kvm_segment()
        tr.base = SystemArea.tss
        tr.limit = SystemArea.tssLimit
        tr.selector = X86.Selector.taskState
        tr.type = 11
        tr.present = 1
        sregs.tr = tr
        var ldt = kvm_segment()
        ldt.unusable = 1
        sregs.ldt = ldt
        sregs.gdt.base = SystemArea.gdt
        sregs.gdt.limit = 0x4F
        sregs.idt.base = SystemArea.idt
        sregs.idt.limit = 32 * 16 - 1
        try vcpu.setSpecialRegisters(sregs)

        try vcpu.setXCR0(X86.xcr0X87SSEAVX)
        try vcpu.setMSRs([
            (X86.MSR.star, (UInt64(X86.Selector.userCode32) << 48) | (UInt64(X86.Selector.kernelCode) << 32)),
            (X86.MSR.lstar, SystemArea.stubPage),
            (X86.MSR.cstar, SystemArea.stubPage),
            (X86.MSR.syscallMask, 0x4_0700), // AC, DF, IF, TF cleared on entry, as Linux does
            (X86.MSR.fsBase, 0),
            (X86.MSR.gsBase, 0),
            (X86.MSR.kernelGSBase, 0),
        ])
    }

    static func start(_ vcpu: VCPU, entry: UInt64, stack: UInt64) throws(KVMError) {
        var regs = kvm_regs()
        regs.rip = entry
        regs.rsp = stack
        regs.rflags = X86.rflagsReserved
        try vcpu.setRegisters(regs)
        vcpu.enableSyncRegisters()
    }
}
