import CShims
import Synchronization
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// Why KVM_RUN returned, decoded from kvm_run.
public enum VMExit: Equatable, Sendable {
    /// The guest executed `in`/`out` on `port`; `dataOffset` locates the data in kvm_run.
    case io(port: UInt16, isOut: Bool, size: UInt8, count: UInt32, dataOffset: Int)
    case halt
    case shutdown
    case failEntry(reason: UInt64)
    case internalError(suberror: UInt32)
    /// KVM_RUN was interrupted by a signal or `immediate_exit` (kill, stop).
    case interrupted
    case other(reason: UInt32)
}

/// One virtual CPU: its fd, its shared kvm_run page, and the register interfaces.
///
/// `@unchecked Sendable`: every field is a `let`; the kvm_run area and the register ioctls are used by one thread at
/// a time (running or preparing the vCPU); other threads only set `immediate_exit` (`requestImmediateExit`, then a kick).
public final class VCPU: @unchecked Sendable {
    let fd: FileDescriptor
    let runArea: MappedMemory
    public let vm: VirtualMachine

    private let statistics: VCPUStatistics?

    init(fd: consuming FileDescriptor, run: consuming MappedMemory, vm: VirtualMachine) {
        statistics = VCPUStatistics(vcpuDescriptor: fd.rawValue)
        self.fd = fd
        self.runArea = run
        self.vm = vm
    }

    /// What this vCPU made the hypervisor do so far (nil where KVM keeps no statistics).
    public func counters() -> VCPUCounters? { statistics?.read() }

    // unsafe: the kvm_run mapping (the vCPU mmap size, >= sizeof(kvm_run), page-aligned) lives as long as this VCPU.
    /// The kvm_run structure shared with the kernel.
    public var runState: UnsafeMutablePointer<kvm_run> { runArea.base.assumingMemoryBound(to: kvm_run.self) }

    /// Registers KVM copies into kvm_run on every exit and back on entry (KVM_CAP_SYNC_REGS).
    public var syncRegisters: UnsafeMutablePointer<kvm_sync_regs> { cshims_kvm_run_sync_regs(runState) }

    /// Asks KVM to keep general and segment registers in `syncRegisters` across exits.
    public func enableSyncRegisters() {
        cshims_kvm_run_valid_regs(runState).pointee = UInt64(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)
    }

    /// Marks synced register sets as changed, so KVM loads them on the next entry.
    public func markDirty(regs: Bool = false, sregs: Bool = false) {
        var mask: UInt64 = 0
        if regs { mask |= UInt64(KVM_SYNC_X86_REGS) }
        if sregs { mask |= UInt64(KVM_SYNC_X86_SREGS) }
        cshims_kvm_run_dirty_regs(runState).pointee |= mask
    }

    /// Forgets synced register sets marked changed but not yet loaded, so that state set
    /// with register ioctls is not overwritten by them on the next entry.
    public func discardSyncedChanges() {
        cshims_kvm_run_dirty_regs(runState).pointee = 0
    }

    /// Makes a running or about-to-run KVM_RUN return at once (used by kill and stop).
    public func requestImmediateExit(_ value: Bool = true) {
        runState.pointee.immediate_exit = value ? 1 : 0
        // Called from another thread (kill, stop) before it kicks the vCPU thread with a
        // signal: the store must be visible before the kick, since KVM reads the flag once
        // on entry to KVM_RUN. The fence orders it for the compiler and the CPU; the kick's
        // pthread_kill is a system call, which orders it again on x86.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Enters the guest until the next exit.
    public func run() throws(KVMError) -> VMExit {
        if cshims_ioctl_int(fd.rawValue, CSHIMS_KVM_RUN, 0) != 0 {
            if errno == EINTR || errno == EAGAIN { return .interrupted }
            throw .system(SystemError(call: "ioctl(KVM_RUN)", errno: errno))
        }
        let reason = runState.pointee.exit_reason
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let io = cshims_kvm_run_io(runState)
            return .io(port: io.port, isOut: io.direction == UInt8(KVM_EXIT_IO_OUT), size: io.size, count: io.count, dataOffset: Int(io.data_offset))
        case KVM_EXIT_HLT: return .halt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_FAIL_ENTRY: return .failEntry(reason: cshims_kvm_run_fail_entry_reason(runState))
        case KVM_EXIT_INTERNAL_ERROR: return .internalError(suberror: cshims_kvm_run_internal_suberror(runState))
        case KVM_EXIT_INTR: return .interrupted
        default: return .other(reason: reason)
        }
    }

