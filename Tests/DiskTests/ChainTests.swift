import Disk
import Foundation
import Testing

/// Child disks: reads fall through, writes fill partial grains from the chain, parentCIDs are
/// enforced, commit merges; and check, repair and convert.
@Suite struct ChainTests {
    @Test func readsFallThroughTheChainAndWritesStayInTheTop() async throws {
        let fixture = try DiskFixture("chain")
        let size = 1 << 20
        try await VMDKImage.create(at: fixture.path("base.vmdk"), capacityBytes: UInt64(size), engine: fixture.engine)
        let baseDisk = try await VirtualDisk.open(path: fixture.path("base.vmdk"), writable: true, engine: fixture.engine)
        try await baseDisk.write([UInt8](repeating: 0xAA, count: 65536), at: 0)
        try await VMDKImage.createChild(at: fixture.path("layer.vmdk"), parent: fixture.path("base.vmdk"), engine: fixture.engine)
        let layer = try await VirtualDisk.open(path: fixture.path("layer.vmdk"), writable: true, engine: fixture.engine)
        try await layer.write([UInt8](repeating: 0xBB, count: 512), at: 1024)
        try await VMDKImage.createChild(at: fixture.path("container.vmdk"), parent: fixture.path("layer.vmdk"), engine: fixture.engine)
        let container = try await VirtualDisk.open(path: fixture.path("container.vmdk"), writable: true, engine: fixture.engine)
        try await container.write([UInt8](repeating: 0xCC, count: 512), at: 2048)

        let bytes = try await fixture.readDisk("container.vmdk")
        #expect(bytes[0..<1024].allSatisfy { $0 == 0xAA })
        #expect(bytes[1024..<1536].allSatisfy { $0 == 0xBB })
        #expect(bytes[1536..<2048].allSatisfy { $0 == 0xAA })
        #expect(bytes[2048..<2560].allSatisfy { $0 == 0xCC })
        #expect(bytes[2560..<65536].allSatisfy { $0 == 0xAA })
        #expect(bytes[65536...].allSatisfy { $0 == 0 })
        // The layers below are untouched by the container's write.
        #expect(try await fixture.readDisk("layer.vmdk")[2048] == 0xAA)
        let info = try await container.describe()
        #expect(info.map(\.allocatedBytes) == [65536, 65536, 65536])
        #expect(try await fixture.readDisk("container.vmdk") == (try fixture.qemuRaw("container.vmdk")))
    }

