import Disk
import Foundation
import Testing

/// Interop with a peer we did not write: qemu-img and qemu-io from Debian's qemu-utils.
@Suite struct QemuInteropTests {
    static let subformats = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "streamOptimized"]

    @Test(arguments: subformats)
    func disksQemuMakesReadAsQemuReadsThem(subformat: String) async throws {
        let fixture = try DiskFixture("qemu-made")
        let raw = try fixture.writeFile("source.raw", DiskFixture.pattern(count: 3 << 20, seed: 7))
        try fixture.qemuImg(["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=\(subformat)", raw, fixture.path("q.vmdk")])
        let ours = try await fixture.readDisk("q.vmdk")
        #expect(ours == (try fixture.qemuRaw("q.vmdk")))
        #expect(ours == (try fixture.readFile("source.raw")))
    }

    @Test func childThatQemuIOWroteReadsAsQemuReadsIt() async throws {
        let fixture = try DiskFixture("qemu-child")
        let raw = try fixture.writeFile("base.raw", DiskFixture.pattern(count: 4 << 20, seed: 3))
        try fixture.qemuImg(["convert", "-f", "raw", "-O", "vmdk", raw, fixture.path("base.vmdk")])
        try fixture.qemuImg(["create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", fixture.path("child.vmdk")])
        try fixture.qemuIO(["-c", "write -P 0xab 100k 200k", "-c", "write -P 0x5c 3M 4k", "-c", "write -z 1M 64k", fixture.path("child.vmdk")])
        try fixture.qemuImg(["create", "-f", "vmdk", "-b", "child.vmdk", "-F", "vmdk", fixture.path("grandchild.vmdk")])
        try fixture.qemuIO(["-c", "write -P 0x11 130k 1k", fixture.path("grandchild.vmdk")])
        #expect(try await fixture.readDisk("child.vmdk") == (try fixture.qemuRaw("child.vmdk")))
        #expect(try await fixture.readDisk("grandchild.vmdk") == (try fixture.qemuRaw("grandchild.vmdk")))
    }

    @Test(arguments: WritableSubformat.allCases)
    func disksWeWritePassQemuCheckAndCompare(subformat: WritableSubformat) async throws {
        let fixture = try DiskFixture("ours")
        let size = 6 << 20
        try await VMDKImage.create(at: fixture.path("d.vmdk"), capacityBytes: UInt64(size), subformat: subformat, engine: fixture.engine)
        let disk = try await VirtualDisk.open(path: fixture.path("d.vmdk"), writable: true, engine: fixture.engine)
        var expected = [UInt8](repeating: 0, count: size)
        for (offset, length, seed) in [(0, 4096, 1), (70 * 1024, 200 * 1024, 2), (5 << 20, 512, 3), (1 << 20, 1 << 20, 4), (1 << 20, 8192, 5)] {
            let bytes = DiskFixture.pattern(count: length, seed: UInt64(seed)).map { $0 | 1 }
            try await disk.write(bytes, at: UInt64(offset))
            expected.replaceSubrange(offset..<offset + length, with: bytes)
        }
        try await disk.flush()
        let expectedRaw = try fixture.writeFile("expected.raw", expected)
        try fixture.qemuImg(["check", fixture.path("d.vmdk")])
        let compare = try fixture.qemuImg(["compare", "-f", "raw", "-F", "vmdk", expectedRaw, fixture.path("d.vmdk")])
        #expect(compare.contains("Images are identical"))
        #expect(try await fixture.readDisk("d.vmdk") == expected)
    }

    @Test func childWeWritePassesQemuCheckAndCompare() async throws {
        let fixture = try DiskFixture("our-child")
        let base = DiskFixture.pattern(count: 2 << 20, seed: 9)
        try fixture.qemuImg(["convert", "-f", "raw", "-O", "vmdk", try fixture.writeFile("base.raw", base), fixture.path("base.vmdk")])
        try await VMDKImage.createChild(at: fixture.path("child.vmdk"), parent: fixture.path("base.vmdk"), engine: fixture.engine)
        let child = try await VirtualDisk.open(path: fixture.path("child.vmdk"), writable: true, engine: fixture.engine)
        var expected = base
        // Partial grains, so that the rest of each grain must come from the parent.
        for (offset, length) in [(512, 1024), (65536 + 4096, 4096), (300_000 & ~511, 70_000 & ~511)] {
            let bytes = [UInt8](repeating: 0xEE, count: length)
            try await child.write(bytes, at: UInt64(offset))
            expected.replaceSubrange(offset..<offset + length, with: bytes)
        }
        try await child.flush()
        try fixture.qemuImg(["check", fixture.path("child.vmdk")])
        let compare = try fixture.qemuImg(["compare", "-f", "raw", "-F", "vmdk", try fixture.writeFile("expected.raw", expected), fixture.path("child.vmdk")])
        #expect(compare.contains("Images are identical"))
        #expect(try fixture.qemuRaw("child.vmdk") == expected)
    }

    @Test func splitDiskWritesAcrossExtentsAsQemuReadsThem() async throws {
        let fixture = try DiskFixture("split")
        let path = fixture.path("split.vmdk")
        // 4 GiB: extents of 2047 MiB, 2047 MiB and 2 MiB, all sparse.
        try await VMDKImage.create(at: path, capacityBytes: 4 << 30, subformat: .twoGbMaxExtentSparse, engine: fixture.engine)
        let disk = try await VirtualDisk.open(path: path, writable: true, engine: fixture.engine)
        #expect(try await disk.describe()[0].extents.count == 3)
        let boundary: UInt64 = 2047 << 20
        try await disk.write([UInt8](repeating: 0xAB, count: 128 * 1024), at: boundary - 65536)
        try await disk.write([UInt8](repeating: 0xCD, count: 4096), at: (4 << 30) - 4096)
        try await disk.flush()
        try fixture.qemuImg(["check", path])
        let output = try fixture.qemuIO(["-c", "read -P 0xab \(boundary - 65536) 131072", "-c", "read -P 0xcd \((4 << 30) - 4096) 4096",
                                         "-c", "read -P 0 \(boundary + 65536) 65536", path])
        #expect(!output.contains("Pattern verification failed"))
        #expect(try await disk.read(count: 4096, at: boundary) == [UInt8](repeating: 0xAB, count: 4096))
    }
}
