import HostSystem
import Testing

/// /proc/self/smaps as the engine reads it (`MemoryMappings.parse`, bytes, not a String).
@Suite struct MemoryMappingsTests {
    @Test func parsesEachMappingsRangeAndAccounting() {
        let text = """
            7f0000000000-7f0000004000 rw-s 00000000 00:01 1234                       /memfd:guest (deleted)
            Size:                 16 kB
            Rss:                  12 kB
            Shared_Clean:          4 kB
            Shared_Dirty:          0 kB
            Private_Clean:         0 kB
            Private_Dirty:         8 kB
            VmFlags: rd wr sh mr mw me ms sd
            7f0000004000-7f0000005000 r--p 00000000 00:00 0
            Rss:                   4 kB
            Private_Clean:         4 kB
            zz-7f00 r--p 00000000 00:00 0
            Rss:                  99 kB
            7f0000009000-7f0000008000 r--p 00000000 00:00 0
            Rss:                  99 kB

            """
        let mappings = MemoryMappings.parse(Array(text.utf8))
        #expect(mappings.entries.map(\.range) == [0x7f00_0000_0000..<0x7f00_0000_4000, 0x7f00_0000_4000..<0x7f00_0000_5000])
        #expect(mappings.entries.first?.usage == MappingUsage(resident: 12 << 10, shared: 4 << 10, privateBytes: 8 << 10, privateDirty: 8 << 10))
        #expect(mappings.entries.last?.usage == MappingUsage(resident: 4 << 10, shared: 0, privateBytes: 4 << 10, privateDirty: 0))
        // Both mappings together, as a region the engine mapped may be several to the kernel.
        #expect(mappings.usage(of: 0x7f00_0000_0000, length: 0x5000)?.resident == 16 << 10)
    }

    @Test func ignoresWhatIsNotANumberOfKilobytes() {
        let text = "1000-2000 rw-p 0 00:00 0\nRss: 12x kB\nPrivate_Dirty: 99999999999999999999 kB\nShared_Clean: 4 kB\n"
        let mappings = MemoryMappings.parse(Array(text.utf8))
        #expect(mappings.entries.count == 1)
        #expect(mappings.entries.first?.usage == MappingUsage(resident: 0, shared: 4 << 10, privateBytes: 0, privateDirty: 0))
    }

    @Test func readsThisProcesssOwnMappings() {
        let mappings = MemoryMappings.current()
        #expect(!mappings.entries.isEmpty)
        #expect(mappings.entries.allSatisfy { $0.range.lowerBound < $0.range.upperBound })
        #expect(mappings.entries.contains { $0.usage.resident > 0 })
    }
}