    @Test func childOfAChangedParentIsRefusedNamingBothCIDs() async throws {
        let fixture = try DiskFixture("mismatch")
        try await VMDKImage.create(at: fixture.path("base.vmdk"), capacityBytes: 1 << 20, engine: fixture.engine)
        try await VMDKImage.createChild(at: fixture.path("child.vmdk"), parent: fixture.path("base.vmdk"), engine: fixture.engine)
        let base = try await VirtualDisk.open(path: fixture.path("base.vmdk"), writable: true, engine: fixture.engine)
        let cidBefore = base.layers[0].descriptor.cid
        try await base.write([UInt8](repeating: 1, count: 512), at: 0)
        let cidAfter = base.layers[0].descriptor.cid
        #expect(cidBefore != cidAfter)
        let error = await #expect(throws: DiskError.self) {
            _ = try await VirtualDisk.open(path: fixture.path("child.vmdk"), engine: fixture.engine)
        }
        guard case .parentMismatch(_, _, let expected, let found) = error else {
            Issue.record("expected a parentCID mismatch, got \(String(describing: error))")
            return
        }
        #expect(expected == cidBefore && found == cidAfter)
        #expect(error?.description.contains("parentCID") == true)
    }

    @Test func commitMergesTheChildIntoItsParent() async throws {
        let fixture = try DiskFixture("commit")
        let base = DiskFixture.pattern(count: 1 << 20, seed: 11)
        try await DiskConversion.convert(source: try fixture.writeFile("base.raw", base), sourceIsRaw: true, destination: fixture.path("base.vmdk"),
                                         format: .vmdk(.monolithicSparse), engine: fixture.engine)
        try await VMDKImage.createChild(at: fixture.path("child.vmdk"), parent: fixture.path("base.vmdk"), engine: fixture.engine)
        let child = try await VirtualDisk.open(path: fixture.path("child.vmdk"), writable: true, engine: fixture.engine)
        try await child.write([UInt8](repeating: 0x77, count: 4096), at: 200 * 1024)
        try await child.write([UInt8](repeating: 0x78, count: 512), at: 900 * 1024)
        let before = try await fixture.readDisk("child.vmdk")
        let merged = try await DiskConversion.commit(childPath: fixture.path("child.vmdk"), engine: fixture.engine)
        #expect(merged == 2 * 65536)
        #expect(try await fixture.readDisk("base.vmdk") == before)
        #expect(try await fixture.readDisk("child.vmdk") == before)
        try fixture.qemuImg(["check", fixture.path("base.vmdk")])
        #expect(try fixture.qemuRaw("base.vmdk") == before)
    }

    @Test(arguments: WritableSubformat.allCases)
    func convertRoundTripsThroughEverySubformat(subformat: WritableSubformat) async throws {
        let fixture = try DiskFixture("convert")
        let data = DiskFixture.pattern(count: 3 << 20, seed: 5)
        try await DiskConversion.convert(source: try fixture.writeFile("in.raw", data), sourceIsRaw: true, destination: fixture.path("d.vmdk"),
                                         format: .vmdk(subformat), engine: fixture.engine)
        try await DiskConversion.convert(source: fixture.path("d.vmdk"), sourceIsRaw: false, destination: fixture.path("d2.vmdk"),
                                         format: .vmdk(.monolithicSparse), engine: fixture.engine)
        try await DiskConversion.convert(source: fixture.path("d2.vmdk"), sourceIsRaw: false, destination: fixture.path("out.raw"),
                                         format: .raw, engine: fixture.engine)
        #expect(try fixture.readFile("out.raw") == data)
        #expect(await DiskCheck.check(path: fixture.path("d.vmdk"), engine: fixture.engine).isClean)
    }

    @Test func checkFindsLeaksAndStaleRedundantTablesAndRepairFixesThem() async throws {
        let fixture = try DiskFixture("repair")
        let path = fixture.path("d.vmdk")
        try await VMDKImage.create(at: path, capacityBytes: 4 << 20, engine: fixture.engine)
        let disk = try await VirtualDisk.open(path: path, writable: true, engine: fixture.engine)
        try await disk.write([UInt8](repeating: 9, count: 4096), at: 0)
        #expect(await DiskCheck.check(path: path, engine: fixture.engine).isClean)

        // A writer killed after appending a grain but before its table entry: leaked space.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(repeating: 0x42, count: 65536))
        // A writer killed between the two table writes: the redundant table lags.
        let header = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)).prefix(512))
        let rgdSector = header[48..<56].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) }
        try handle.seek(toOffset: rgdSector * 512)
        let firstRedundantTable = try handle.read(upToCount: 4)!.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) }
        try handle.seek(toOffset: firstRedundantTable * 512)
        try handle.write(contentsOf: Data(repeating: 0, count: 4))
        try handle.close()

        let report = await DiskCheck.check(path: path, engine: fixture.engine)
        #expect(report.errors.isEmpty)
        #expect(report.leakedBytes == 65536)
        #expect(report.repairable.count == 2)
        try fixture.qemuImg(["check", path])

        let repaired = try await DiskCheck.repair(path: path, engine: fixture.engine)
        #expect(repaired.isClean)
        #expect(try await fixture.readDisk("d.vmdk")[0..<4096].allSatisfy { $0 == 9 })
    }

    @Test func checkReportsAGrainPointingIntoMetadata() async throws {
        let fixture = try DiskFixture("corrupt")
        let path = fixture.path("d.vmdk")
        try await VMDKImage.create(at: path, capacityBytes: 4 << 20, engine: fixture.engine)
        let disk = try await VirtualDisk.open(path: path, writable: true, engine: fixture.engine)
        try await disk.write([UInt8](repeating: 9, count: 4096), at: 0)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let gdSector = Int(bytes[56..<64].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) })
        let table = Int(bytes[gdSector * 512..<gdSector * 512 + 4].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) })
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(table * 512 + 4))
        try handle.write(contentsOf: Data([2, 0, 0, 0]))
        try handle.close()
        let report = await DiskCheck.check(path: path, engine: fixture.engine)
        #expect(report.errors.contains { $0.contains("overlaps the metadata") })
        await #expect(throws: DiskError.self) { _ = try await DiskCheck.repair(path: path, engine: fixture.engine) }
    }
}

