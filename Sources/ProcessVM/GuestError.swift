import HostSystem
import KVM

/// Why a process VM could not be built or run. Problems of the guest program itself (bad
/// pointers, faults) are not errors of the engine: they end the container with a status.
public enum GuestError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The VM's memory limit is reached.
    case outOfMemory
    /// The executable cannot be loaded; the text names the field at fault.
    case invalidExecutable(String)
    /// A mapping would reach the engine's system pages or leave the user address range.
    case reservedRange(UInt64)
    /// A child's arguments or environment do not fit where its main fork point has room.
    case childArgumentsTooLarge(String)
    /// A warm parent cannot stop at its program's main; the text says why.
    case noMainForkPoint(String)
    case kvm(KVMError)
    case system(SystemError)

    public var description: String {
        switch self {
        case .outOfMemory: return "the process VM's memory limit is reached"
        case .invalidExecutable(let why): return "cannot load the executable: \(why)"
        case .reservedRange(let address):
            return "a mapping at 0x\(String(address, radix: 16)) leaves the user address range "
                + "(0x\(String(AddressSpace.userBottom, radix: 16)) up to 0x\(String(AddressSpace.userTop, radix: 16)))"
        case .childArgumentsTooLarge(let what): return "the child's arguments do not fit: \(what)"
        case .noMainForkPoint(let why): return "no fork point at main: \(why)"
        case .kvm(let error): return error.description
        case .system(let error): return error.description
        }
    }
}
