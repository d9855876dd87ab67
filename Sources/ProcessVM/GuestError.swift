import HostSystem
import KVM

/// Why a process VM could not be built or run. Problems of the guest program itself (bad
/// pointers, faults) are not errors of the engine: they end the container with a status.
public enum GuestError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The VM's memory limit is reached.
    case outOfMemory
    /// The executable cannot be loaded; the text names the field at fault.
    case invalidExecutable(String)
    case kvm(KVMError)
    case system(SystemError)

    public var description: String {
        switch self {
        case .outOfMemory: return "the process VM's memory limit is reached"
        case .invalidExecutable(let why): return "cannot load the executable: \(why)"
        case .kvm(let error): return error.description
        case .system(let error): return error.description
        }
    }
}
