import HostSystem

/// Why io_uring cannot serve the I/O path, saying what is missing and how to get it.
public enum IOUringError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The kernel refused io_uring_setup: disabled by sysctl, by a seccomp filter, or too old.
    case unavailable(errno: Int32, hint: String)
    /// Set-up worked but an opcode the I/O path needs is not supported.
    case missingOpcode(name: String)
    case system(SystemError)

    public var description: String {
        switch self {
        case .unavailable(let code, let hint):
            return "io_uring unavailable: \(SystemError(call: "io_uring_setup", errno: code).description). \(hint)"
        case .missingOpcode(let name):
            return "io_uring lacks \(name), which the disk I/O path needs: use a Linux 5.6 or later kernel."
        case .system(let error):
            return "io_uring call failed: \(error)"
        }
    }

    /// Explains a set-up errno in terms of what to change.
    static func setupHint(errno code: Int32) -> String {
        switch code {
        case 1, 13: // EPERM, EACCES
            return "The kernel forbids it here: check /proc/sys/kernel/io_uring_disabled (0 allows it) and any seccomp profile of this container."
        case 38: // ENOSYS
            return "This kernel was built without io_uring (CONFIG_IO_URING); use Linux 5.6 or later with it enabled."
        case 12: // ENOMEM
            return "Not enough locked memory for the ring: raise RLIMIT_MEMLOCK (ulimit -l)."
        default:
            return "See io_uring_setup(2)."
        }
    }
}
