import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// Counts of what one vCPU made the hypervisor do, from KVM's binary statistics
/// (KVM_GET_STATS_FD): every exit, those that came out to the engine (I/O), the page faults
/// KVM took (shadow paging: first touches and copies on write) and the instructions it
/// emulated (CPUID, for one). Cumulative over the vCPU's life; a run's counts are the
/// difference of two readings.
public struct VCPUCounters: Sendable, Equatable, CustomStringConvertible {
    public var exits: UInt64 = 0
    public var ioExits: UInt64 = 0
    public var pageFaults: UInt64 = 0
    public var emulatedInstructions: UInt64 = 0

    public init() {}

    public static func - (later: VCPUCounters, earlier: VCPUCounters) -> VCPUCounters {
        var difference = VCPUCounters()
        difference.exits = later.exits &- earlier.exits
        difference.ioExits = later.ioExits &- earlier.ioExits
        difference.pageFaults = later.pageFaults &- earlier.pageFaults
        difference.emulatedInstructions = later.emulatedInstructions &- earlier.emulatedInstructions
        return difference
    }

    public var description: String {
        "\(exits) exits (\(ioExits) to the engine, \(pageFaults) page faults, \(emulatedInstructions) emulated instructions)"
    }
}

/// A vCPU's statistics descriptor and where the counters sit in it, found once.
final class VCPUStatistics: Sendable {
    private let fd: FileDescriptor
    /// Where each counter is in the file, in `VCPUCounters`' order, and the span read.
    private let offsets: [Int]
    private let span: Range<Int>

    /// The statistics' names, as KVM's descriptors spell them.
    static let names = ["exits", "io_exits", "pf_taken", "insn_emulation"]

    /// nil where KVM has no binary statistics (before Linux 5.14) or lacks a counter.
    init?(vcpuDescriptor: Int32) {
        let raw = cshims_ioctl_int(vcpuDescriptor, CSHIMS_KVM_GET_STATS_FD, 0)
        guard raw >= 0 else { return nil }
        fd = FileDescriptor(adopting: raw)
        var header = kvm_stats_header()
        guard pread(raw, &header, MemoryLayout<kvm_stats_header>.size, 0) == MemoryLayout<kvm_stats_header>.size,
              header.num_desc > 0, header.num_desc < 4096, header.name_size > 0, header.name_size <= 256 else { return nil }
        let descriptorSize = MemoryLayout<kvm_stats_desc>.size + Int(header.name_size)
        var descriptors = [UInt8](repeating: 0, count: descriptorSize * Int(header.num_desc))
        let wanted = descriptors.count
        // unsafe: pread writes `wanted` bytes, the array's count, during the closure.
        guard descriptors.withUnsafeMutableBytes({ pread(raw, $0.baseAddress, wanted, off_t(header.desc_offset)) }) == wanted else { return nil }
        var found: [String: Int] = [:]
        // unsafe: each descriptor's fields and name lie in [base, base + descriptorSize), index < num_desc; loadUnaligned needs no alignment.
        descriptors.withUnsafeBytes { bytes in
            for index in 0..<Int(header.num_desc) {
                let base = index * descriptorSize
                let offset = Int(bytes.loadUnaligned(fromByteOffset: base + MemoryLayout<kvm_stats_desc>.offset(of: \kvm_stats_desc.offset)!, as: UInt32.self))
                let size = bytes.loadUnaligned(fromByteOffset: base + MemoryLayout<kvm_stats_desc>.offset(of: \kvm_stats_desc.size)!, as: UInt16.self)
                let nameBytes = bytes[(base + MemoryLayout<kvm_stats_desc>.size)..<(base + descriptorSize)]
                let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
                if size == 1, Self.names.contains(name) { found[name] = Int(header.data_offset) + offset }
            }
        }
        let offsets = Self.names.compactMap { found[$0] }
        // Every counter is a u64 at an 8-byte offset (KVM's ABI), which the reads rely on; a
        // kernel that laid them out otherwise gets no counters rather than a short buffer.
        guard offsets.count == Self.names.count, offsets.allSatisfy({ $0 % 8 == 0 }) else { return nil }
        self.offsets = offsets
        span = offsets.min()!..<(offsets.max()! + 8)
    }

    /// The counters now: one read of the few words that hold them, into a buffer on the
    /// stack (it runs twice per child, on the fork's path).
    func read() -> VCPUCounters? {
        let count = span.count
        // unsafe: the offsets are multiples of 8 (checked in init), so count (max - min + 8) is a multiple of 8 and pread fills exactly the words;
        // each index (offset - min) / 8 is below count / 8.
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: count / 8) { words -> VCPUCounters? in
            guard pread(fd.rawValue, words.baseAddress, count, off_t(span.lowerBound)) == count else { return nil }
            func value(_ index: Int) -> UInt64 { words[(offsets[index] - span.lowerBound) / 8] }
            var counters = VCPUCounters()
            counters.exits = value(0)
            counters.ioExits = value(1)
            counters.pageFaults = value(2)
            counters.emulatedInstructions = value(3)
            return counters
        }
    }
}