    private func call(_ name: String, _ request: UInt, _ pointer: UnsafeMutableRawPointer) throws(KVMError) {
        guard cshims_ioctl_ptr(fd.rawValue, request, pointer) == 0 else {
            throw .system(SystemError(call: "ioctl(\(name))", errno: errno))
        }
    }

    public func registers() throws(KVMError) -> kvm_regs {
        var value = kvm_regs()
        try call("KVM_GET_REGS", CSHIMS_KVM_GET_REGS, &value)
        return value
    }

    public func setRegisters(_ value: kvm_regs) throws(KVMError) {
        var value = value
        try call("KVM_SET_REGS", CSHIMS_KVM_SET_REGS, &value)
    }

    public func specialRegisters() throws(KVMError) -> kvm_sregs {
        var value = kvm_sregs()
        try call("KVM_GET_SREGS", CSHIMS_KVM_GET_SREGS, &value)
        return value
    }

    public func setSpecialRegisters(_ value: kvm_sregs) throws(KVMError) {
        var value = value
        try call("KVM_SET_SREGS", CSHIMS_KVM_SET_SREGS, &value)
    }

    public func setCPUID(_ table: CPUIDTable) throws(KVMError) {
        try call("KVM_SET_CPUID2", CSHIMS_KVM_SET_CPUID2, table.raw)
    }

    public func xsave() throws(KVMError) -> kvm_xsave {
        var value = kvm_xsave()
        try call("KVM_GET_XSAVE", CSHIMS_KVM_GET_XSAVE, &value)
        return value
    }

    public func setXSave(_ value: kvm_xsave) throws(KVMError) {
        var value = value
        try call("KVM_SET_XSAVE", CSHIMS_KVM_SET_XSAVE, &value)
    }

    public func xcrs() throws(KVMError) -> kvm_xcrs {
        var value = kvm_xcrs()
        try call("KVM_GET_XCRS", CSHIMS_KVM_GET_XCRS, &value)
        return value
    }

    public func setXCRs(_ value: kvm_xcrs) throws(KVMError) {
        var value = value
        try call("KVM_SET_XCRS", CSHIMS_KVM_SET_XCRS, &value)
    }

    /// Sets XCR0 (which state components XSAVE manages).
    public func setXCR0(_ value: UInt64) throws(KVMError) {
        var xcrs = kvm_xcrs()
        xcrs.nr_xcrs = 1
        xcrs.xcrs.0.xcr = 0
        xcrs.xcrs.0.value = value
        try setXCRs(xcrs)
    }

    /// Reads the MSRs in `indices`.
    public func msrs(_ indices: [UInt32]) throws(KVMError) -> [UInt32: UInt64] {
        let list = cshims_kvm_msrs_alloc(UInt32(indices.count))!
        defer { free(list) }
        // unsafe: the calloc'd list has room for indices.count entries right after its 8-byte header; i < that count, and read <= nmsrs.
        let entries = UnsafeMutableRawPointer(list).advanced(by: MemoryLayout<kvm_msrs>.size).assumingMemoryBound(to: kvm_msr_entry.self)
        for (i, index) in indices.enumerated() { entries[i].index = index }
        let read = cshims_ioctl_ptr(fd.rawValue, CSHIMS_KVM_GET_MSRS, list)
        guard read >= 0 else { throw .system(SystemError(call: "ioctl(KVM_GET_MSRS)", errno: errno)) }
        var result: [UInt32: UInt64] = [:]
        for i in 0..<Int(read) { result[entries[i].index] = entries[i].data }
        return result
    }

    /// Writes MSRs; throws if KVM accepted fewer than given.
    public func setMSRs(_ values: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        let list = cshims_kvm_msrs_alloc(UInt32(values.count))!
        defer { free(list) }
        // unsafe: the calloc'd list has room for values.count entries right after its 8-byte header (8-aligned); i < values.count.
        let entries = UnsafeMutableRawPointer(list).advanced(by: MemoryLayout<kvm_msrs>.size).assumingMemoryBound(to: kvm_msr_entry.self)
        for (i, entry) in values.enumerated() {
            entries[i].index = entry.index
            entries[i].data = entry.value
        }
        let written = cshims_ioctl_ptr(fd.rawValue, CSHIMS_KVM_SET_MSRS, list)
        guard written == Int32(values.count) else {
            throw .system(SystemError(call: "ioctl(KVM_SET_MSRS) wrote \(written) of \(values.count)", errno: written < 0 ? errno : EINVAL))
        }
    }
}
