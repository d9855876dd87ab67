@testable import Disk
import Foundation
import TestSupport
import Testing

/// A container disk's metadata is committed through a jbd2 journal: a commit stopped at any
/// step (as a kill would stop it) leaves a file system that e2fsck, the reader and the writer
/// all see either wholly before the commit (log written, no commit block) or wholly after it
/// (commit block written: the journal is replayed).
@Suite(.enabled(if: DiskFixture.hasE2fsprogs, "needs e2fsprogs"))
struct Ext4JournalTests {
    /// A layer with /kept, a container child whose builder has made its journal and synced /a,
    /// then made /b and /a longer and stops its next commit after `step`.
    func stoppedCommit(_ fixture: DiskFixture, after step: JournalCommitStep) async throws -> String {
        let layer = fixture.path("layer.vmdk"), container = fixture.path("container.vmdk")
        try await VMDKImage.create(at: layer, capacityBytes: 256 << 20, engine: fixture.engine)
        let base = try Ext4Builder.create(on: try await VirtualDisk.open(path: layer, writable: true, engine: fixture.engine))
        var kept = Ext4Builder.ByteSource(bytes: Array("kept\n".utf8))
        try await base.addFile("/kept", Ext4Attributes(permissions: 0o644, modificationTime: Ext4Time(seconds: 1)), size: 5, content: &kept)
        try await base.finish()
        try await VMDKImage.createChild(at: container, parent: layer, engine: fixture.engine)

        let builder = try await Ext4Builder.open(on: try await VirtualDisk.open(path: container, writable: true, engine: fixture.engine))
        try await builder.enableLiveChanges()
        #expect(builder.isJournaled)
        let a = try builder.createFile(named: Array("a".utf8), in: Ext4.rootInode, permissions: 0o644, uid: 0, gid: 0)
        var first = Ext4Builder.ByteSource(bytes: Array("first\n".utf8))
        try await builder.replaceContents(of: a, size: 6, modified: Ext4Time(seconds: 2), from: &first)
        try await builder.finish()

        _ = try builder.createFile(named: Array("b".utf8), in: Ext4.rootInode, permissions: 0o600, uid: 0, gid: 0)
        let longer = String(repeating: "second\n", count: 2000)
        var second = Ext4Builder.ByteSource(bytes: Array(longer.utf8))
        try await builder.replaceContents(of: a, size: UInt64(longer.utf8.count), modified: Ext4Time(seconds: 3), from: &second)
        builder.stopsCommitAfter = step
        await #expect(throws: Ext4Error.self) { try await builder.finish() }
        return container
    }

