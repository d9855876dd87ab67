import Foundation
import HostSystem
import TestSupport
import Testing

/// PageMap's accounting of a range against what the kernel says of it in /proc/self/smaps.
struct PageMapTests {
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    @Test func writtenAnonymousPagesArePrivateAndUntouchedOnesAbsent() throws {
        let pages = 64
        let mapping = try MappedMemory(length: pages * pageSize, flags: MAP_PRIVATE)
        for page in 0..<10 { mapping.base.storeBytes(of: 1, toByteOffset: page * pageSize, as: UInt8.self) }
        let usage = try PageMap().usage(of: UInt(bitPattern: mapping.base), length: mapping.length)
        #expect(usage == MappingUsage(resident: 10 * pageSize, shared: 0, privateBytes: 10 * pageSize))
    }

    /// A memfd mapped shared (a parent) and twice more copy-on-write (two children), each
    /// child reading some pages and writing others: the page map's figures for each mapping
    /// are smaps' figures for it.
    @Test func copyOnWriteMappingsCountAsSmapsCountsThem() throws {
        let pages = 256
        let length = pages * pageSize
        let memfd = try makeMemfd(name: "pagemap-test", size: length)
        let parent = try MappedMemory(length: length, flags: MAP_SHARED, fd: memfd.rawValue)
        for page in 0..<128 { parent.base.storeBytes(of: 1, toByteOffset: page * pageSize, as: UInt8.self) }
        let first = try MappedMemory(length: length, flags: MAP_PRIVATE, fd: memfd.rawValue)
        let second = try MappedMemory(length: length, flags: MAP_PRIVATE, fd: memfd.rawValue)
        var sum = 0
        for page in stride(from: 0, to: 128, by: 3) { sum += Int(first.base.load(fromByteOffset: page * pageSize, as: UInt8.self)) }
        for page in stride(from: 0, to: 64, by: 2) { sum += Int(second.base.load(fromByteOffset: page * pageSize, as: UInt8.self)) }
        for page in 100..<120 { first.base.storeBytes(of: 2, toByteOffset: page * pageSize, as: UInt8.self) }
        for page in 160..<170 { second.base.storeBytes(of: 3, toByteOffset: page * pageSize, as: UInt8.self) }
        #expect(sum > 0)
        let smaps = SmapsAccounting.current()
        let pageMap = try PageMap()
        let ranges = [("parent", UInt(bitPattern: parent.base)), ("first", UInt(bitPattern: first.base)), ("second", UInt(bitPattern: second.base))]
        for (name, mapping) in ranges {
            let measured = try pageMap.usage(of: mapping, length: length)
            #expect(measured == smaps.usage(of: mapping, length: length), "\(name)")
            #expect(measured.resident > 0, "\(name)")
        }
        // The children's written pages are theirs; the parent's pages the children read are shared.
        let firstUsage = try pageMap.usage(of: UInt(bitPattern: first.base), length: length)
        #expect(firstUsage.privateBytes >= 20 * pageSize && firstUsage.shared > 0)
    }

    /// The private pages of a copy-on-write mapping of a memfd and of an anonymous mapping, as
    /// PAGEMAP_SCAN gives them and as the page map's entries give them: the same pages, the
    /// written ones a page of their own, the zero page not, pages only read from the memfd
    /// absent. Written pages every other one, so that the scan needs more than one call.
    @Test func scannedPrivatePagesAreThoseTheEntriesName() throws {
        let pages = 1_024
        let length = pages * pageSize
        let memfd = try makeMemfd(name: "pagemap-scan-test", size: length)
        let parent = try MappedMemory(length: length, flags: MAP_SHARED, fd: memfd.rawValue)
        for page in 0..<512 { parent.base.storeBytes(of: 1, toByteOffset: page * pageSize, as: UInt8.self) }
        let child = try MappedMemory(length: length, flags: MAP_PRIVATE, fd: memfd.rawValue)
        let anonymous = try MappedMemory(length: length, flags: MAP_PRIVATE)
        var sum = 0
        for page in 0..<100 { sum += Int(child.base.load(fromByteOffset: page * pageSize, as: UInt8.self)) }
        for page in stride(from: 100, to: 900, by: 2) { child.base.storeBytes(of: 2, toByteOffset: page * pageSize, as: UInt8.self) }
        for page in 0..<50 { sum += Int(anonymous.base.load(fromByteOffset: page * pageSize, as: UInt8.self)) }
        for page in 60..<70 { anonymous.base.storeBytes(of: 3, toByteOffset: page * pageSize, as: UInt8.self) }
        #expect(sum == 100)
        let scanning = try PageMap(), reading = try PageMap(scanning: false)
        for (name, base) in [("child", child.base), ("anonymous", anonymous.base)] {
            var scanned: [Int: Bool] = [:], read: [Int: Bool] = [:]
            try scanning.forEachPrivatePage(address: UInt(bitPattern: base), pages: pages) { scanned[$0] = $1 }
            try reading.forEachPrivatePage(address: UInt(bitPattern: base), pages: pages) { read[$0] = $1 }
            #expect(scanned == read, "\(name)")
            if name == "child" {
                #expect(scanned == Dictionary(uniqueKeysWithValues: stride(from: 100, to: 900, by: 2).map { ($0, true) }))
            } else {
                #expect(scanned.filter { $0.value }.keys.sorted() == Array(60..<70))
                #expect(scanned.filter { !$0.value }.keys.sorted() == Array(0..<50))
            }
        }
        // Linux 6.7 and later answer PAGEMAP_SCAN: the scan was not a fallback to the entries.
        let release = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)) ?? ""
        let version = release.split(separator: ".").prefix(2).compactMap { Int($0.prefix { $0.isNumber }) }
        if version.count == 2, (version[0], version[1]) >= (6, 7) { #expect(scanning.scans, "kernel \(release)") }
    }
}
