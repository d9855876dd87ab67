import Disk
import Foundation
import Testing

/// Crafted extents whose every field is in range but whose structures contradict each other.
@Suite struct HostileInputTests {
    /// A disk of `capacity` bytes made by us, its header, and its bytes.
    private func makeDisk(_ fixture: DiskFixture, capacity: UInt64) async throws -> (SparseExtentHeader, [UInt8]) {
        try await VMDKImage.create(at: fixture.path("d.vmdk"), capacityBytes: capacity, engine: fixture.engine)
        let bytes = try fixture.readFile("d.vmdk")
        return (try SparseExtentHeader.parse(Array(bytes[0..<512]), file: "d.vmdk"), bytes)
    }

    /// Directory entries that all point at one table made every table a cached copy of it:
    /// a 64 MiB directory over one 16 KiB table asked for 256 GiB of memory when the disk
    /// was checked or read whole. The overlap is refused at open, naming both entries.
    @Test func grainTablesSharingSectorsAreRefused() async throws {
        let fixture = try DiskFixture("aliased-tables")
        let (header, initial) = try await makeDisk(fixture, capacity: 64 << 20)
        #expect(header.grainTableCount == 2)
        var bytes = initial
        let directory = Int(header.directoryOffset) * 512
        bytes.replaceSubrange(directory + 4..<directory + 8, with: bytes[directory..<directory + 4])
        _ = try fixture.writeFile("aliased.vmdk", bytes)
        let error = await #expect(throws: DiskError.self) { _ = try await VirtualDisk.open(path: fixture.path("aliased.vmdk"), engine: fixture.engine) }
        #expect(error?.description.contains("malformed grain directory entry 1: grain table at sector") == true, "\(String(describing: error))")
        #expect(error?.description.contains("overlaps the table of entry 0") == true, "\(String(describing: error))")
    }

    /// The format lets the directory sit anywhere; one after the last grain was counted as
    /// leaked space, and repair cut it off, losing every grain. Now it counts as metadata.
    @Test func repairKeepsADirectoryThatFollowsTheGrains() async throws {
        let fixture = try DiskFixture("directory-at-end")
        let data = DiskFixture.pattern(count: 1 << 20, seed: 5)
        _ = try await makeDisk(fixture, capacity: UInt64(data.count))
        let disk = try await VirtualDisk.open(path: fixture.path("d.vmdk"), writable: true, engine: fixture.engine)
        try await disk.write(data, at: 0)
        try await disk.flush()
        var bytes = try fixture.readFile("d.vmdk")
        var header = try SparseExtentHeader.parse(Array(bytes[0..<512]), file: "d.vmdk")
        let directory = Int(header.directoryOffset) * 512
        let moved = Array(bytes[directory..<directory + Int(header.grainDirectorySectors) * 512])
        header.directoryOffset = UInt64(bytes.count / 512)
        bytes += moved
        bytes.replaceSubrange(0..<512, with: header.serialized())
        _ = try fixture.writeFile("moved.vmdk", bytes)
        #expect(try await fixture.readDisk("moved.vmdk") == data)
        let report = try await DiskCheck.repair(path: fixture.path("moved.vmdk"), engine: fixture.engine)
        #expect(report.errors.isEmpty && report.leakedBytes == 0, "\(report)")
        #expect(try fixture.readFile("moved.vmdk").count == bytes.count)
        #expect(try await fixture.readDisk("moved.vmdk") == data)
    }
}
