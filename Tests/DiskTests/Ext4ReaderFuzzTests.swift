import Disk
import Foundation
import TestSupport
import Testing

/// The ext4 reader on corrupt and hostile images: random bytes written over the metadata of
/// a good image (through a child disk, so the image itself stays good) must give either the
/// files or an `Ext4Error` naming what was wrong — never a crash, a hang or a read outside
/// the file system. Bounded: a fixed number of seeded rounds.
@Suite struct Ext4ReaderFuzzTests {
    /// Reads everything reachable from the root, as the rootfs server would, with limits.
    static func walk(_ volume: Ext4Volume) async throws(Ext4Error) -> Int {
        var pending = [try await volume.root()]
        var seen: Set<UInt32> = []
        var visited = 0
        while let directory = pending.popLast(), visited < 2000 {
            guard seen.insert(directory.number).inserted else { continue }
            for entry in try await volume.entries(of: directory) where entry.name != [46] && entry.name != [46, 46] {
                visited += 1
                let inode = try await volume.inode(entry.inode)
                if inode.isDirectory { pending.append(inode) }
                if inode.isSymlink { _ = try await volume.symlinkTarget(inode) }
                if inode.isRegular { _ = try await volume.read(inode, at: 0, count: 64 << 10) }
            }
        }
        return visited
    }

    @Test func corruptMetadataGivesErrorsNeverCrashes() async throws {
        let fixture = try DiskFixture("ext4-fuzz")
        let source = fixture.path("source")
        try fixture.python(DiskFixture.makeTree, [source])
        try await fixture.writeExt4("good.vmdk", from: source, capacity: 64 << 20)
        let good = try await VirtualDisk.open(path: fixture.path("good.vmdk"), engine: fixture.engine)
        #expect(try await Self.walk(try await Ext4Volume.open(disk: good)) > 10)

        var generator = SplitMix64(seed: 0x5EED)
        var outcomes: [String: Int] = [:]
        let rounds = Int(ProcessInfo.processInfo.environment["VMFORK_EXT4_FUZZ_ROUNDS"] ?? "") ?? 60
        for round in 0..<rounds {
            let name = "bad\(round).vmdk"
            try await VMDKImage.createChild(at: fixture.path(name), parent: fixture.path("good.vmdk"), engine: fixture.engine)
            let disk = try await VirtualDisk.open(path: fixture.path(name), writable: true, engine: fixture.engine)
            // Up to 8 sectors of garbage within the first 160 blocks: superblock, descriptors,
            // bitmaps, inode table and the first directories and files.
            for _ in 0..<Int.random(in: 1...8, using: &generator) {
                let sector = UInt64.random(in: 0..<(160 * 8), using: &generator)
                var bytes = try await disk.read(count: 512, at: sector * 512)
                for _ in 0..<Int.random(in: 1...16, using: &generator) {
                    bytes[Int.random(in: 0..<512, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
                try await disk.write(bytes, at: sector * 512)
            }
            do {
                _ = try await Self.walk(try await Ext4Volume.open(disk: disk))
                outcomes["read", default: 0] += 1
            } catch {
                #expect(!error.description.isEmpty)
                outcomes["refused", default: 0] += 1
            }
            try? FileManager.default.removeItem(atPath: fixture.path(name))
        }
        #expect(outcomes.values.reduce(0, +) == rounds && outcomes["refused", default: 0] > 0, "\(outcomes)")
    }
}

