import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// One KVM virtual machine. Closing it tears down its vCPUs' kernel state; the vCPUs hold a
/// reference to it, so it outlives them.
///
/// `@unchecked Sendable`: both fields are `let`s, and its methods are only ioctls on the VM's descriptor.
public final class VirtualMachine: @unchecked Sendable {
    let fd: FileDescriptor
    public let system: KVMSystem

    init(fd: consuming FileDescriptor, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    /// Maps `size` bytes of host memory at `host` to guest-physical `guestPhysical` in `slot`.
    /// Setting a slot's size to 0 deletes it.
    public func setMemoryRegion(slot: UInt32, guestPhysical: UInt64, size: Int, host: UnsafeMutableRawPointer?) throws(KVMError) {
        var region = kvm_userspace_memory_region(
            slot: slot,
            flags: 0,
            guest_phys_addr: guestPhysical,
            memory_size: UInt64(size),
            userspace_addr: UInt64(UInt(bitPattern: host))
        )
        guard cshims_ioctl_ptr(fd.rawValue, CSHIMS_KVM_SET_USER_MEMORY_REGION, &region) == 0 else {
            throw .system(SystemError(call: "ioctl(KVM_SET_USER_MEMORY_REGION slot \(slot))", errno: errno))
        }
    }

    /// Creates vCPU `id` and maps its kvm_run area.
    public func createVCPU(id: UInt32 = 0) throws(KVMError) -> VCPU {
        let raw = cshims_ioctl_int(fd.rawValue, CSHIMS_KVM_CREATE_VCPU, UInt(id))
        guard raw >= 0 else { throw .system(SystemError(call: "ioctl(KVM_CREATE_VCPU \(id))", errno: errno)) }
        let vcpuFD = FileDescriptor(adopting: raw)
        do {
            let run = try MappedMemory(length: system.vcpuMmapSize, flags: MAP_SHARED, fd: vcpuFD.rawValue)
            return VCPU(fd: vcpuFD, run: run, vm: self)
        } catch {
            throw .system(error)
        }
    }
}
