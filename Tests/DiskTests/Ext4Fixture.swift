import Disk
import Foundation
import TestSupport
import Testing

/// e2fsprogs (e2fsck, debugfs) and qemu-img as the judges of the ext4 disks we write.
extension DiskFixture {
    static let e2fsck = "/usr/sbin/e2fsck"
    static let debugfs = "/usr/sbin/debugfs"
    static var hasE2fsprogs: Bool { FileManager.default.isExecutableFile(atPath: e2fsck) && FileManager.default.isExecutableFile(atPath: debugfs) }

    /// `qemu-img check` of the VMDK `name`, then its raw image (converted by qemu-img) checked
    /// with `e2fsck -fn`; returns the raw image's path. Fails the test, with the tools'
    /// output, when either finds a problem.
    func checkedExt4(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try qemuImg(["check", path(name)], sourceLocation: sourceLocation)
        let raw = path(name + ".raw")
        try? FileManager.default.removeItem(atPath: raw)
        try qemuImg(["convert", "-O", "raw", path(name), raw], sourceLocation: sourceLocation)
        let check = try HostFacts.run(Self.e2fsck, ["-fn", raw])
        #expect(check.status == 0, "e2fsck -fn \(name): status \(check.status)\n\(check.stdout)\n\(check.stderr)", sourceLocation: sourceLocation)
        return raw
    }

    /// debugfs's answer to one request on the raw image `raw`.
    func debugfs(_ raw: String, _ request: String) throws -> String {
        let result = try HostFacts.run(Self.debugfs, ["-R", request, raw])
        return result.stdout
    }

    /// debugfs's `rdump` of the image's root into a new folder `name`.
    func dumpExt4(_ raw: String, into name: String) throws -> String {
        let target = path(name)
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let result = try HostFacts.run(Self.debugfs, ["-R", "rdump / \(target)", raw])
        #expect(result.status == 0, "debugfs rdump: \(result.stderr)")
        return target
    }

    /// Runs a python3 script with arguments; fails the test on a non-zero status.
    @discardableResult
    func python(_ script: String, _ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let result = try HostFacts.run("/usr/bin/python3", ["-c", script] + arguments)
        #expect(result.status == 0, "python3: \(result.stdout)\n\(result.stderr)", sourceLocation: sourceLocation)
        return result.stdout
    }

    /// Builds a tree with every kind of file the writer keeps: nested folders, empty, small
    /// and multi-block files, fast and slow symlinks, hard links, a FIFO, device nodes (as
    /// root), odd modes, owners, nanosecond times and xattrs.
    static let makeTree = """
    import os, sys
    r = sys.argv[1]
    os.makedirs(r + '/etc/deep/er/still', exist_ok=True)
    os.makedirs(r + '/usr/bin')
    os.makedirs(r + '/private')
    def w(p, data, mode=0o644):
        with open(r + p, 'wb') as f: f.write(data)
        os.chmod(r + p, mode)
    w('/etc/hostname', b'layer-one\\n')
    w('/etc/empty', b'')
    w('/etc/deep/er/still/block', bytes(range(256)) * 16)
    w('/usr/bin/tool', bytes((i * 7 + 3) % 251 for i in range(300 * 1024 + 17)), 0o4755)
    w('/private/secret', b'x' * 5000, 0o600)
    os.chmod(r + '/private', 0o700)
    os.chown(r + '/private/secret', 1000, 1001)
    os.chown(r + '/private', 1000, 1001)
    os.symlink('../etc/hostname', r + '/usr/short')
    os.symlink('/' + 'long-target/' * 10 + 'end', r + '/usr/long')
    os.link(r + '/etc/hostname', r + '/usr/hostname-link')
    os.mkfifo(r + '/usr/fifo', 0o640)
    if os.geteuid() == 0:
        os.mknod(r + '/usr/null', 0o666 | 0o020000, os.makedev(1, 3))
        os.mknod(r + '/usr/big', 0o600 | 0o060000, os.makedev(259, 70000))
    os.setxattr(r + '/etc/hostname', 'user.comment', b'written by a test')
    os.setxattr(r + '/usr/bin/tool', 'user.long', b'v' * 300)
    os.utime(r + '/etc/hostname', ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.utime(r + '/etc/deep', (1_500_000_000, 1_500_000_000))
    """

    /// Compares two trees (the source and debugfs's dump of it): types, modes, owners,
    /// seconds of mtime (regular files), contents (set-id bits aside: rdump's chown clears them) and symlink targets. Prints differences.
    static let compareTrees = """
    import os, sys, stat
    a, b = sys.argv[1], sys.argv[2]
    skip = set(sys.argv[3:])
    bad = []
    for root, dirs, files in os.walk(a):
        for name in dirs + files:
            pa = os.path.join(root, name); rel = os.path.relpath(pa, a); pb = os.path.join(b, rel)
            sa = os.lstat(pa)
            if stat.S_ISFIFO(sa.st_mode) or stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode): continue
            if not os.path.lexists(pb): bad.append('missing ' + rel); continue
            sb = os.lstat(pb)
            if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode): bad.append('type ' + rel); continue
            if stat.S_ISLNK(sa.st_mode):
                if os.readlink(pa) != os.readlink(pb): bad.append('target ' + rel)
                continue
            if stat.S_IMODE(sa.st_mode) & 0o777 != stat.S_IMODE(sb.st_mode) & 0o777: bad.append('mode %s %o %o' % (rel, sa.st_mode, sb.st_mode))
            if (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid): bad.append('owner ' + rel)
            if stat.S_ISREG(sa.st_mode):
                if int(sa.st_mtime) != int(sb.st_mtime): bad.append('mtime ' + rel)
                if open(pa, 'rb').read() != open(pb, 'rb').read(): bad.append('content ' + rel)
    for root, dirs, files in os.walk(b):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(root, name), b)
            if rel.split('/')[0] in skip: continue
            if not os.path.lexists(os.path.join(a, rel)): bad.append('extra ' + rel)
    print('\\n'.join(bad))
    """

    /// Writes the host folder `source` as a new ext4 file system on a new VMDK `name`.
    func writeExt4(_ name: String, from source: String, capacity: UInt64 = 256 << 20) async throws {
        try await VMDKImage.create(at: path(name), capacityBytes: capacity, engine: engine)
        let disk = try await VirtualDisk.open(path: path(name), writable: true, engine: engine)
        let builder = try Ext4Builder.create(on: disk)
        try await builder.addTree(folder: source)
        try await builder.finish()
    }
}