/// The read path's request count and its fallback where O_DIRECT is not allowed.
@Suite struct ReadPathTests {
    @Test func adjacentGrainsOfOneHostFileAreReadInOneRequest() async throws {
        let fixture = try DiskFixture("coalesce")
        let grain = 65536
        try await VMDKImage.create(at: fixture.path("base.vmdk"), capacityBytes: UInt64(32 * grain), engine: fixture.engine)
        let base = try await VirtualDisk.open(path: fixture.path("base.vmdk"), writable: true, engine: fixture.engine)
        // Grains 0..<8 written in order land back to back in the file.
        try await base.write([UInt8](repeating: 1, count: 8 * grain), at: 0)
        try await VMDKImage.createChild(at: fixture.path("child.vmdk"), parent: fixture.path("base.vmdk"), engine: fixture.engine)
        let child = try await VirtualDisk.open(path: fixture.path("child.vmdk"), writable: true, engine: fixture.engine)
        // The child takes grains 2 and 3 (one run in the child's file).
        try await child.write([UInt8](repeating: 2, count: 2 * grain), at: UInt64(2 * grain))

        var before = fixture.engine.requestsSubmitted
        _ = try await base.read(count: 8 * grain, at: 0)
        #expect(fixture.engine.requestsSubmitted - before == 1)

        // Through the chain: base 0-1, child 2-3, base 4-7, then unallocated zeros: three runs.
        before = fixture.engine.requestsSubmitted
        let bytes = try await child.read(count: 12 * grain, at: 0)
        #expect(fixture.engine.requestsSubmitted - before == 3)
        #expect(bytes[0..<2 * grain].allSatisfy { $0 == 1 } && bytes[2 * grain..<4 * grain].allSatisfy { $0 == 2 })
        #expect(bytes[4 * grain..<8 * grain].allSatisfy { $0 == 1 } && bytes[(8 * grain)...].allSatisfy { $0 == 0 })
    }

    @Test func diskOnAFileSystemWithoutODirectWorksThroughThePageCache() async throws {
        guard FileManager.default.fileExists(atPath: "/dev/shm") else { return }
        let fixture = try DiskFixture("tmpfs")
        let folder = URL(fileURLWithPath: "/dev/shm").appendingPathComponent("vmfork-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("d.vmdk").path
        try await VMDKImage.create(at: path, capacityBytes: 1 << 20, engine: fixture.engine)
        let disk = try await VirtualDisk.open(path: path, writable: true, engine: fixture.engine)
        try await disk.write([UInt8](repeating: 0x5A, count: 1024), at: 4096)
        #expect(try await disk.read(count: 1024, at: 4096) == [UInt8](repeating: 0x5A, count: 1024))
        #expect(await DiskCheck.check(path: path, engine: fixture.engine).isClean)
    }

    @Test func benchmarkLoadWritesWhereTheQemuPatternSays() async throws {
        let fixture = try DiskFixture("load")
        try await VMDKImage.create(at: fixture.path("d.vmdk"), capacityBytes: 1 << 20, engine: fixture.engine)
        let disk = try await VirtualDisk.open(path: fixture.path("d.vmdk"), writable: true, engine: fixture.engine)
        let load = DiskLoad(requestBytes: 4096, step: 4096 * 7, depth: 8, count: 64, write: true)
        #expect(try await load.run(on: disk) > 0)
        let written = Set((0..<64).map { load.offset($0, capacity: disk.capacityBytes) })
        #expect(written.count == 64)
        let bytes = try await fixture.readDisk("d.vmdk")
        for block in stride(from: 0, to: bytes.count, by: 4096) {
            let touched = bytes[block..<block + 4096].contains { $0 != 0 }
            #expect(touched == written.contains(UInt64(block)), "block at \(block)")
        }
        #expect(try await fixture.readDisk("d.vmdk") == (try fixture.qemuRaw("d.vmdk")))
    }

    /// A disk smaller than one request left no whole request to place: the offset's remainder
    /// by zero trapped and killed the process. Zero sizes and depths trapped the same way.
    @Test(arguments: [(4096, 1, "request size 4096 bytes is more than the disk's 512 bytes"),
                      (0, 1, "request size 0 bytes"), (512, 0, "0 requests in flight")])
    func benchmarkLoadThatCannotRunIsRefused(requestBytes: Int, depth: Int, message: String) async throws {
        let fixture = try DiskFixture("load-small")
        try await VMDKImage.create(at: fixture.path("d.vmdk"), capacityBytes: 512, engine: fixture.engine)
        let disk = try await VirtualDisk.open(path: fixture.path("d.vmdk"), engine: fixture.engine)
        let load = DiskLoad(requestBytes: requestBytes, step: 4096, depth: depth, count: 4, write: false)
        let error = await #expect(throws: DiskError.self) { try await load.run(on: disk) }
        #expect(error?.description.contains(message) == true, "\(String(describing: error))")
    }
}
