import CShims
import Foundation
@testable import Images
import TestSupport
import Testing

/// Layers applied onto a root folder: the tar formats, whiteouts, links and modes.
@Suite struct UnpackTests {
    @Test func readsUstarPaxAndGnuLongNamesAndGzip() throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        let deep = (0..<12).map { "folder\($0)" }.joined(separator: "/")
        var tar = TarWriter()
        tar.add("plain.txt", content: Array("plain\n".utf8), mode: 0o640)
        tar.pax([("path", deep + "/pax-named.txt"), ("mtime", "1600000000.5")])
        tar.add("ignored", content: Array("pax\n".utf8))
        tar.longName(deep + "/gnu-named.txt")
        tar.add("ignored-too", content: Array("gnu\n".utf8))
        tar.add("exec", content: Array("#!/bin/sh\n".utf8), mode: 0o4755)
        let layer = tar.finished()
        let digests = try fixture.unpack([try gzipped(layer)])
        #expect(digests == [Digest.of(layer)])
        #expect(fixture.text("plain.txt") == "plain\n")
        #expect(fixture.text(deep + "/pax-named.txt") == "pax\n")
        #expect(fixture.text(deep + "/gnu-named.txt") == "gnu\n")
        #expect(!fixture.exists("ignored") && !fixture.exists("ignored-too"))
        var info = stat()
        stat(fixture.root.appendingPathComponent("plain.txt").path, &info)
        #expect(info.st_mode & 0o7777 == 0o640)
        stat(fixture.root.appendingPathComponent("exec").path, &info)
        #expect(info.st_mode & 0o7777 == 0o4755)
    }

    /// umoci 0.4's `insert` ends a layer right after its last file's content, with neither the
    /// padding nor the end-of-archive blocks (Go's archive/tar reads such layers): the layer
    /// is whole, its last file complete.
    @Test func aLayerEndingRightAfterItsLastContentIsWhole() throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        var tar = TarWriter()
        tar.add("etc/", .directory, mode: 0o755)
        tar.add("etc/first", content: Array("first\n".utf8))
        tar.add("etc/last", content: [UInt8](repeating: 0x61, count: 700))
        let unpadded = Array(tar.bytes.dropLast(512 - 700 % 512))
        #expect(unpadded.count % 512 == 700 % 512)
        let digests = try fixture.unpack([try gzipped(unpadded)])
        #expect(digests == [Digest.of(unpadded)])
        #expect(fixture.text("etc/first") == "first\n")
        #expect(fixture.text("etc/last") == String(repeating: "a", count: 700))
    }

    @Test func whiteoutsAndOpaqueFoldersRemoveLowerLayersOnly() throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        var lower = TarWriter()
        lower.add("etc", .directory, mode: 0o755)
        lower.add("etc/keep", content: Array("keep\n".utf8))
        lower.add("etc/gone", content: Array("gone\n".utf8))
        lower.add("opaque", .directory, mode: 0o755)
        lower.add("opaque/old", content: Array("old\n".utf8))
        lower.add("opaque/sub", .directory)
        lower.add("opaque/sub/deeper", content: Array("deeper\n".utf8))
        lower.add("tree", .directory)
        lower.add("tree/leaf", content: Array("leaf\n".utf8))
        var upper = TarWriter()
        upper.add("etc/.wh.gone")
        upper.add("opaque/new", content: Array("new\n".utf8))
        upper.add("opaque/.wh..wh..opq")
        upper.add(".wh.tree")
        upper.add("etc/.wh.never-existed")
        try fixture.unpack([lower.finished(), upper.finished()])
        #expect(fixture.text("etc/keep") == "keep\n")
        #expect(!fixture.exists("etc/gone") && !fixture.exists("etc/.wh.gone"))
        #expect(fixture.text("opaque/new") == "new\n", "the opaque folder keeps what its own layer made")
        #expect(!fixture.exists("opaque/old") && !fixture.exists("opaque/sub") && !fixture.exists("opaque/.wh..wh..opq"))
        #expect(!fixture.exists("tree"))
    }

    @Test func hardLinksSymlinksAndReplacements() throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        var lower = TarWriter()
        lower.add("bin", .directory)
        lower.add("bin/busybox", content: Array("program".utf8), mode: 0o755)
        lower.add("bin/sh", .symlink, link: "busybox")
        lower.add("bin/ash", .hardLink, link: "bin/busybox")
        lower.add("abs", .symlink, link: "/etc/passwd")
        lower.add("pipe", .fifo, mode: 0o600)
        lower.add("was-folder", .directory)
        lower.add("was-folder/inside", content: [1])
        var upper = TarWriter()
        upper.add("abs", content: Array("replaced".utf8))
        upper.add("was-folder", content: Array("now a file".utf8))
        try fixture.unpack([lower.finished(), upper.finished()])
        var a = stat(), b = stat()
        stat(fixture.root.appendingPathComponent("bin/busybox").path, &a)
        stat(fixture.root.appendingPathComponent("bin/ash").path, &b)
        #expect(a.st_ino == b.st_ino && a.st_nlink == 2)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: fixture.root.appendingPathComponent("bin/sh").path)) == "busybox")
        #expect(fixture.text("abs") == "replaced", "a file replacing a symlink is a new file, not a write through it")
        #expect(fixture.text("was-folder") == "now a file")
        lstat(fixture.root.appendingPathComponent("pipe").path, &a)
        #expect(a.st_mode & S_IFMT == S_IFIFO)
        #expect(fixture.outsideUntouched)
    }

    @Test func sha256MatchesTheSystemTool() throws {
        var random = SplitMix64(seed: 7)
        for size in [0, 1, 55, 56, 63, 64, 65, 127, 128, 1000, 100_003, 1_000_000] {
            let bytes = (0..<size).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            let folder = try HostFacts.makeTemporaryFolder("sha")
            defer { try? FileManager.default.removeItem(at: folder) }
            try Data(bytes).write(to: folder.appendingPathComponent("x"))
            let expected = try HostFacts.run("/usr/bin/sha256sum", [folder.appendingPathComponent("x").path]).stdout.prefix(64)
            // The SHA extensions' rounds (where the CPU has them) and the Swift ones.
            for hardware in [true, false] {
                var hasher = SHA256(hardware: hardware)
                // Fed in uneven pieces, as a download arrives.
                var offset = 0
                while offset < bytes.count {
                    let piece = min(bytes.count - offset, 1 + Int(random.next() % 9000))
                    hasher.update(Array(bytes[offset..<offset + piece]))
                    offset += piece
                }
                #expect(hasher.finishHex() == String(expected), "size \(size), hardware \(hardware && SHA256.hardwareAvailable)")
                var whole = SHA256(hardware: hardware)
                whole.update(bytes)
                #expect(whole.finishHex() == String(expected), "size \(size) in one piece, hardware \(hardware && SHA256.hardwareAvailable)")
            }
        }
    }

    @Test func referencesParseAndBadOnesAreNamed() throws {
        let local = try ImageReference(parsing: "127.0.0.1:5000/tools/busybox:1.36")
        #expect(local.registry == "127.0.0.1:5000" && local.repository == "tools/busybox" && local.tag == "1.36" && local.scheme == "http")
        let hub = try ImageReference(parsing: "busybox")
        #expect(hub.registry == "docker.io" && hub.repository == "library/busybox" && hub.tag == "latest" && hub.scheme == "https")
        let pinned = try ImageReference(parsing: "localhost:5000/busybox@sha256:" + String(repeating: "ab", count: 32))
        #expect(pinned.tag == nil && pinned.manifestReference.hasPrefix("sha256:"))
        for bad in ["", "UPPER/case", "a b", "host:5000/x:bad tag", "x@md5:abc", "x@sha256:short", "x/../y", "host:5000//x"] {
            #expect(throws: ImageError.self, "\(bad)") { try ImageReference(parsing: bad) }
        }
    }

    @Test func challengesParse() {
        let bearer = AuthChallenge(parsing: #"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#)
        #expect(bearer?.scheme == "Bearer" && bearer?.parameters["realm"] == "https://auth.example/token"
            && bearer?.parameters["scope"] == "repository:a/b:pull,push" && bearer?.parameters["service"] == "registry.example")
        #expect(AuthChallenge(parsing: #"Basic realm="vmfork-test""#)?.parameters == ["realm": "vmfork-test"])
    }
}

