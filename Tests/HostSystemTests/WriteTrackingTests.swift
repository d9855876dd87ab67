import CShims
import Foundation
import HostSystem
import Testing

/// Write tracking under the engine worker's seccomp filter: a worker's pooled VMs track their
/// writes with a userfaultfd for user-mode faults only, and the filter lets exactly that
/// through (the call with UFFD_USER_MODE_ONLY, and the three requests made on it).
struct WriteTrackingTests {
    @Test func theWorkersFilterAllowsWriteTrackingAndNoOtherUserfaultfd() throws {
        try #require(WriteTracking.probe() == nil, "this kernel tracks writes (Linux 6.7)")
        // Opened, registered and protected under the filter: the child got through.
        #expect(cshims_seccomp_probe_write_tracking(1) == 0)
        // A userfaultfd that could hold up the kernel's own accesses: killed by the filter.
        #expect(cshims_seccomp_probe_write_tracking(0) == SIGSYS)
    }

    /// The probe names what stands in the way when tracking is not possible, and nothing when it is.
    @Test func aTrackedRangeStartsWithNothingWritten() throws {
        try #require(WriteTracking.probe() == nil, "this kernel tracks writes (Linux 6.7)")
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let mapping = try MappedMemory(length: 8 * pageSize, flags: MAP_PRIVATE)
        let tracking = try WriteTracking(start: UInt(bitPattern: mapping.base), length: 8 * pageSize, protected: 8 * pageSize)
        #expect(tracking.start == UInt(bitPattern: mapping.base))
        var found: [Int] = []
        try PageMap().forEachWrittenPage(address: tracking.start, pages: 8) { found.append($0) }
        #expect(found.isEmpty)
        mapping.base.storeBytes(of: 9, toByteOffset: 5 * pageSize, as: UInt8.self)
        try PageMap().forEachWrittenPage(address: tracking.start, pages: 8) { found.append($0) }
        #expect(found == [5])
    }
}
