import HostSystem

/// Why KVM cannot be used, in words that say what is missing and how to get it.
public enum KVMError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The device node does not exist: no KVM module is loaded.
    case deviceMissing(path: String)
    /// The device exists but this process may not open it.
    case accessDenied(path: String)
    /// The kernel speaks a KVM API other than the stable version 12.
    case unsupportedAPIVersion(Int32)
    /// A capability the engine depends on is absent.
    case missingExtension(name: String, why: String)
    /// A KVM call failed.
    case system(SystemError)

    public var description: String {
        switch self {
        case .deviceMissing(let path):
            return "KVM unavailable: \(path) does not exist. Load a KVM module (kvm_intel, kvm_amd or kvm_pvm) or run on a host that exposes /dev/kvm."
        case .accessDenied(let path):
            return "KVM unavailable: no permission to open \(path). Run as root or add this user to the group that owns \(path) (usually 'kvm')."
        case .unsupportedAPIVersion(let version):
            return "KVM unavailable: the kernel reports KVM API version \(version), the engine needs 12."
        case .missingExtension(let name, let why):
            return "KVM lacks \(name), which the engine needs: \(why)."
        case .system(let error):
            return "KVM call failed: \(error)"
        }
    }
}