/// Extended attributes in pax records (`SCHILY.xattr.NAME`, as GNU tar and Docker write them)
/// land on the unpacked files and folders, and from there in the layer's ext4 disk.
@Suite struct PaxXAttrTests {
    static func xattr(_ path: String, _ name: String) -> [UInt8]? {
        let size = getxattr(path, name, nil, 0)
        guard size >= 0 else { return nil }
        var value = [UInt8](repeating: 0, count: size)
        let got = getxattr(path, name, &value, size)
        return got == size ? value : nil
    }

    @Test func paxXAttrsLandOnFilesAndFoldersAndHostOnesAreLeftOut() throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        var tar = TarWriter()
        tar.add("dir", .directory, mode: 0o755)
        tar.pax([("SCHILY.xattr.user.vmfork.file", "a value"), ("SCHILY.xattr.user.vmfork.empty", ""),
                 ("SCHILY.xattr.security.selinux", "system_u:object_r:bin_t:s0")])
        tar.add("dir/file", content: Array("x\n".utf8))
        tar.pax([("SCHILY.xattr.user.vmfork.folder", "on a folder")])
        tar.add("dir/sub", .directory, mode: 0o750)
        tar.add("plain", content: Array("y\n".utf8))
        _ = try fixture.unpack([tar.finished()])
        let file = fixture.root.appendingPathComponent("dir/file").path
        #expect(Self.xattr(file, "user.vmfork.file") == Array("a value".utf8))
        #expect(Self.xattr(file, "user.vmfork.empty") == [])
        // The host's security policy is not the image's to set.
        #expect(Self.xattr(file, "security.selinux") == nil)
        #expect(Self.xattr(fixture.root.appendingPathComponent("dir/sub").path, "user.vmfork.folder") == Array("on a folder".utf8))
        // A pax record applies to the next entry only.
        #expect(Self.xattr(fixture.root.appendingPathComponent("plain").path, "user.vmfork.file") == nil)
    }

    @Test func aMalformedXAttrRecordIsRefusedByName() throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        var tar = TarWriter()
        tar.pax([("SCHILY.xattr.", "no name")])
        tar.add("file", content: Array("x\n".utf8))
        #expect(throws: ImageError.self) { _ = try fixture.unpack([tar.finished()]) }
        do { _ = try fixture.unpack([tar.finished()]) } catch { #expect("\(error)".contains("xattr"), "\(error)") }
    }
}
