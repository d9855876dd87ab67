import Disk
import Foundation
import TestSupport
import Testing

/// The ext4 writer, judged by e2fsprogs and qemu-img: every disk passes `e2fsck -fn` and
/// `qemu-img check`, and debugfs reads back the files written.
@Suite(.enabled(if: DiskFixture.hasE2fsprogs, "needs e2fsprogs (e2fsck, debugfs): scripts/setup.sh installs it"))
struct Ext4WriterTests {
    /// The inode number of `name` in a `debugfs ls -p` listing (/inode/mode/uid/gid/name/size/).
    static func inode(in listing: String, named name: String) -> String? {
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "/", omittingEmptySubsequences: false)
            if fields.count > 5, fields[5] == name { return String(fields[1]) }
        }
        return nil
    }

    @Test func aHostTreeWrittenAsExt4PassesE2fsckAndDumpsTheSame() async throws {
        let fixture = try DiskFixture("ext4-tree")
        let source = fixture.path("source")
        try fixture.python(DiskFixture.makeTree, [source])
        try await fixture.writeExt4("tree.vmdk", from: source)
        let raw = try fixture.checkedExt4("tree.vmdk")
        let dumped = try fixture.dumpExt4(raw, into: "dump")
        let differences = try fixture.python(DiskFixture.compareTrees, [source, dumped, "lost+found"])
        #expect(differences.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(differences)")

        // Hard links share one inode; special files keep their kind and numbers; xattrs and nanoseconds stay.
        let usr = try fixture.debugfs(raw, "ls -p /usr")
        let etc = try fixture.debugfs(raw, "ls -p /etc")
        let linked = Self.inode(in: usr, named: "hostname-link")
        #expect(linked != nil && linked == Self.inode(in: etc, named: "hostname"), "\(usr)\n\(etc)")
        let fifo = try fixture.debugfs(raw, "stat /usr/fifo")
        #expect(fifo.contains("Type: FIFO"), "\(fifo)")
        if HostFacts.isRoot {
            let null = try fixture.debugfs(raw, "stat /usr/null")
            #expect(null.contains("Type: character special") && null.contains("Device major/minor number: 01:03"), "\(null)")
            let big = try fixture.debugfs(raw, "stat /usr/big")
            #expect(big.contains("Type: block special") && big.contains("259:70000"), "\(big)")
        }
        let hostname = try fixture.debugfs(raw, "stat /etc/hostname")
        #expect(hostname.contains("user.comment (17) = \"written by a test\""), "\(hostname)")
        #expect(hostname.contains("0x5f5e1000:1d6f3454") || hostname.contains("123456789"), "\(hostname)")
        let tool = try fixture.debugfs(raw, "ea_get /usr/bin/tool user.long")
        #expect(tool.contains(String(repeating: "v", count: 300)), "\(tool)")
        let toolMode = try fixture.debugfs(raw, "stat /usr/bin/tool")
        #expect(toolMode.contains("Mode:  04755"), "\(toolMode)")
        let long = try fixture.debugfs(raw, "stat /usr/long")
        #expect(long.contains("EXTENTS"), "a 130-byte target is a slow symlink, in a block: \(long)")
    }
}
