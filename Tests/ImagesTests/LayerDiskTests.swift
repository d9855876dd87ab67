import Disk
import Foundation
import IOEngine
@testable import Images
import TestSupport
import Testing

/// Layer tarballs written as a chain of ext4 VMDKs: each disk passes `e2fsck -fn` and
/// `qemu-img check`, and the top disk holds exactly what unpacking the same layers into a
/// folder gives (whiteouts, opaque folders, hard links, symlinks).
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/e2fsck") && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img"),
                "needs e2fsprogs and qemu-utils (scripts/setup.sh)"))
struct LayerDiskTests {
    static func layers() -> [[UInt8]] {
        var base = TarWriter()
        base.add("bin/", .directory, mode: 0o755)
        base.add("bin/tool", content: Array(repeating: 0x41, count: 70_000), mode: 0o755)
        base.add("bin/ls", content: Array("ls\n".utf8), mode: 0o755)
        base.add("bin/sh", .symlink, link: "tool")
        base.add("etc/", .directory)
        base.add("etc/motd", content: Array("base\n".utf8))
        base.add("etc/conf.d/", .directory)
        base.add("etc/conf.d/a", content: Array("a\n".utf8))
        base.add("etc/conf.d/b", content: Array("b\n".utf8))
        base.add("var/lib/deep/file", content: Array("deep\n".utf8), uid: 1000, gid: 1000)
        // 6 MiB: more new grains than one deferred batch, so some are written before the finish.
        var random = SplitMix64(seed: 15)
        base.add("usr/lib/big.bin", content: (0..<(6 << 20) / 8).flatMap { _ in withUnsafeBytes(of: random.next()) { Array($0) } })
        var upper = TarWriter()
        upper.add("bin/.wh.ls")
        upper.add("etc/motd", content: Array("pulled in layers\n".utf8))
        upper.add("etc/conf.d/", .directory)
        upper.add("etc/conf.d/.wh..wh..opq")
        upper.add("etc/conf.d/c", content: Array("c\n".utf8))
        upper.add("bin/tool-link", .hardLink, link: "bin/tool")
        upper.add("opt/" + String(repeating: "long-name-", count: 6) + "link", .symlink, link: "/" + String(repeating: "target/", count: 12))
        var top = TarWriter()
        top.add("var/lib/.wh.deep")
        top.add("var/lib/deep", content: Array("now a file\n".utf8))
        top.add("bin/fifo", .fifo, mode: 0o600)
        return [base.finished(), upper.finished(), top.finished()]
    }

    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let result = try HostFacts.run(tool, arguments)
        #expect(result.status == 0, "\(tool) \(arguments.joined(separator: " ")): \(result.stdout) \(result.stderr)")
        return result.stdout
    }

    @Test func layersBecomeAChainOfCheckedExt4DisksHoldingTheUnpackedTree() async throws {
        let fixture = try UnpackFixture()
        defer { try? FileManager.default.removeItem(at: fixture.sandbox) }
        let layers = Self.layers()
        let diffIDs = try fixture.unpack(layers)
        let blobs = (0..<layers.count).map { fixture.sandbox.appendingPathComponent("layer\($0).tar") }
        let engine = try IOEngine()
        let disks = LayerDisks(folder: fixture.sandbox.appendingPathComponent("layers"), capacityBytes: 128 << 20)
        let names = try await disks.make(blobs: blobs, diffIDs: diffIDs, limits: UnpackLimits(), engine: engine)
        #expect(names.count == 3 && Set(names).count == 3)
        for (index, name) in names.enumerated() {
            let path = disks.folder.appendingPathComponent(name).path
            try Self.run("/usr/bin/qemu-img", ["check", path])
            let raw = fixture.sandbox.appendingPathComponent("layer\(index).raw").path
            try Self.run("/usr/bin/qemu-img", ["convert", "-O", "raw", path, raw])
            try Self.run("/usr/sbin/e2fsck", ["-fn", raw])
        }
        let dump = fixture.sandbox.appendingPathComponent("dump").path
        try FileManager.default.createDirectory(atPath: dump, withIntermediateDirectories: true)
        let topRaw = fixture.sandbox.appendingPathComponent("layer2.raw").path
        try Self.run("/usr/sbin/debugfs", ["-R", "rdump / \(dump)", topRaw])
        // rdump skips FIFOs; the unpacked folder has one.
        let listing = try Self.run("/usr/sbin/debugfs", ["-R", "stat /bin/fifo", topRaw])
        #expect(listing.contains("Type: FIFO"))
        unlink(fixture.root.path + "/bin/fifo")
        let difference = try HostFacts.run("/usr/bin/diff", ["-r", "--no-dereference", fixture.root.path, dump])
        #expect(difference.status == 0, "\(difference.stdout)\(difference.stderr)")
        // The base layer's large files live in the first disk only; the upper disks hold a few grains each.
        let sizes = try names.map { try FileManager.default.attributesOfItem(atPath: disks.folder.appendingPathComponent($0).path)[.size] as? Int ?? 0 }
        #expect(sizes[1] < 1 << 20 && sizes[2] < 1 << 20, "\(sizes)")
        // A second image on the same layers reuses the complete disks.
        let modified = try FileManager.default.attributesOfItem(atPath: disks.folder.appendingPathComponent(names[2]).path)[.modificationDate] as? Date
        #expect(try await disks.make(blobs: blobs, diffIDs: diffIDs, limits: UnpackLimits(), engine: engine) == names)
        #expect(try FileManager.default.attributesOfItem(atPath: disks.folder.appendingPathComponent(names[2]).path)[.modificationDate] as? Date == modified)
        // Collection keeps what is named and removes the rest.
        let collected = disks.collect(keeping: Set(names.prefix(2)))
        #expect(collected.removed == 1 && !FileManager.default.fileExists(atPath: disks.folder.appendingPathComponent(names[2]).path))
    }

    /// Two pulls sharing layers at once: one writes each disk, the other waits and reuses it.
    @Test func concurrentMakesOfOneChainWriteEachDiskOnce() async throws {
        let fixture = try UnpackFixture()
        defer { try? FileManager.default.removeItem(at: fixture.sandbox) }
        let layers = Self.layers()
        let diffIDs = try fixture.unpack(layers)
        let blobs = (0..<layers.count).map { fixture.sandbox.appendingPathComponent("layer\($0).tar") }
        let engine = try IOEngine()
        let disks = LayerDisks(folder: fixture.sandbox.appendingPathComponent("layers"), capacityBytes: 64 << 20)
        async let first = disks.make(blobs: blobs, diffIDs: diffIDs, limits: UnpackLimits(), engine: engine)
        async let second = disks.make(blobs: blobs, diffIDs: diffIDs, limits: UnpackLimits(), engine: engine)
        let (a, b) = try await (first, second)
        #expect(a == b && a.count == 3)
        let names = try FileManager.default.contentsOfDirectory(atPath: disks.folder.path).sorted()
        #expect(names.filter { $0.hasSuffix(".lock") }.isEmpty && names.count == 6, "\(names)")
        let top = disks.folder.appendingPathComponent(a[2]).path
        try Self.run("/usr/bin/qemu-img", ["check", top])
        let raw = fixture.sandbox.appendingPathComponent("top.raw").path
        try Self.run("/usr/bin/qemu-img", ["convert", "-O", "raw", top, raw])
        try Self.run("/usr/sbin/e2fsck", ["-fn", raw])
    }
}
