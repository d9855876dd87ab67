@testable import Disk
import Foundation
import TestSupport
import Testing

/// The writer's live changes a container's chown, utimensat, link and long symlinks are made
/// of, on a container child disk: refused as Linux refuses them, and after `finish` read back
/// by the reader and debugfs from a disk e2fsck finds sound.
@Suite(.enabled(if: DiskFixture.hasE2fsprogs, "needs e2fsprogs"))
struct Ext4LiveChangeTests {
    /// A layer with the file /kept and the folder /dir, and a live builder on a child of it.
    func liveChild(_ fixture: DiskFixture) async throws -> (builder: Ext4Builder, kept: UInt32, dir: UInt32) {
        let layer = fixture.path("layer.vmdk"), container = fixture.path("container.vmdk")
        try await VMDKImage.create(at: layer, capacityBytes: 64 << 20, engine: fixture.engine)
        let base = try Ext4Builder.create(on: try await VirtualDisk.open(path: layer, writable: true, engine: fixture.engine))
        var kept = Ext4Builder.ByteSource(bytes: Array("kept\n".utf8))
        try await base.addFile("/kept", Ext4Attributes(permissions: 0o6755, modificationTime: Ext4Time(seconds: 1)), size: 5, content: &kept)
        try base.makeDirectory("/dir", Ext4Attributes(permissions: 0o755, modificationTime: Ext4Time(seconds: 1)))
        try await base.finish()
        try await VMDKImage.createChild(at: container, parent: layer, engine: fixture.engine)
        let builder = try await Ext4Builder.open(on: try await VirtualDisk.open(path: container, writable: true, engine: fixture.engine))
        try await builder.enableLiveChanges()
        let keptInode = try #require(builder.liveLookup(Array("kept".utf8), in: Ext4.rootInode))
        let dirInode = try #require(builder.liveLookup(Array("dir".utf8), in: Ext4.rootInode))
        return (builder, keptInode, dirInode)
    }

    @Test func slowSymlinksHardLinksOwnersAndTimesReachTheDisk() async throws {
        let fixture = try DiskFixture("live")
        let (builder, kept, dir) = try await liveChild(fixture)
        let longTarget = Array(("/dir/" + String(repeating: "long/", count: 30) + "end").utf8)
        let fullTarget = [UInt8](repeating: UInt8(ascii: "z"), count: 4095)

        // Symlinks: 59 bytes stay in the inode, 60 and more take a block; a target and its
        // NUL must fit one block.
        let fast = try builder.createSymlink(named: Array("fast".utf8), in: Ext4.rootInode, target: [UInt8](repeating: UInt8(ascii: "f"), count: 59), uid: 0, gid: 0)
        let sixty = try builder.createSymlink(named: Array("sixty".utf8), in: Ext4.rootInode, target: [UInt8](repeating: UInt8(ascii: "s"), count: 60), uid: 0, gid: 0)
        let slow = try builder.createSymlink(named: Array("slow".utf8), in: dir, target: longTarget, uid: 5, gid: 6)
        _ = try builder.createSymlink(named: Array("full".utf8), in: Ext4.rootInode, target: fullTarget, uid: 0, gid: 0)
        #expect(throws: Ext4LiveRefusal.nameTooLong) {
            try builder.createSymlink(named: Array("over".utf8), in: Ext4.rootInode, target: fullTarget + [UInt8(ascii: "z")], uid: 0, gid: 0)
        }
        #expect(throws: Ext4LiveRefusal.exists) { try builder.createSymlink(named: Array("slow".utf8), in: dir, target: longTarget, uid: 0, gid: 0) }
        #expect(builder.liveSymlinkTarget(fast) == nil)
        #expect(builder.liveSymlinkTarget(slow) == longTarget)
        #expect(builder.liveInode(sixty)?.record.usesExtents == true && builder.liveInode(fast)?.record.usesExtents == false)
        // A slow symlink gone before the sync: its block is never written, its inode freed.
        let gone = try builder.createSymlink(named: Array("gone".utf8), in: Ext4.rootInode, target: longTarget, uid: 0, gid: 0)
        try builder.removeEntry(named: Array("gone".utf8), in: Ext4.rootInode, directory: false)
        #expect(builder.liveSymlinkTarget(gone) == nil)

        // Hard links: to the layer's file and to a symlink; never to a directory.
        try builder.addLink(kept, in: dir, name: Array("again".utf8))
        try builder.addLink(slow, in: Ext4.rootInode, name: Array("slow2".utf8))
        #expect(throws: Ext4LiveRefusal.notPermitted) { try builder.addLink(dir, in: Ext4.rootInode, name: Array("dir2".utf8)) }
        #expect(throws: Ext4LiveRefusal.exists) { try builder.addLink(kept, in: Ext4.rootInode, name: Array("dir".utf8)) }
        #expect(throws: Ext4LiveRefusal.notFound) { try builder.addLink(gone, in: Ext4.rootInode, name: Array("back".utf8)) }
        #expect(builder.liveInode(kept)?.record.links == 2)
        // The original name goes; the link keeps the inode and its bytes.
        let removed = try builder.removeEntry(named: Array("kept".utf8), in: Ext4.rootInode, directory: false)
        #expect(removed.lastLink == false && builder.liveInode(kept)?.record.links == 1)

