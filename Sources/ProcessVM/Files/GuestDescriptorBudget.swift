import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The host descriptors every guest together may hold: what the engine's own limit leaves
/// once a reserve is set aside for the engine (new VMs, their memfds, /proc reads). Each VM
/// stays within its RLIMIT_NOFILE (EMFILE, `GuestFiles.descriptorLimit`); past this budget
/// every guest's open fails with ENFILE, as Linux's does when the system's file table is
/// full, so that guests can never take the descriptors the engine needs to run its VMs.
enum GuestDescriptorBudget {
    /// Host descriptors held by open files of every guest table (`OpenFile`).
    static let held = Atomic<Int>(0)

    /// The budget, from the engine's soft limit (raised to its hard limit on first use),
    /// less a quarter of it, at least 256, for the engine itself.
    static let limit: Int = {
        let engine = DescriptorLimit.raised
        return max(0, engine - max(256, engine / 4))
    }()

    /// ENFILE when guests already hold the whole budget.
    static func requireRoom() throws(SystemError) {
        guard held.load(ordering: .relaxed) < limit else { throw SystemError(call: "guest descriptor budget", errno: ENFILE) }
    }
}