    /// The names in the root and /a's bytes, as the reader sees the disk.
    func contents(_ container: String, writable: Bool, _ fixture: DiskFixture) async throws -> (names: Set<String>, a: String) {
        let volume = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: container, writable: writable, engine: fixture.engine))
        let root = try await volume.inode(Ext4.rootInode)
        let entries = try await volume.entries(of: root)
        let names = Set(entries.map { String(decoding: $0.name, as: UTF8.self) }).subtracting([".", ".."])
        guard let a = entries.first(where: { $0.name == Array("a".utf8) }) else { return (names, "") }
        let bytes = try await volume.contents(try await volume.inode(a.inode), limit: 1 << 20)
        return (names, String(decoding: bytes, as: UTF8.self))
    }

    @Test(arguments: [JournalCommitStep.logWritten, .committed, .writtenInPlace])
    func aStoppedCommitIsWhollyBeforeOrWhollyAfter(step: JournalCommitStep) async throws {
        let fixture = try DiskFixture("journal")
        let container = try await stoppedCommit(fixture, after: step)
        let replayed = step != .logWritten
        let expected: (Set<String>, String) = replayed ? (["kept", "a", "b"], String(repeating: "second\n", count: 2000)) : (["kept", "a"], "first\n")

        // e2fsck replays a committed transaction (or finds nothing to replay) on a raw copy.
        try fixture.qemuImg(["check", container])
        let raw = fixture.path("copy.raw")
        try fixture.qemuImg(["convert", "-O", "raw", container, raw])
        let repair = try HostFacts.run(DiskFixture.e2fsck, ["-fy", raw])
        #expect(repair.status <= 1, "e2fsck -fy after a commit stopped after \(step): \(repair.stdout)")
        let clean = try HostFacts.run(DiskFixture.e2fsck, ["-fn", raw])
        #expect(clean.status == 0, "e2fsck -fn after its repair: \(clean.stdout)")
        #expect(try fixture.debugfs(raw, "cat /a") == expected.1)
        #expect(try fixture.debugfs(raw, "ls -l /").contains(" b") == replayed, "\(step)")

        // A read-only open reads the replayed blocks in place; it writes nothing.
        let readOnly = try await contents(container, writable: false, fixture)
        #expect(readOnly.names == expected.0, "\(step)")
        #expect(readOnly.a == expected.1, "\(step)")
        // A writable open replays the journal onto the disk, empties it, and clears needs_recovery.
        let afterReplay = try await contents(container, writable: true, fixture)
        #expect(afterReplay.names == expected.0, "\(step)")
        #expect(afterReplay.a == expected.1, "\(step)")
        _ = try fixture.checkedExt4("container.vmdk")
        // The writer takes the recovered disk back and its next commit is journaled again.
        let builder = try await Ext4Builder.open(on: try await VirtualDisk.open(path: container, writable: true, engine: fixture.engine))
        try await builder.enableLiveChanges()
        #expect(builder.isJournaled)
        _ = try builder.createFile(named: Array("c".utf8), in: Ext4.rootInode, permissions: 0o644, uid: 0, gid: 0)
        try await builder.finish()
        let raw2 = try fixture.checkedExt4("container.vmdk")
        #expect(try fixture.debugfs(raw2, "ls -l /").contains(" c"))
    }

    /// A writer killed as it cleared needs_recovery leaves the flag clear over a log that still
    /// holds its transaction: the journal is still replayed, and the writer takes the disk back.
    @Test func aLogLeftBehindAClearedFlagIsStillReplayed() async throws {
        let fixture = try DiskFixture("journal-flag")
        let container = try await stoppedCommit(fixture, after: .committed)
        let disk = try await VirtualDisk.open(path: container, writable: true, engine: fixture.engine)
        var first = try await disk.read(count: 4096, at: 0)
        let at = Ext4.superblockOffset + Ext4.Super.featureIncompat
        #expect(first.le32(at) & Ext4.Incompat.recover != 0)
        first.put32(first.le32(at) & ~Ext4.Incompat.recover, at)
        try await disk.write(first, at: 0)
        try await disk.flush()
        let seen = try await contents(container, writable: true, fixture)
        #expect(seen.names == ["kept", "a", "b"])
        let builder = try await Ext4Builder.open(on: try await VirtualDisk.open(path: container, writable: true, engine: fixture.engine))
        try await builder.enableLiveChanges()
        #expect(builder.isJournaled)
        _ = try fixture.checkedExt4("container.vmdk")
    }

    /// A hostile journal (a log pointing past the file system) is refused by name, never replayed.
    @Test func aJournalWritingPastTheFileSystemIsRefused() async throws {
        let fixture = try DiskFixture("journal-hostile")
        let container = try await stoppedCommit(fixture, after: .committed)
        let disk = try await VirtualDisk.open(path: container, writable: true, engine: fixture.engine)
        let volume = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: container, engine: fixture.engine))
        let journal = try await volume.record(Ext4.journalInode).extents[0].physical
        var descriptor = try await disk.read(count: 4096, at: (journal + 1) * 4096)
        #expect(descriptor.be32(0) == JBD2.magic)
        descriptor.putBE32(UInt32.max, JBD2.Header.size)
        try await disk.write(descriptor, at: (journal + 1) * 4096)
        try await disk.flush()
        await #expect {
            _ = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: container, engine: fixture.engine))
        } throws: { error in
            "\(error)".contains("past the file system")
        }
    }
}