        // chown drops set-user-ID, and set-group-ID with group execution; times are clamped.
        try builder.setOwner(kept, uid: 1000, gid: nil)
        #expect(builder.liveInode(kept).map { ($0.record.uid, $0.record.gid, $0.record.mode & 0o7777) } ?? (0, 0, 0) == (1000, 0, 0o755))
        try builder.setOwner(dir, uid: nil, gid: 77)
        try builder.setTimes(kept, access: Ext4Time(seconds: 1_234_567_890, nanoseconds: 999_999_999), modification: Ext4Time(seconds: 1 << 40, nanoseconds: 7))
        try builder.setTimes(dir, access: nil, modification: Ext4Time(seconds: -(1 << 40)))
        #expect(throws: Ext4LiveRefusal.notFound) { try builder.setTimes(gone, access: nil, modification: nil) }
        try await builder.finish()

        let raw = try fixture.checkedExt4("container.vmdk")
        #expect(try fixture.debugfs(raw, "cat /dir/slow") == String(decoding: longTarget, as: UTF8.self))
        #expect(try fixture.debugfs(raw, "cat /sixty") == String(repeating: "s", count: 60))
        #expect(try fixture.debugfs(raw, "cat /full") == String(decoding: fullTarget, as: UTF8.self))
        #expect(try fixture.debugfs(raw, "stat /fast").contains("Fast link dest: \"" + String(repeating: "f", count: 59) + "\""))
        let slowStat = try fixture.debugfs(raw, "stat /slow2")
        #expect(slowStat.contains("Links: 2") && slowStat.contains("User:     5   Group:     6"), "\(slowStat)")
        let again = try fixture.debugfs(raw, "stat /dir/again")
        #expect(again.contains("Links: 1") && again.contains("User:  1000") && again.contains("Mode:  0755"), "\(again)")
        #expect(again.contains("atime: 0x499602d2:ee6b27fc"), "\(again)")
        #expect(again.contains("mtime: 0x7fffffff:00000003"), "\(again)")
        #expect(try fixture.debugfs(raw, "cat /dir/again") == "kept\n")
        let dirStat = try fixture.debugfs(raw, "stat /dir")
        #expect(dirStat.contains("Group:    77") && dirStat.contains("mtime: 0x80000000:00000000"), "\(dirStat)")
        #expect(try fixture.debugfs(raw, "ls -l /").contains("gone") == false)

        // The reader, on the disk as written, agrees.
        let volume = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: fixture.path("container.vmdk"), writable: false, engine: fixture.engine))
        #expect(try await volume.symlinkTarget(try await volume.inode(slow)) == longTarget)
        #expect(try await volume.symlinkTarget(try await volume.inode(sixty)) == [UInt8](repeating: UInt8(ascii: "s"), count: 60))
    }
    /// A directory's entries keep the order they were made in through removals (holes,
    /// compaction, removal from the end), and every lookup finds the entry it should.
    @Test func directoryEntriesKeepTheirOrderThroughRemovals() {
        let model = Ext4Builder.DirectoryModel(parent: Ext4.rootInode)
        var expected: [UInt32] = []
        for number in UInt32(100)..<UInt32(1100) {
            model.add(Ext4DirectoryEntry(name: Array("n\(number)".utf8), inode: number, fileType: Ext4.FileType.regular))
            expected.append(number)
        }
        func name(_ number: UInt32) -> [UInt8] { Array((number >= 5000 ? "m\(number - 5000)" : "n\(number)").utf8) }
        var generator = SystemRandomNumberGenerator()
        for round in 0..<900 {
            // Now the oldest, now the newest, now one at random.
            let position = round % 3 == 0 ? 0 : round % 3 == 1 ? expected.count - 1 : Int.random(in: 0..<expected.count, using: &generator)
            let number = expected.remove(at: position)
            model.remove(name(number))
            #expect(model.find(name(number)) == nil)
            if round % 100 == 0 {
                model.add(Ext4DirectoryEntry(name: Array("m\(round)".utf8), inode: UInt32(5000 + round), fileType: Ext4.FileType.regular))
                expected.append(UInt32(5000 + round))
            }
        }
        #expect(model.entries.map(\.inode) == expected)
        #expect(expected.allSatisfy { number in model.find(name(number))?.inode == number })
        for number in expected { model.remove(name(number)) }
        #expect(model.isEmpty && model.entries.isEmpty)
    }
}
