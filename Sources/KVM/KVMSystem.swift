import CShims
import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How this host's KVM runs guests. It decides what a guest can be: under PVM, guest
/// kernel-mode code is emulated (about a thousand times slower), so guests run kernel-less.
public enum VirtualizationKind: String, Sendable {
    case intelVMX = "hardware (Intel VMX)"
    case amdSVM = "hardware (AMD SVM)"
    case pvm = "paravirtual (PVM: guest CPL3 native, guest kernel mode emulated)"
    case unknown = "unknown"

    /// Read from the loaded KVM vendor module.
    public static func detect(modulesRoot: String = "/sys/module") -> VirtualizationKind {
        func loaded(_ name: String) -> Bool { access("\(modulesRoot)/\(name)", F_OK) == 0 }
        if loaded("kvm_pvm") { return .pvm }
        if loaded("kvm_intel") { return .intelVMX }
        if loaded("kvm_amd") { return .amdSVM }
        return .unknown
    }
}

/// An object an upper layer keeps one of per KVM system (see `KVMSystem.companion`); told
/// when the system goes, after its last VM.
public protocol KVMSystemCompanion: AnyObject, Sendable {
    func systemEnded()
}

/// The KVM capabilities the engine relies on, with the reason for each.
public struct KVMExtension: Sendable {
    public let name: String
    public let number: Int32
    public let why: String

    public static let required: [KVMExtension] = [
        KVMExtension(name: "KVM_CAP_USER_MEMORY", number: KVM_CAP_USER_MEMORY, why: "guest memory is a host memfd mapped into the VM"),
        KVMExtension(name: "KVM_CAP_SYNC_REGS", number: KVM_CAP_SYNC_REGS, why: "system calls return through synced registers, without register ioctls"),
        KVMExtension(name: "KVM_CAP_EXT_CPUID", number: KVM_CAP_EXT_CPUID, why: "the guest gets the host's supported CPUID"),
        KVMExtension(name: "KVM_CAP_XSAVE", number: KVM_CAP_XSAVE, why: "fork captures and restores the FPU/SSE/AVX state"),
        KVMExtension(name: "KVM_CAP_XCRS", number: KVM_CAP_XCRS, why: "XCR0 must enable AVX state for glibc's string functions"),
        KVMExtension(name: "KVM_CAP_IMMEDIATE_EXIT", number: KVM_CAP_IMMEDIATE_EXIT, why: "kill and stop interrupt a running vCPU"),
    ]
}

/// The open /dev/kvm device: the root of every VM the engine creates.
public final class KVMSystem: Sendable {
    let fd: FileDescriptor
    /// Size of each vCPU's shared kvm_run area.
    public let vcpuMmapSize: Int
    public let apiVersion: Int32
    private let supportedCPUIDTable = Mutex<CPUIDTable?>(nil)
    private let staticKeyAnchor = Mutex<StaticKeyAnchor?>(nil)
    /// One object per type that an upper layer keeps per system (the ProcessVM module's
    /// system-call poller): it lives as long as this system, so whoever owns the system (the
    /// engine) owns it, and two systems share none — no process-wide singleton.
    private let companions = Mutex<[ObjectIdentifier: any KVMSystemCompanion]>([:])

