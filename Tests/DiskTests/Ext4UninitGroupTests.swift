@testable import Disk
import Foundation
import TestSupport
import Testing

/// uninit_bg: the block groups nothing uses are marked uninitialised in their checksummed
/// descriptors, and their bitmaps and inode tables never written (the sparse disk reads them
/// as zeros); a container's writes into them initialise them. Judged by e2fsck, debugfs,
/// qemu-img and the engine's own reader.
@Suite(.enabled(if: DiskFixture.hasE2fsprogs, "needs e2fsprogs (e2fsck, debugfs): scripts/setup.sh installs it"))
struct Ext4UninitGroupTests {
    static let groupBytes: UInt64 = 128 << 20

    /// Each group's flags line in debugfs's `stats` ("[Inode not init, Block not init, ...]"), by group.
    static func groupFlags(_ stats: String) -> [Int: String] {
        var result: [Int: String] = [:]
        var current: Int?
        for line in stats.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("Group "), let number = Int(trimmed.dropFirst(6).prefix(while: { $0 != ":" }).trimmingCharacters(in: .whitespaces)) {
                current = number
            } else if let group = current, trimmed.hasPrefix("[") {
                result[group] = trimmed
            }
        }
        return result
    }

    /// The byte ranges of the VMDK that hold data (allocated grains), from `qemu-img map`.
    static func mappedRanges(_ fixture: DiskFixture, _ name: String) throws -> [Range<UInt64>] {
        let json = try fixture.qemuImg(["map", "--output=json", fixture.path(name)])
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        return entries.compactMap { entry in
            guard entry["data"] as? Bool == true, let start = (entry["start"] as? NSNumber)?.uint64Value,
                  let length = (entry["length"] as? NSNumber)?.uint64Value else { return nil }
            return start..<start + length
        }
    }

    /// Content of `size` bytes, each 4 KiB block filled with its index's low byte.
    struct Pattern: Ext4ContentSource {
        let size: UInt64
        var position: UInt64 = 0
        mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            var written = 0
            while written < buffer.count, position < size {
                let inBlock = Int(position % 4096)
                let count = min(buffer.count - written, 4096 - inBlock, Int(size - position))
                let value = UInt8(truncatingIfNeeded: position / 4096)
                // unsafe: [written, written + count) lies inside `buffer`.
                UnsafeMutableRawBufferPointer(rebasing: buffer[written..<written + count]).initializeMemory(as: UInt8.self, repeating: value)
                written += count
                position += UInt64(count)
            }
            return written
        }
    }

    @Test func groupsNothingUsesStayUninitialisedAndUnwritten() async throws {
        let fixture = try DiskFixture("ext4-uninit")
        let source = fixture.path("source")
        try fixture.python(DiskFixture.makeTree, [source])
        // 1 GiB: 8 groups, superblock copies in 1, 3, 5 and 7.
        try await fixture.writeExt4("layer.vmdk", from: source, capacity: 8 * Self.groupBytes)
        let raw = try fixture.checkedExt4("layer.vmdk")
        let stats = try fixture.debugfs(raw, "stats")
        #expect(stats.contains("uninit_bg"), "\(stats)")
        let flags = Self.groupFlags(stats)
        #expect(flags.count == 8, "\(stats)")
        #expect(flags[0].map { !$0.contains("not init") } == true, "group 0 holds the files: \(flags[0] ?? "")")
        for group in 1...6 {
            #expect(flags[group].map { $0.contains("Inode not init") && $0.contains("Block not init") } == true, "group \(group): \(flags[group] ?? "none")")
        }
        // e2fsck wants the last group's block bitmap written.
        #expect(flags[7].map { $0.contains("Inode not init") && !$0.contains("Block not init") } == true, "group 7: \(flags[7] ?? "none")")

        // Groups without a superblock copy, and all but the first grain of those with one, hold nothing on the disk.
        let mapped = try Self.mappedRanges(fixture, "layer.vmdk")
        for group: UInt64 in [2, 4, 6] {
            let range = group * Self.groupBytes..<(group + 1) * Self.groupBytes
            #expect(!mapped.contains { $0.overlaps(range) }, "group \(group) has grains: \(mapped)")
        }
        for group: UInt64 in [1, 3, 5] {
            let range = group * Self.groupBytes + (64 << 10)..<(group + 1) * Self.groupBytes
            #expect(!mapped.contains { $0.overlaps(range) }, "group \(group) has grains past its superblock copy: \(mapped)")
        }

        // The engine's reader sees the same flags and reads the files.
        let volume = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: fixture.path("layer.vmdk"), engine: fixture.engine))
        let uninit = Ext4.GroupFlag.inodeUninit | Ext4.GroupFlag.blockUninit
        #expect(volume.groupFlags[0] & uninit == 0)
        #expect((1...6).allSatisfy { volume.groupFlags[$0] & uninit == uninit }, "\(volume.groupFlags)")
        #expect(volume.groupFlags[7] & uninit == Ext4.GroupFlag.inodeUninit, "\(volume.groupFlags)")
        #expect(volume.groupFlags.allSatisfy { $0 & Ext4.GroupFlag.inodeTableZeroed != 0 }, "\(volume.groupFlags)")
    }

    @Test func aContainerWritingIntoUninitialisedGroupsInitialisesThem() async throws {
        let fixture = try DiskFixture("ext4-uninit-live")
        // 512 MiB (groups 0-3) with 32 inodes a group, so that files soon take inodes of later groups.
        try await VMDKImage.create(at: fixture.path("layer.vmdk"), capacityBytes: 4 * Self.groupBytes, engine: fixture.engine)
        let layer = try Ext4Builder.create(on: try await VirtualDisk.open(path: fixture.path("layer.vmdk"), writable: true, engine: fixture.engine),
                                           bytesPerInode: 4 << 20)
        var base = Ext4Builder.ByteSource(bytes: Array("from the layer\n".utf8))
        try await layer.addFile("/base", Ext4Attributes(permissions: 0o644, modificationTime: Ext4Time(seconds: 1)), size: 15, content: &base)
        try await layer.finish()
        let layerVolume = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: fixture.path("layer.vmdk"), engine: fixture.engine))
        #expect(layerVolume.geometry.inodesPerGroup == 32 && layerVolume.groupFlags[1] & Ext4.GroupFlag.blockUninit != 0, "\(layerVolume.groupFlags)")

        // The container: 100 files (inodes in groups 0-3) and a 120 MiB file (past group 0's blocks into group 1's).
        try await VMDKImage.createChild(at: fixture.path("container.vmdk"), parent: fixture.path("layer.vmdk"), engine: fixture.engine)
        let container = try await VirtualDisk.open(path: fixture.path("container.vmdk"), writable: true, engine: fixture.engine)
        let live = try await Ext4Builder.open(on: container)
        try await live.enableLiveChanges()
        let folder = try live.createDirectory(named: Array("many".utf8), in: Ext4.rootInode, permissions: 0o755, uid: 0, gid: 0)
        for index in 0..<100 {
            let inode = try live.createFile(named: Array("file-\(index)".utf8), in: folder, permissions: 0o644, uid: 0, gid: 0)
            var content = Ext4Builder.ByteSource(bytes: Array("file \(index)\n".utf8))
            try await live.replaceContents(of: inode, size: UInt64(content.bytes.count), modified: Ext4Time(seconds: 2), from: &content)
        }
        let big = try live.createFile(named: Array("big".utf8), in: Ext4.rootInode, permissions: 0o644, uid: 0, gid: 0)
        let bigSize: UInt64 = 120 << 20
        var pattern = Pattern(size: bigSize)
        try await live.replaceContents(of: big, size: bigSize, modified: Ext4Time(seconds: 2), from: &pattern)
        try await live.finish()

        let volume = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: fixture.path("container.vmdk"), engine: fixture.engine))
        let uninit = Ext4.GroupFlag.inodeUninit | Ext4.GroupFlag.blockUninit
        #expect((0...3).allSatisfy { volume.groupFlags[$0] & uninit == 0 }, "every group holds inodes now: \(volume.groupFlags)")
        let bigRecord = try #require(live.liveInode(big)?.record)
        #expect(bigRecord.extents.contains { $0.physical + UInt64($0.length) > 32768 }, "the big file reaches group 1: \(bigRecord.extents)")
        var raw = try fixture.checkedExt4("container.vmdk")
        #expect(try fixture.debugfs(raw, "cat /many/file-99") == "file 99\n")
        #expect(try fixture.debugfs(raw, "cat /base") == "from the layer\n")
        let dumped = fixture.path("big.dump")
        _ = try HostFacts.run(DiskFixture.debugfs, ["-R", "dump /big \(dumped)", raw])
        let check = try fixture.python("""
            import sys
            data = open(sys.argv[1], 'rb').read()
            bad = [i for i in range(0, len(data), 4096) if data[i:i + 4096] != bytes([(i // 4096) & 255]) * 4096]
            print(len(data), len(bad))
            """, [dumped])
        #expect(check.trimmingCharacters(in: .whitespacesAndNewlines) == "\(bigSize) 0", "size and blocks differing: \(check)")

        // Everything removed: the groups are uninitialised again, their stale bitmaps left as
        // they are on the disk; opened again, the writer initialises them afresh.
        for index in 0..<100 { try live.removeEntry(named: Array("file-\(index)".utf8), in: folder, directory: false) }
        try live.removeEntry(named: Array("big".utf8), in: Ext4.rootInode, directory: false)
        try await live.finish()
        // Frees are deferred one sync.
        try await live.finish()
        let emptied = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: fixture.path("container.vmdk"), engine: fixture.engine))
        // (Group 1 may keep a directory's block: the allocator moves on from where it was.)
        #expect(emptied.groupFlags[1] & Ext4.GroupFlag.inodeUninit != 0 && emptied.groupFlags[2] & uninit == uninit, "\(emptied.groupFlags)")
        raw = try fixture.checkedExt4("container.vmdk")

        let again = try await Ext4Builder.open(on: try await VirtualDisk.open(path: fixture.path("container.vmdk"), writable: true, engine: fixture.engine))
        try await again.enableLiveChanges()
        for index in 0..<40 {
            let inode = try again.createFile(named: Array("again-\(index)".utf8), in: folder, permissions: 0o600, uid: 7, gid: 7)
            var content = Ext4Builder.ByteSource(bytes: Array("again \(index)\n".utf8))
            try await again.replaceContents(of: inode, size: UInt64(content.bytes.count), modified: Ext4Time(seconds: 3), from: &content)
        }
        try await again.finish()
        raw = try fixture.checkedExt4("container.vmdk")
        #expect(try fixture.debugfs(raw, "cat /many/again-39") == "again 39\n")
        let listing = try fixture.debugfs(raw, "ls /many")
        #expect(!listing.contains("file-"), "\(listing)")
    }

    @Test func aLayerDiskWrittenBeforeTheFeatureTakesLayersInItsOwnForm() async throws {
        let fixture = try DiskFixture("ext4-uninit-old")
        try await VMDKImage.create(at: fixture.path("old.vmdk"), capacityBytes: 4 * Self.groupBytes, engine: fixture.engine)
        let old = try Ext4Builder.create(on: try await VirtualDisk.open(path: fixture.path("old.vmdk"), writable: true, engine: fixture.engine))
        old.groupChecksums = false  // as the writer laid disks out before uninit_bg
        var bytes = Ext4Builder.ByteSource(bytes: Array("old\n".utf8))
        try await old.addFile("/old", Ext4Attributes(permissions: 0o644, modificationTime: Ext4Time(seconds: 1)), size: 4, content: &bytes)
        try await old.finish()
        var raw = try fixture.checkedExt4("old.vmdk")
        #expect(try !fixture.debugfs(raw, "stats").contains("uninit_bg"))
        // Every group's bitmaps are on the disk, as before.
        let mapped = try Self.mappedRanges(fixture, "old.vmdk")
        #expect(mapped.contains { $0.contains(2 * Self.groupBytes) }, "\(mapped)")

        try await VMDKImage.createChild(at: fixture.path("new.vmdk"), parent: fixture.path("old.vmdk"), engine: fixture.engine)
        let layer = try await Ext4Builder.open(on: try await VirtualDisk.open(path: fixture.path("new.vmdk"), writable: true, engine: fixture.engine))
        #expect(!layer.groupChecksums)
        layer.beginLayer()
        bytes = Ext4Builder.ByteSource(bytes: Array("new\n".utf8))
        try await layer.addFile("/new", Ext4Attributes(permissions: 0o644, modificationTime: Ext4Time(seconds: 1)), size: 4, content: &bytes)
        try await layer.finish()
        raw = try fixture.checkedExt4("new.vmdk")
        #expect(try !fixture.debugfs(raw, "stats").contains("uninit_bg"))
        #expect(try fixture.debugfs(raw, "cat /old") == "old\n" && fixture.debugfs(raw, "cat /new") == "new\n")
    }

    @Test func aDescriptorWhoseChecksumIsWrongIsRefused() async throws {
        let fixture = try DiskFixture("ext4-uninit-csum")
        try await VMDKImage.create(at: fixture.path("layer.vmdk"), capacityBytes: 4 * Self.groupBytes, engine: fixture.engine)
        let builder = try Ext4Builder.create(on: try await VirtualDisk.open(path: fixture.path("layer.vmdk"), writable: true, engine: fixture.engine))
        try await builder.finish()
        let disk = try await VirtualDisk.open(path: fixture.path("layer.vmdk"), writable: true, engine: fixture.engine)
        // Group 2's descriptor: mark its inode table in use past what its checksum covers.
        let at = 2 * Ext4.Group.size + Ext4.Group.inodeTableUnusedLow
        var sector = try await disk.read(count: 512, at: 4096)
        #expect(sector.le16(at) == 32768 * 4096 / 16384, "group 2's whole inode table is unused")
        sector.put16(0, at)
        try await disk.write(sector, at: 4096)
        try await disk.flush()
        await #expect(throws: Ext4Error.self) { _ = try await Ext4Volume.open(disk: disk) }
        let check = try HostFacts.run(DiskFixture.e2fsck, ["-fn", try qemuRaw(fixture)])
        #expect(check.status != 0, "e2fsck agrees the checksum is wrong: \(check.stdout)")
    }

    private func qemuRaw(_ fixture: DiskFixture) throws -> String {
        let raw = fixture.path("layer.raw")
        try fixture.qemuImg(["convert", "-O", "raw", fixture.path("layer.vmdk"), raw])
        return raw
    }
}
