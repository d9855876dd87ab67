import Disk
import Foundation
import TestSupport
import Testing

/// Layers as a chain: each layer's changes are applied by the builder onto a child disk of
/// the layer below, which then holds only the grains that layer changed.
@Suite(.enabled(if: DiskFixture.hasE2fsprogs, "needs e2fsprogs (e2fsck, debugfs): scripts/setup.sh installs it"))
struct Ext4LayerChainTests {
    static func attributes(_ permissions: UInt16 = 0o644) -> Ext4Attributes {
        Ext4Attributes(permissions: permissions, modificationTime: Ext4Time(seconds: 1_700_000_000))
    }

    /// Content for the builder from an array.
    struct Bytes: Ext4ContentSource {
        var bytes: [UInt8]
        var position = 0
        mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let count = min(buffer.count, bytes.count - position)
            buffer.copyBytes(from: bytes[position..<position + count])
            position += count
            return count
        }
    }

    static func addFile(_ builder: Ext4Builder, _ path: String, _ bytes: [UInt8]) async throws {
        var source = Bytes(bytes: bytes)
        try await builder.addFile(path, attributes(), size: UInt64(bytes.count), content: &source)
    }

    /// Opens a new child of `parent` and applies `change` to its file system.
    static func layer(_ fixture: DiskFixture, _ name: String, on parent: String, _ change: (Ext4Builder) async throws -> Void) async throws {
        try await VMDKImage.createChild(at: fixture.path(name), parent: fixture.path(parent), engine: fixture.engine)
        let disk = try await VirtualDisk.open(path: fixture.path(name), writable: true, engine: fixture.engine)
        let builder = try await Ext4Builder.open(on: disk)
        builder.beginLayer()
        try await change(builder)
        try await builder.finish()
    }

    static func fileSize(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? -1
    }

    @Test func layersAppliedOnChildDisksHoldOnlyTheirChanges() async throws {
        let fixture = try DiskFixture("ext4-chain")
        let source = fixture.path("source")
        try fixture.python(DiskFixture.makeTree, [source])
        // 6 MiB made by python, so that this process does not hold it (HostileFilesTests measure its memory).
        try fixture.python("import os, sys; open(sys.argv[1], 'wb').write(os.urandom(6 << 20))", [source + "/usr/bulk"])
        try await fixture.writeExt4("base.vmdk", from: source)

        // Layer 2: a replaced file, a whiteout, an opaque folder, new files, a hard link to a lower file.
        try await Self.layer(fixture, "layer2.vmdk", on: "base.vmdk") { builder in
            try await Self.addFile(builder, "/etc/hostname", Array("layer-two\n".utf8))
            try builder.remove("/usr/short")
            try builder.makeOpaque("/etc/deep")
            try await Self.addFile(builder, "/etc/deep/fresh", Array("under an opaque folder\n".utf8))
            try builder.makeDirectory("/opt/app", Self.attributes(0o750))
            try await Self.addFile(builder, "/opt/app/run.sh", Array("#!/bin/sh\necho hi\n".utf8))
            try builder.addHardLink("/opt/app/tool", target: "/usr/bin/tool")
            for index in 0..<12 { try await Self.addFile(builder, "/frag/\(index)", [UInt8](repeating: UInt8(index), count: 4096)) }
        }
        // Layer 3: removing every other small file leaves holes, so a new file lands in many extents.
        let fragmented = DiskFixture.pattern(count: 40 * 4096, seed: 11).map { $0 | 2 }
        try await Self.layer(fixture, "layer3.vmdk", on: "layer2.vmdk") { builder in
            for index in stride(from: 0, to: 12, by: 2) { try builder.remove("/frag/\(index)") }
            try await Self.addFile(builder, "/frag/big", fragmented)
            try builder.remove("/usr/bulk")
        }

        let base = try fixture.checkedExt4("base.vmdk")
        let two = try fixture.checkedExt4("layer2.vmdk")
        let three = try fixture.checkedExt4("layer3.vmdk")
        #expect(try fixture.debugfs(base, "cat /etc/hostname") == "layer-one\n")
        #expect(try fixture.debugfs(two, "cat /etc/hostname") == "layer-two\n")
        #expect(try fixture.debugfs(two, "cat /etc/deep/fresh") == "under an opaque folder\n")
        let deep = try fixture.debugfs(two, "ls -p /etc/deep")
        #expect(!deep.contains("/er/") && deep.contains("/fresh/"), "\(deep)")
        let usr = try fixture.debugfs(two, "ls -p /usr")
        #expect(!usr.contains("/short/") && usr.contains("/long/"), "\(usr)")
        let app = try fixture.debugfs(two, "ls -p /opt/app")
        let bin = try fixture.debugfs(two, "ls -p /usr/bin")
        #expect(Ext4WriterTests.inode(in: app, named: "tool") == Ext4WriterTests.inode(in: bin, named: "tool"), "\(app)\n\(bin)")
        let big = try fixture.debugfs(three, "stat /frag/big")
        #expect(big.contains("(ETB0)") || big.contains("ETB0"), "more than 4 extents need a leaf block: \(big)")
        let dumped = try fixture.dumpExt4(three, into: "dump3")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dumped + "/frag/big")) == Data(fragmented))
        #expect(!FileManager.default.fileExists(atPath: dumped + "/usr/bulk"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dumped + "/usr/bin/tool")) == Data(contentsOf: URL(fileURLWithPath: source + "/usr/bin/tool")))

        // The children hold their changes only: a few grains of metadata and the new files,
        // not the 6 MiB file of the base, which they read through.
        let baseBytes = try Self.fileSize(fixture.path("base.vmdk"))
        let twoBytes = try Self.fileSize(fixture.path("layer2.vmdk"))
        let threeBytes = try Self.fileSize(fixture.path("layer3.vmdk"))
        #expect(baseBytes > 6 << 20)
        #expect(twoBytes < 2 << 20, "layer 2 is \(twoBytes) bytes")
        #expect(threeBytes < 2 << 20, "layer 3 is \(threeBytes) bytes")
    }

    @Test func theReaderReadsWhatTheLayersWrote() async throws {
        let fixture = try DiskFixture("ext4-read")
        let source = fixture.path("source")
        try fixture.python(DiskFixture.makeTree, [source])
        try await fixture.writeExt4("base.vmdk", from: source)
        let fragmented = DiskFixture.pattern(count: 40 * 4096 + 123, seed: 12)
        try await Self.layer(fixture, "top.vmdk", on: "base.vmdk") { builder in
            for index in 0..<10 { try await Self.addFile(builder, "/frag/\(index)", [UInt8](repeating: 1, count: 4096)) }
        }
        try await Self.layer(fixture, "top2.vmdk", on: "top.vmdk") { builder in
            for index in stride(from: 0, to: 10, by: 2) { try builder.remove("/frag/\(index)") }
            try await Self.addFile(builder, "/frag/big", fragmented)
        }
        let disk = try await VirtualDisk.open(path: fixture.path("top2.vmdk"), engine: fixture.engine)
        let volume = try await Ext4Volume.open(disk: disk)
        let root = try await volume.root()
        let names = try await volume.entries(of: root).map { String(decoding: $0.name, as: UTF8.self) }.sorted()
        #expect(names == [".", "..", "etc", "frag", "private", "usr"])
        let frag = try #require(try await volume.lookup(Array("frag".utf8), in: root))
        let big = try #require(try await volume.lookup(Array("big".utf8), in: frag))
        #expect(try await volume.read(big, at: 0, count: fragmented.count + 100) == fragmented)
        // An unaligned read across extents.
        #expect(try await volume.read(big, at: 4000, count: 10_000) == Array(fragmented[4000..<14000]))
        let usr = try #require(try await volume.lookup(Array("usr".utf8), in: root))
        let long = try #require(try await volume.lookup(Array("long".utf8), in: usr))
        #expect(String(decoding: try await volume.symlinkTarget(long), as: UTF8.self) == "/" + String(repeating: "long-target/", count: 10) + "end")
        let short = try #require(try await volume.lookup(Array("short".utf8), in: usr))
        #expect(String(decoding: try await volume.symlinkTarget(short), as: UTF8.self) == "../etc/hostname")
        let etc = try #require(try await volume.lookup(Array("etc".utf8), in: root))
        let hostname = try #require(try await volume.lookup(Array("hostname".utf8), in: etc))
        #expect(hostname.xattrs.map(\.fullName) == ["user.comment"])
        #expect(hostname.modificationTime == Ext4Time(seconds: 1_600_000_000, nanoseconds: 123_456_789))
        #expect(hostname.links == 2)
    }
}
