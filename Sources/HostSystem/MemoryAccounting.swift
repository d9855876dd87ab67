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

    public init(resident: Int, shared: Int, privateBytes: Int, privateDirty: Int) {
        self.resident = resident
        self.shared = shared
        self.privateBytes = privateBytes
        self.privateDirty = privateDirty
    }
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
        guard let bytes = readKernelBytes("/proc/self/smaps") else { return MemoryMappings(entries: []) }
        return parse(bytes)
    }

    /// Parses smaps text: a header line per mapping ("start-end perms offset device inode
    /// path", the range in hex) followed by its "Key: N kB" lines. Read as bytes: splitting a
    /// String into substrings and characters took ~40 ms of CPU a read with a pool of 32 VMs,
    /// and the load runner's sampler asks for one every second.
    public static func parse(_ bytes: [UInt8]) -> MemoryMappings {
        var entries: [Entry] = []
        var current: Range<UInt>?
        var usage = MappingUsage(resident: 0, shared: 0, privateBytes: 0, privateDirty: 0)
        func finish() {
            if let current { entries.append(Entry(range: current, usage: usage)) }
        }
        // unsafe: every index read is checked against the buffer's count (the lines' and words' ends).
        bytes.withUnsafeBufferPointer { text in
            var lineStart = 0
            while lineStart < text.count {
                var lineEnd = lineStart
                while lineEnd < text.count, text[lineEnd] != newline { lineEnd += 1 }
                defer { lineStart = lineEnd + 1 }
                // The line's first two space-separated words.
                var firstStart = lineStart
                while firstStart < lineEnd, text[firstStart] == space { firstStart += 1 }
                guard firstStart < lineEnd else { continue }
                var firstEnd = firstStart
                while firstEnd < lineEnd, text[firstEnd] != space { firstEnd += 1 }
                let first = UnsafeBufferPointer(rebasing: text[firstStart..<firstEnd])
                if first.last != colon {
                    // A mapping's header.
                    finish()
                    current = range(first)
                    usage = MappingUsage(resident: 0, shared: 0, privateBytes: 0, privateDirty: 0)
                    continue
                }
                var secondStart = firstEnd
                while secondStart < lineEnd, text[secondStart] == space { secondStart += 1 }
                var secondEnd = secondStart
                while secondEnd < lineEnd, text[secondEnd] != space { secondEnd += 1 }
                guard let kilobytes = decimal(UnsafeBufferPointer(rebasing: text[secondStart..<secondEnd])) else { continue }
                let amount = kilobytes * 1024
                if first.elementsEqual(rss) {
                    usage.resident = amount
                } else if first.elementsEqual(sharedClean) || first.elementsEqual(sharedDirty) {
                    usage.shared += amount
                } else if first.elementsEqual(privateClean) {
                    usage.privateBytes += amount
                } else if first.elementsEqual(privateDirtyKey) {
                    usage.privateBytes += amount
                    usage.privateDirty = amount
                }
            }
        }
        finish()
        return MemoryMappings(entries: entries)
    }

    private static let newline = UInt8(ascii: "\n"), space = UInt8(ascii: " "), colon = UInt8(ascii: ":"), dash = UInt8(ascii: "-")
    private static let rss = Array("Rss:".utf8), sharedClean = Array("Shared_Clean:".utf8), sharedDirty = Array("Shared_Dirty:".utf8)
    private static let privateClean = Array("Private_Clean:".utf8), privateDirtyKey = Array("Private_Dirty:".utf8)

    /// "start-end" in hex, start below end; nil otherwise.
    private static func range(_ word: UnsafeBufferPointer<UInt8>) -> Range<UInt>? {
        guard let dashAt = word.firstIndex(of: dash),
              let start = hexadecimal(UnsafeBufferPointer(rebasing: word[..<dashAt])),
              let end = hexadecimal(UnsafeBufferPointer(rebasing: word[(dashAt + 1)...])), start < end else { return nil }
        return start..<end
    }

    /// 1-16 hex digits, nothing else.
    private static func hexadecimal(_ digits: UnsafeBufferPointer<UInt8>) -> UInt? {
        guard (1...16).contains(digits.count) else { return nil }
        var value: UInt = 0
        for byte in digits {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt(digit)
        }
        return value
    }

    /// 1-15 decimal digits (kilobytes, so that the byte count cannot overflow), nothing else.
    private static func decimal(_ digits: UnsafeBufferPointer<UInt8>) -> Int? {
        guard (1...15).contains(digits.count) else { return nil }
        var value = 0
        for byte in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
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
    readKernelBytes(path).map { String(decoding: $0, as: UTF8.self) }
}

/// `readKernelFile`'s bytes, undecoded.
public func readKernelBytes(_ path: String) -> [UInt8]? {
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
    return bytes
}
