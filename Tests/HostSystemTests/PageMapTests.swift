import Foundation
import HostSystem
import TestSupport
import Testing

/// PageMap's accounting of a range against what the kernel says of it in /proc/self/smaps.
struct PageMapTests {
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Writes `value` into the first byte of each of `pages` of the mapping at `base`.
    func write(_ value: UInt8, to base: UnsafeMutableRawPointer, pages: some Sequence<Int>) {
        for page in pages { base.storeBytes(of: value, toByteOffset: page * pageSize, as: UInt8.self) }
    }

    /// Reads the first byte of each of `pages` of the mapping at `base`; their sum.
    func readSum(_ base: UnsafeMutableRawPointer, pages: some Sequence<Int>) -> Int {
        pages.reduce(0) { $0 + Int(base.load(fromByteOffset: $1 * pageSize, as: UInt8.self)) }
    }

    @Test func writtenAnonymousPagesArePrivateAndUntouchedOnesAbsent() throws {
        let pages = 64
        let mapping = try MappedMemory(length: pages * pageSize, flags: MAP_PRIVATE)
        write(1, to: mapping.base, pages: 0..<10)
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
        write(1, to: parent.base, pages: 0..<128)
        let first = try MappedMemory(length: length, flags: MAP_PRIVATE, fd: memfd.rawValue)
        let second = try MappedMemory(length: length, flags: MAP_PRIVATE, fd: memfd.rawValue)
        var sum = 0
        sum += readSum(first.base, pages: stride(from: 0, to: 128, by: 3))
        sum += readSum(second.base, pages: stride(from: 0, to: 64, by: 2))
        write(2, to: first.base, pages: 100..<120)
        write(3, to: second.base, pages: 160..<170)
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
        write(1, to: parent.base, pages: 0..<512)
        let child = try MappedMemory(length: length, flags: MAP_PRIVATE, fd: memfd.rawValue)
        let anonymous = try MappedMemory(length: length, flags: MAP_PRIVATE)
        var sum = 0
        sum += readSum(child.base, pages: 0..<100)
        write(2, to: child.base, pages: stride(from: 100, to: 900, by: 2))
        sum += readSum(anonymous.base, pages: 0..<50)
        write(3, to: anonymous.base, pages: 60..<70)
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

    /// Write tracking as a pooled VM's memory has it: a copy-on-write mapping of a memfd with
    /// anonymous holes, protected up to a mark and anonymous above it. Pages written by user
    /// code, by the kernel copying into them (a read from a pipe) and through another
    /// view of the pages (/proc/self/mem, as KVM writes a guest's memory) are named; pages
    /// only read (the memfd's, and the zero page in a hole or above the mark) are not. They
    /// are the pages the kernel counts the mapping's own.
    @Test func writtenPagesAreThoseAnyWriterWrote() throws {
        try #require(WriteTracking.probe() == nil, "this kernel tracks writes (Linux 6.7)")
        let pages = 1_024
        let length = pages * pageSize
        let memfd = try makeMemfd(name: "pagemap-written-test", size: length)
        let parent = try MappedMemory(length: length, flags: MAP_SHARED, fd: memfd.rawValue)
        write(1, to: parent.base, pages: 0..<512)
        let child = try MappedMemory(length: length, flags: MAP_PRIVATE, fd: memfd.rawValue)
        for hole in [600..<700, 800..<pages] {
            let target = child.base.advanced(by: hole.lowerBound * pageSize)
            #expect(mmap(target, hole.count * pageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == target)
        }
        let tracking = try WriteTracking(start: UInt(bitPattern: child.base), length: length, protected: 800 * pageSize)
        #expect(tracking.length == length)
        var sum = readSum(child.base, pages: 0..<100)
        sum += readSum(child.base, pages: 600..<650)
        sum += readSum(child.base, pages: 850..<860)
        #expect(sum == 100)
        write(2, to: child.base, pages: stride(from: 100, to: 200, by: 2))
        write(3, to: child.base, pages: 650..<660)
        write(4, to: child.base, pages: 900..<905)
        // The kernel's writes: a pipe's bytes read into a page of the memfd's and one of a hole.
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        for page in [300, 690] {
            #expect(Glibc.write(ends[1], "kernel!!", 8) == 8)
            #expect(read(ends[0], child.base.advanced(by: page * pageSize), 8) == 8)
        }
        // The kernel writing through its own view of the pages (/proc/self/mem: the page
        // lookup a KVM write to guest memory makes too).
        let memory = try FileDescriptor.open("/proc/self/mem", O_RDWR)
        let address = off_t(Int(bitPattern: child.base.advanced(by: 400 * pageSize)))
        #expect(pwrite(memory.rawValue, "remote!!", 8, address) == 8)
        var found: [Int] = []
        try PageMap().forEachWrittenPage(address: UInt(bitPattern: child.base), pages: pages) { found.append($0) }
        let expected = Array(stride(from: 100, to: 200, by: 2)) + [300, 400] + Array(650..<660) + [690] + Array(900..<905)
        #expect(found == expected.sorted())
        // As many as the pages the kernel counts this mapping's own (present, mapped once).
        let usage = try PageMap().usage(of: UInt(bitPattern: child.base), length: length)
        #expect(usage.privateBytes == found.count * pageSize)
        // What the parent's memfd holds is unchanged by any of it.
        #expect(readSum(parent.base, pages: 0..<512) == 512)
    }

    /// Asking for written pages where no range is tracked is refused, not answered with pages.
    @Test func writtenPagesOfAnUntrackedMappingAreRefused() throws {
        let mapping = try MappedMemory(length: 16 * pageSize, flags: MAP_PRIVATE)
        write(1, to: mapping.base, pages: 0..<4)
        #expect {
            try PageMap().forEachWrittenPage(address: UInt(bitPattern: mapping.base), pages: 16) { _ in }
        } throws: { error in
            (error as? SystemError)?.errno == EPERM
        }
    }
}
