import Foundation

/// The kernel's own accounting of one range of this process's memory (a VM's guest mapping),
/// from its page map (`PageMap`): the figures /proc/self/smaps sums per mapping.
public struct MappingUsage: Sendable, Equatable {
    /// Resident bytes of the range (smaps' Rss).
    public var resident: Int
    /// Resident pages also mapped elsewhere (a child's pages still shared with its parent's
    /// memfd): smaps' Shared_Clean + Shared_Dirty.
    public var shared: Int
    /// Resident pages only this range maps: what a copy-on-write child owns (copies and fresh
    /// pages), smaps' Private_Clean + Private_Dirty.
    public var privateBytes: Int

    public init(resident: Int, shared: Int, privateBytes: Int) {
        self.resident = resident
        self.shared = shared
        self.privateBytes = privateBytes
    }

    public static let zero = MappingUsage(resident: 0, shared: 0, privateBytes: 0)

    public static func + (lhs: MappingUsage, rhs: MappingUsage) -> MappingUsage {
        MappingUsage(resident: lhs.resident + rhs.resident, shared: lhs.shared + rhs.shared, privateBytes: lhs.privateBytes + rhs.privateBytes)
    }
}

/// Host kernel memory the kernel reports in /proc/meminfo that VMs cost: vmalloc (KVM's
/// per-VM structures), slab, kernel stacks and page tables.
public struct KernelMemory: Sendable, Equatable {
    public var vmalloc: Int
    public var slab: Int
    public var kernelStack: Int
    public var pageTables: Int

    public var total: Int { vmalloc + slab + kernelStack + pageTables }

    public static func current() -> KernelMemory {
        var values: [String: Int] = [:]
        if let text = readKernelFile("/proc/meminfo") {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                if parts.count >= 2, let kilobytes = Int(parts[1]) { values[String(parts[0].dropLast())] = kilobytes * 1024 }
            }
        }
        return KernelMemory(vmalloc: values["VmallocUsed"] ?? 0, slab: values["Slab"] ?? 0,
                            kernelStack: values["KernelStack"] ?? 0, pageTables: (values["PageTables"] ?? 0) + (values["SecPageTables"] ?? 0))
    }

    public static func - (lhs: KernelMemory, rhs: KernelMemory) -> KernelMemory {
        KernelMemory(vmalloc: lhs.vmalloc - rhs.vmalloc, slab: lhs.slab - rhs.slab,
                     kernelStack: lhs.kernelStack - rhs.kernelStack, pageTables: lhs.pageTables - rhs.pageTables)
    }

    public func divided(by count: Int) -> KernelMemory {
        KernelMemory(vmalloc: vmalloc / count, slab: slab / count, kernelStack: kernelStack / count, pageTables: pageTables / count)
    }
}

/// Reads a /proc file to its end. They report a size of 0, so readers that trust the size
/// see nothing.
public func readKernelFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        // unsafe: read writes at most $0.count bytes, the chunk's size, during the closure.
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
