import Foundation

/// The kernel's own accounting of one mapping of this process, from /proc/self/smaps.
public struct MappingUsage: Sendable, Equatable {
    /// Resident bytes of the mapping.
    public var resident: Int
    /// Resident pages also mapped elsewhere (a child's pages still shared with its parent's memfd).
    public var shared: Int
    /// Pages only this mapping has: what a copy-on-write child owns.
    public var privateBytes: Int
    /// Of those, the dirtied ones (copy-on-write copies and fresh anonymous pages).
    public var privateDirty: Int
}

/// This process's mappings with the kernel's accounting of each, from one read of
/// /proc/self/smaps, which then serves every VM of a report.
public struct MemoryMappings: Sendable {
    public struct Entry: Sendable {
        public let range: Range<UInt>
        public let usage: MappingUsage
    }

    public let entries: [Entry]

    public static func current() -> MemoryMappings {
        guard let text = readKernelFile("/proc/self/smaps") else { return MemoryMappings(entries: []) }
        var entries: [Entry] = []
        var current: Range<UInt>?
        var usage = MappingUsage(resident: 0, shared: 0, privateBytes: 0, privateDirty: 0)
        func finish() {
            if let current { entries.append(Entry(range: current, usage: usage)) }
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = parts.first else { continue }
            if !first.hasSuffix(":") {
                // A mapping's header: "start-end perms offset device inode path".
                finish()
                let bounds = first.split(separator: "-").compactMap { UInt($0, radix: 16) }
                current = bounds.count == 2 && bounds[0] < bounds[1] ? bounds[0]..<bounds[1] : nil
                usage = MappingUsage(resident: 0, shared: 0, privateBytes: 0, privateDirty: 0)
                continue
            }
            guard parts.count >= 2, let kilobytes = Int(parts[1]) else { continue }
            let bytes = kilobytes * 1024
            switch first {
            case "Rss:": usage.resident = bytes
            case "Shared_Clean:", "Shared_Dirty:": usage.shared += bytes
            case "Private_Clean:": usage.privateBytes += bytes
            case "Private_Dirty:":
                usage.privateBytes += bytes
                usage.privateDirty = bytes
            default: break
            }
        }
        finish()
        return MemoryMappings(entries: entries)
    }

    /// The summed usage of every mapping inside [start, start + length) — one region the
    /// engine mapped may be several mappings to the kernel — or nil when none is there.
    public func usage(of start: UInt, length: Int) -> MappingUsage? {
        let region = start..<(start + UInt(length))
        let inside = entries.filter { region.contains($0.range.lowerBound) }
        guard !inside.isEmpty else { return nil }
        return inside.reduce(MappingUsage(resident: 0, shared: 0, privateBytes: 0, privateDirty: 0)) { total, entry in
            MappingUsage(resident: total.resident + entry.usage.resident, shared: total.shared + entry.usage.shared,
                         privateBytes: total.privateBytes + entry.usage.privateBytes,
                         privateDirty: total.privateDirty + entry.usage.privateDirty)
        }
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
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
