import Foundation
import HostSystem

/// The kernel's accounting of this process's mappings as /proc/self/smaps sums it per
/// mapping: the reference tests check `PageMap`'s figures against (the engine reads the page
/// map, which costs in proportion to the ranges asked; smaps walks every mapping).
public struct SmapsAccounting: Sendable {
    public struct Entry: Sendable {
        public let range: Range<UInt>
        public let usage: MappingUsage
    }

    public let entries: [Entry]

    /// One read of /proc/self/smaps now.
    public static func current() -> SmapsAccounting {
        guard let text = readKernelFile("/proc/self/smaps") else { return SmapsAccounting(entries: []) }
        var entries: [Entry] = []
        var current: Range<UInt>?
        var usage = MappingUsage.zero
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
                usage = .zero
                continue
            }
            guard parts.count >= 2, let kilobytes = Int(parts[1]) else { continue }
            let bytes = kilobytes * 1024
            switch first {
            case "Rss:": usage.resident = bytes
            case "Shared_Clean:", "Shared_Dirty:": usage.shared += bytes
            case "Private_Clean:", "Private_Dirty:": usage.privateBytes += bytes
            default: break
            }
        }
        finish()
        return SmapsAccounting(entries: entries)
    }

    /// The summed usage of the mappings that make up [start, start + length) (one region the
    /// engine mapped may be several mappings to the kernel), or nil when smaps cannot say: no
    /// mapping there, or one that reaches past either end (the kernel merged the region with
    /// a neighbour, and smaps sums per mapping).
    public func usage(of start: UInt, length: Int) -> MappingUsage? {
        let region = start..<(start + UInt(length))
        let touching = entries.filter { $0.range.overlaps(region) }
        guard !touching.isEmpty, touching.allSatisfy({ region.contains($0.range.lowerBound) && $0.range.upperBound <= region.upperBound }) else {
            return nil
        }
        return touching.reduce(MappingUsage.zero) { $0 + $1.usage }
    }

    /// The mappings that overlap [start, start + length), as smaps lists them.
    public func mappings(overlapping start: UInt, length: Int) -> [Entry] {
        let region = start..<(start + UInt(length))
        return entries.filter { $0.range.overlaps(region) }
    }
}