    /// Opens the device and checks the API version.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let raw = Glibc.open(path, O_RDWR | O_CLOEXEC)
        if raw < 0 {
            switch errno {
            case ENOENT, ENODEV, ENXIO: throw .deviceMissing(path: path)
            case EACCES, EPERM, EROFS: throw .accessDenied(path: path)
            default: throw .system(SystemError(call: "open(\(path))", errno: errno))
            }
        }
        fd = FileDescriptor(adopting: raw)
        apiVersion = cshims_ioctl_int(raw, CSHIMS_KVM_GET_API_VERSION, 0)
        guard apiVersion == KVM_API_VERSION else { throw .unsupportedAPIVersion(apiVersion) }
        let size = cshims_ioctl_int(raw, CSHIMS_KVM_GET_VCPU_MMAP_SIZE, 0)
        guard size > 0 else { throw .system(SystemError(call: "ioctl(KVM_GET_VCPU_MMAP_SIZE)", errno: errno)) }
        vcpuMmapSize = Int(size)
    }

    /// KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific positive value.
    public func checkExtension(_ number: Int32) -> Int32 {
        max(0, cshims_ioctl_int(fd.rawValue, CSHIMS_KVM_CHECK_EXTENSION, UInt(number)))
    }

    /// Throws the first required extension that is missing.
    public func requireExtensions() throws(KVMError) {
        for ext in KVMExtension.required where checkExtension(ext.number) == 0 {
            throw .missingExtension(name: ext.name, why: ext.why)
        }
    }

    /// The CPUID leaves KVM can expose, ready to hand to a vCPU unchanged. Asked once: the
    /// answer does not change while the device is open, and asking costs ~55 µs under PVM,
    /// a cost every cold VM would pay.
    public func supportedCPUID() throws(KVMError) -> CPUIDTable {
        try supportedCPUIDTable.withLock { cached throws(KVMError) in
            if let cached { return cached }
            let table = try askSupportedCPUID()
            cached = table
            return table
        }
    }

    private func askSupportedCPUID() throws(KVMError) -> CPUIDTable {
        var capacity: UInt32 = 128
        while true {
            let table = CPUIDTable(capacity: capacity)
            if cshims_ioctl_ptr(fd.rawValue, CSHIMS_KVM_GET_SUPPORTED_CPUID, table.raw) == 0 { return table }
            guard errno == E2BIG, capacity < 4096 else {
                throw .system(SystemError(call: "ioctl(KVM_GET_SUPPORTED_CPUID)", errno: errno))
            }
            capacity *= 2
        }
    }

    /// Creates an empty VM: no irqchip, no PIT, no memory yet.
    /// This system's companion of type `T`, made by `make` on first use.
    public func companion<T: KVMSystemCompanion>(_ type: T.Type, make: () -> T) -> T {
        companions.withLock { table in
            if let existing = table[ObjectIdentifier(type)] as? T { return existing }
            let made = make()
            table[ObjectIdentifier(type)] = made
            return made
        }
    }

    deinit {
        // No VM of this system is left (each holds the system), so none runs.
        for companion in companions.withLock({ Array($0.values) }) { companion.systemEnded() }
    }

    /// How often a VM's creation interrupted by a signal is tried again.
    static let interruptedCreateRetries = 100

    public func createVM() throws(KVMError) -> VirtualMachine {
        try anchorStaticKey()
        // EINTR: registering the VM's MMU notifier takes every lock of the address space
        // and gives up when a signal is pending for the thread (mm_take_all_locks), such as a
        // kick meant for a vCPU this thread ran; the handler has run by now, so try again.
        var vmfd: Int32 = -1
        for _ in 0..<Self.interruptedCreateRetries {
            vmfd = cshims_ioctl_int(fd.rawValue, CSHIMS_KVM_CREATE_VM, 0)
            if vmfd >= 0 || errno != EINTR { break }
        }
        guard vmfd >= 0 else { throw .system(SystemError(call: "ioctl(KVM_CREATE_VM)", errno: errno)) }
        return VirtualMachine(fd: FileDescriptor(adopting: vmfd), system: self)
    }
}

extension KVMSystem {
    /// Creates the anchor once, before the first VM of this system.
    private func anchorStaticKey() throws(KVMError) {
        try staticKeyAnchor.withLock { anchor throws(KVMError) in
            guard anchor == nil else { return }
            anchor = try StaticKeyAnchor(system: fd.rawValue)
        }
    }
}

/// A VM with one vCPU and no irqchip, idle while its KVMSystem is open. KVM counts vCPUs
/// without an in-kernel local APIC in a static key (kvm_has_noapic_vcpu); when the count goes
/// from 0 to 1 or back, the kernel patches its own text and interrupts every CPU. Measured on
/// cold VMs made one after another: ~0.2 ms per VM created and ~0.15 ms per VM closed, gone
/// while this one keeps the count above zero.
private final class StaticKeyAnchor: Sendable {
    let vm: FileDescriptor
    let vcpu: FileDescriptor

    init(system: Int32) throws(KVMError) {
        let vmfd = cshims_ioctl_int(system, CSHIMS_KVM_CREATE_VM, 0)
        guard vmfd >= 0 else { throw .system(SystemError(call: "ioctl(KVM_CREATE_VM) for the static-key anchor", errno: errno)) }
        vm = FileDescriptor(adopting: vmfd)
        let vcpufd = cshims_ioctl_int(vmfd, CSHIMS_KVM_CREATE_VCPU, 0)
        guard vcpufd >= 0 else { throw .system(SystemError(call: "ioctl(KVM_CREATE_VCPU) for the static-key anchor", errno: errno)) }
        vcpu = FileDescriptor(adopting: vcpufd)
    }
}

/// A kvm_cpuid2 list with its flexible array, owned and freed here.
///
/// `@unchecked Sendable`: `raw` is a `let`; KVM_GET_SUPPORTED_CPUID fills the table before `supportedCPUID` publishes it
/// under its Mutex, and it is only read after (KVM_SET_CPUID2 copies it in).
public final class CPUIDTable: @unchecked Sendable {
    let raw: UnsafeMutablePointer<kvm_cpuid2>

    init(capacity: UInt32) {
        raw = cshims_kvm_cpuid2_alloc(capacity)
    }

    deinit { free(raw) }

    public var count: Int { Int(raw.pointee.nent) }

    /// The entries, for inspection (the probe prints the vendor and hypervisor bit from them);
    /// read-only, as one table is shared by every VM.
    public var entries: UnsafeBufferPointer<kvm_cpuid_entry2> {
        // unsafe: the calloc'd table has `capacity` entries after its 8-byte header and KVM set nent <= capacity; valid while the (cached) table lives.
        let base = UnsafeRawPointer(raw).advanced(by: MemoryLayout<kvm_cpuid2>.size)
            .assumingMemoryBound(to: kvm_cpuid_entry2.self)
        return UnsafeBufferPointer(start: base, count: count)
    }
}
