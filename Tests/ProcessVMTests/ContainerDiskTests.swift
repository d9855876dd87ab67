import Disk
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import IOEngine
import ProcessVM
import TestSupport
import Testing

/// The judges of the disks containers write.
enum DiskTools {
    static let e2fsck = "/usr/sbin/e2fsck"
    static let debugfs = "/usr/sbin/debugfs"
    static let qemuImg = "/usr/bin/qemu-img"
    static var areInstalled: Bool { [e2fsck, debugfs, qemuImg].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) } }
}

/// A container's own disk: a child VMDK of its image's top layer that takes the guest's
/// writes, creates, removes, renames, mkdir, truncate and chmod through the ext4 writer.
/// e2fsck, qemu-img and debugfs judge the result; a killed writer loses nothing it synced.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable && DiskTools.areInstalled, "needs /dev/kvm, busybox-static, e2fsprogs and qemu-img"))
final class ContainerDiskTests {
    static let e2fsck = DiskTools.e2fsck
    static let debugfs = DiskTools.debugfs
    static let qemuImg = DiskTools.qemuImg

    let engine: IOEngine
    let folder: URL

    init() throws {
        engine = try IOEngine()
        folder = try HostFacts.makeTemporaryFolder("containerdisk")
    }

    deinit { try? FileManager.default.removeItem(at: folder) }

    func path(_ name: String) -> String { folder.appendingPathComponent(name).path }

    /// busybox's rootfs as a layer disk, and a container disk chained on it.
    func chain(capacity: UInt64 = 256 << 20) async throws -> (layer: String, container: String) {
        let rootfs = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: rootfs) }
        for applet in ["mkdir", "mv", "rm", "chmod", "ln", "rmdir", "truncate", "wc", "sync", "head", "chown", "chgrp", "touch", "stat", "readlink"] {
            try FileManager.default.createSymbolicLink(atPath: rootfs.appendingPathComponent("bin/\(applet)").path, withDestinationPath: "busybox")
        }
        let layer = path("layer.vmdk"), container = path("container.vmdk")
        try await VMDKImage.create(at: layer, capacityBytes: capacity, engine: engine)
        let disk = try await VirtualDisk.open(path: layer, writable: true, engine: engine)
        let builder = try Ext4Builder.create(on: disk)
        try await builder.addTree(folder: rootfs.path)
        try await builder.finish()
        try await VMDKImage.createChild(at: container, parent: layer, engine: engine)
        return (layer, container)
    }

    func run(_ script: String, root: any GuestRootFileSystem) throws -> (status: Int32, stdout: String, stderr: String) {
        try run(arguments: ["/bin/sh", "-c", script], root: root)
    }

    func run(arguments: [String], root: any GuestRootFileSystem, identity: GuestIdentity = GuestIdentity()) throws -> (status: Int32, stdout: String, stderr: String) {
        let streams = try CapturedStreams()
        var configuration = ProcessVMConfiguration(rootfs: "/nonexistent", memoryBytes: 64 << 20, identity: identity)
        configuration.rootFileSystem = root
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: configuration, executable: arguments[0], arguments: arguments,
                               environment: ["PATH=/bin"], streams: StandardStreams(input: streams.input, output: streams.output, error: streams.error))
        let status = try vm.run()
        return (status.code, streams.stdout, streams.stderr)
    }

    /// qemu-img check of the VMDK, then its raw image checked by `e2fsck -fn`; the raw image's path.
    func checked(_ vmdk: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let check = try HostFacts.run(Self.qemuImg, ["check", vmdk])
        #expect(check.status == 0, "qemu-img check \(vmdk): \(check.stdout)\(check.stderr)", sourceLocation: sourceLocation)
        let raw = vmdk + ".raw"
        try? FileManager.default.removeItem(atPath: raw)
        let convert = try HostFacts.run(Self.qemuImg, ["convert", "-O", "raw", vmdk, raw])
        #expect(convert.status == 0, "qemu-img convert: \(convert.stderr)", sourceLocation: sourceLocation)
        let fsck = try HostFacts.run(Self.e2fsck, ["-fn", raw])
        #expect(fsck.status == 0, "e2fsck -fn \(vmdk): \(fsck.stdout)\(fsck.stderr)", sourceLocation: sourceLocation)
        return raw
    }

    func debugfs(_ raw: String, _ request: String) throws -> String {
        try HostFacts.run(Self.debugfs, ["-R", request, raw]).stdout
    }

    static let script = """
    echo hello > /new.txt && mkdir -p /d/e && echo x > /d/e/f && mv /d/e/f /d/g && rm /data/hello.txt && \
    chmod 600 /new.txt && echo more >> /new.txt && ln -s /d/g /d/link && rmdir /d/e && \
    mkdir /d/sub && mv /d/sub /d/moved && i=0 && while [ $i -lt 40 ]; do echo file $i > /d/moved/f$i; i=$((i+1)); done && \
    rm /d/moved/f7 && truncate -s 3 /d/moved/f8 && echo replaced > /d/moved/f9 && mv /d/moved/f9 /d/moved/f10 && \
    cat /new.txt /d/link /d/moved/f8 && echo && ls /d && ls /data && wc -l /d/moved/f10 && ls /d/moved | wc -l
    """

    /// Writes, creates, unlinks, renames, mkdir, rmdir, truncate, chmod and a symlink land in
    /// the container's disk: the guest sees them at once, and after a clean end the disk
    /// passes qemu-img check and e2fsck -fn and debugfs reads them back; the image's layer is
    /// untouched, and a second container on the same disk sees the first one's files.
    @Test func aContainersChangesLandInItsChildDisk() async throws {
        let (layer, container) = try await chain()
        let image = try await DiskRootFileSystem.open(path: layer, engine: engine)
        let root = ContainerDiskRoot(base: image, diskPath: container)
        let first = try run(Self.script, root: root)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == "hello\nmore\nx\nfil\ng\nlink\nmoved\nblob.bin\nnumbers.txt\nsub\nwords.txt\n1 /d/moved/f10\n38\n", "\(first.stdout)")
        try root.sync()
        #expect(image.lastError == nil)

        let raw = try checked(container)
        let listing = try debugfs(raw, "ls -l /")
        #expect(try debugfs(raw, "cat /new.txt") == "hello\nmore\n", "\(listing)")
        #expect(try debugfs(raw, "cat /d/g") == "x\n")
        #expect(try debugfs(raw, "cat /d/moved/f8") == "fil")
        #expect(try debugfs(raw, "cat /d/moved/f10") == "replaced\n")
        #expect(try debugfs(raw, "stat /new.txt").contains("Mode:  0600"))
        #expect(try debugfs(raw, "stat /d/link").contains("Fast link dest: \"/d/g\""))
        #expect(try debugfs(raw, "ls -l /data").contains("hello.txt") == false)
        #expect(try debugfs(raw, "ls -l /d/moved").contains("f7") == false)

        // The layer below holds what the image did.
        let layerRaw = try checked(layer)
        #expect(try debugfs(layerRaw, "cat /data/hello.txt").isEmpty == false)
        #expect(try debugfs(layerRaw, "stat /new.txt").contains("Mode:") == false)

        // The next container on this disk reads the changes, and changes it further.
        let again = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let second = try run("cat /new.txt /d/moved/f0 && rm -r /d && echo gone > /new.txt && ls /", root: again)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.hasPrefix("hello\nmore\nfile 0\n"), "\(second.stdout)")
        #expect(!second.stdout.contains("\nd\n"))
        try again.sync()
        let raw2 = try checked(container)
        #expect(try debugfs(raw2, "cat /new.txt") == "gone\n")
        #expect(try debugfs(raw2, "stat /d").contains("Mode:") == false)
    }

    /// A guest cannot write more than its disk holds (its files live in memfds until synced,
    /// so this also bounds the engine memory it can take): ENOSPC, and the disk stays sound.
    @Test func writesPastTheDisksFreeSpaceGetENOSPC() async throws {
        let (_, container) = try await chain(capacity: 32 << 20)
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let result = try run("cat /dev/zero > /big; echo status $?; truncate -s 1G /big; echo status $?; rm /big; echo small > /small; cat /small", root: root)
        #expect(result.stdout == "status 1\nstatus 1\nsmall\n", "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("No space left on device"), "\(result.stderr)")
        #expect(root.growthBudget.left > 0 && root.growthBudget.left < 32 << 20)
        try root.sync()
        let raw = try checked(container)
        #expect(try debugfs(raw, "cat /small") == "small\n")
    }

    /// Changes Linux refuses are refused with its errors, and leave a sound disk: a folder
    /// moved into itself, rmdir of a full folder, names too long, a file as a folder on the
    /// way, a name taken, the root itself.
    @Test func refusedChangesGetLinuxErrorsAndLeaveASoundDisk() async throws {
        let (_, container) = try await chain()
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let long = String(repeating: "n", count: 256)
        let script = """
        mkdir -p /a/b; mv /a /a/b/c; echo "1 $?"; rmdir /bin; echo "2 $?"; mkdir /\(long); echo "3 $?"; \
        mv /bin/busybox /etc/hostname/x; echo "4 $?"; ln -s x /bin/busybox; echo "5 $?"; mkdir /; echo "6 $?"; rmdir /; echo "7 $?"; \
        mv / /x; echo "8 $?"; mkdir /a/b/..; echo "9 $?"; ls /a/b; echo "10 $?"
        """
        let result = try run(script, root: root)
        // busybox mkdir / succeeds, as on Linux (it finds the root there).
        #expect(result.stdout == (1...9).map { "\($0) \($0 == 6 ? 0 : 1)\n" }.joined() + "10 0\n", "\(result.stdout)")
        for message in ["Invalid argument", "Directory not empty", "File name too long", "Path has non-directory component", "File exists", "Device or resource busy"] {
            #expect(result.stderr.contains(message), "\(message): \(result.stderr)")
        }
        try root.sync()
        let raw = try checked(container)
        #expect(try debugfs(raw, "ls -p /a").contains("/b/"))
    }

    /// A read-only chain (an image's layer) refuses every change with EROFS, as before.
    @Test func anImagesChainStaysReadOnly() async throws {
        let (layer, _) = try await chain()
        let image = try await DiskRootFileSystem.open(path: layer, engine: engine)
        let result = try run("echo x > /f; mkdir /d; rm /bin/ls; mv /bin/cat /c; sync; echo done", root: image)
        #expect(result.stdout == "done\n")
        #expect(result.stderr.components(separatedBy: "Read-only file system").count - 1 == 4, "\(result.stderr)")
    }

    // MARK: - Owners, times, hard links and slow symlinks (issue #15 follow-up)

    /// chown, chgrp, touch (utimensat), ln and ln -s as busybox makes them, with relative
    /// paths: the guest's answers on its container disk are compared with the same script
    /// run natively in a host folder (the tests run as root, as the guest does). The times are
    /// fixed ones, so every line is deterministic.
    static let metadataScript = """
    export TZ=UTC0
    echo data > f && chmod 4755 f && chown 1234:5678 f && stat -c 'a %u %g %a' f
    chmod 2775 f && chown 1234 f && stat -c 'b %u %g %a' f
    chmod 2745 f && chgrp 9 f && stat -c 'c %u %g %a' f
    mkdir dd && chmod 6755 dd && chown 5:6 dd && stat -c 'd %u %g %a' dd
    mkdir sg && chgrp 55 sg && chmod 2775 sg && echo x > sg/f && mkdir sg/sub && ln -s f sg/l && stat -c 'sg %g %a' sg/f sg/sub && stat -c 'sg %g' sg/l
    ln -s data/words.txt sl && chown -h 11:12 sl && stat -c 'e %u %g' sl data/words.txt
    chown 21:22 sl && stat -L -c 'e2 %u %g' sl && stat -c 'e3 %u %g' sl
    touch -d '2001-02-03 04:05:06' f && stat -c 'f %X %Y' f
    touch -a -d '2002-01-01 00:00:00' f && stat -c 'g %X %Y' f
    touch -m -d '1999-12-31 23:59:59' f && stat -c 'h %X %Y' f
    touch -h -d '2003-01-01 00:00:00' sl && stat -c 'i %X %Y' sl
    touch -r f g && stat -c 'k %X %Y %s' g
    touch -c nothere; echo "l $?"; ls nothere 2>/dev/null; echo "m $?"
    echo w > m && touch -d '2004-05-06 07:08:09' m && stat -c 'm2 %X %Y' m
    ln f hard && stat -c 'n %h' f hard && [ "$(stat -c %i f)" = "$(stat -c %i hard)" ] && echo 'o same inode'
    echo more >> hard && cat f
    ln data/hello.txt data/hl && rm data/hello.txt && cat data/hl && stat -c 'p %h' data/hl
    ln data hl2; echo "q $?"
    ln f hard; echo "r $?"
    ln -s nowhere dangling && ln dangling dl && stat -c 's %h %F' dl dangling
    rm dangling && stat -c 's2 %h %F' dl && readlink dl
    t=data; i=0; while [ $i -lt 40 ]; do t=$t/.; i=$((i+1)); done; ln -s $t/words.txt long && readlink long | wc -c && cat long | wc -l && stat -c 't %s %F' long
    x=xxxxxxxxxx; y=$x$x$x$x$x$x$x$x$x$x; z=$y$y$y$y$y$y$y$y$y$y; h=$z$z$z$z$x$x$x$x$x$x$x$x$x
    ln -s ${h}xxxxx huge && readlink huge | wc -c && stat -c 'u %s' huge
    ln -s ${h}xxxxxx toolong; echo "v $?"
    sync; echo "w $?"
    """

    /// The times on the disk: base seconds and the extra field's nanoseconds (debugfs `stat`).
    static func diskTime(_ stat: String, _ field: String) -> (seconds: Int64, nanoseconds: UInt32)? {
        for line in stat.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix(field + ": 0x") else { continue }
            let hex = trimmed.dropFirst(field.count + 4).prefix { $0 != " " }.split(separator: ":")
            guard hex.count == 2, let base = UInt32(hex[0], radix: 16), let extra = UInt32(hex[1], radix: 16) else { return nil }
            return (Int64(Int32(bitPattern: base)) + (Int64(extra & 3) << 32), extra >> 2)
        }
        return nil
    }

    /// A field of debugfs `stat` ("User:", "Group:", "Links:", "Mode:", "Inode:", "Size:"): the word after it.
    static func diskField(_ stat: String, _ field: String) -> String? {
        let words = stat.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let at = words.firstIndex(where: { $0 == field + ":" }), at + 1 < words.count else { return nil }
        return String(words[at + 1])
    }

    /// chown, utimensat, link and slow symlinks on a container's disk answer as Linux does
    /// (the same busybox script natively), and after sync debugfs reads the owners, times,
    /// link counts and targets from the disk, which e2fsck finds sound.
    @Test func ownersTimesHardLinksAndLongSymlinksAsOnLinux() async throws {
        let (_, container) = try await chain()
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let guest = try run(Self.metadataScript, root: root)

        let native: (status: Int32, stdout: String, stderr: String)
        let host = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: host) }
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        native = try BusyboxRootfs.runNatively(["sh", "-c", Self.metadataScript], in: host, environment: ["PATH=/bin"])
        #expect(guest.status == native.status, "\(guest.stderr)")
        #expect(guest.stdout == native.stdout, "guest:\n\(guest.stdout)\nnative:\n\(native.stdout)")
        #expect(guest.stderr == native.stderr, "guest:\n\(guest.stderr)\nnative:\n\(native.stderr)")
        // The answers themselves, so that a change of both sides cannot pass unseen.
        let long = 4 + 40 * 2 + 10
        let expected = [
            "a 1234 5678 755", "b 1234 5678 775", "c 1234 9 2745", "d 5 6 6755", "sg 55 644", "sg 55 2755", "sg 55", "e 11 12", "e 0 0", "e2 21 22", "e3 11 12",
            "f 981173106 981173106", "g 1009843200 981173106", "h 1009843200 946684799", "i 1041379200 1041379200",
            "k 1009843200 946684799 0", "l 0", "m 1", "m2 1083827289 1083827289", "n 2", "n 2", "o same inode", "data", "more",
            "hello from the rootfs", "second line", "p 1", "q 1", "r 1", "s 2 symbolic link", "s 2 symbolic link",
            "s2 1 symbolic link", "nowhere", "\(long + 1)", "7", "t \(long) symbolic link", "4096", "u 4095", "v 1", "w 0",
        ]
        #expect(guest.stdout == expected.joined(separator: "\n") + "\n", "\(guest.stdout)")
        #expect(guest.stderr.contains("hl2: Operation not permitted"), "\(guest.stderr)")
        #expect(guest.stderr.contains("hard: File exists"), "\(guest.stderr)")
        #expect(guest.stderr.contains("File name too long"), "\(guest.stderr)")

        try root.sync()
        let raw = try checked(container)
        let f = try debugfs(raw, "stat /f")
        #expect(Self.diskField(f, "User") == "1234" && Self.diskField(f, "Group") == "9" && Self.diskField(f, "Mode") == "02745", "\(f)")
        #expect(Self.diskField(f, "Links") == "2", "\(f)")
        #expect(Self.diskField(try debugfs(raw, "stat /hard"), "Inode") == Self.diskField(f, "Inode"))
        #expect(try debugfs(raw, "cat /hard") == "data\nmore\n")
        let dd = try debugfs(raw, "stat /dd")
        #expect(Self.diskField(dd, "User") == "5" && Self.diskField(dd, "Group") == "6" && Self.diskField(dd, "Mode") == "06755", "\(dd)")
        let sl = try debugfs(raw, "stat /sl")
        #expect(Self.diskField(sl, "User") == "11" && Self.diskField(sl, "Group") == "12", "\(sl)")
        #expect(Self.diskTime(sl, "mtime")?.seconds == 1041379200, "\(sl)")
        let words = try debugfs(raw, "stat /data/words.txt")
        #expect(Self.diskField(words, "User") == "21" && Self.diskField(words, "Group") == "22", "\(words)")
        let g = try debugfs(raw, "stat /g")
        #expect(Self.diskTime(g, "atime")?.seconds == 1009843200 && Self.diskTime(g, "mtime")?.seconds == 946684799, "\(g)")
        // A file written in a memfd, then touched: the touch survives the syncs.
        let m = try debugfs(raw, "stat /m")
        #expect(Self.diskTime(m, "mtime").map { $0.seconds == 1083827289 && $0.nanoseconds == 0 } == true, "\(m)")
        #expect(Self.diskTime(m, "atime")?.seconds == 1083827289, "\(m)")
        let hl = try debugfs(raw, "stat /data/hl")
        #expect(Self.diskField(hl, "Links") == "1", "\(hl)")
        #expect(try debugfs(raw, "cat /data/hl") == "hello from the rootfs\nsecond line\n")
        #expect(try debugfs(raw, "ls -l /data").contains("hello.txt") == false)
        #expect(Self.diskField(try debugfs(raw, "stat /dl"), "Links") == "1")
        let target = "data" + String(repeating: "/.", count: 40) + "/words.txt"
        let longStat = try debugfs(raw, "stat /long")
        #expect(Self.diskField(longStat, "Size") == "\(long)" && longStat.contains("EXTENTS:") && !longStat.contains("Fast link dest"), "\(longStat)")
        #expect(try debugfs(raw, "cat /long") == target)
        #expect(try debugfs(raw, "cat /huge") == String(repeating: "x", count: 4095))
        #expect(try debugfs(raw, "stat /toolong").contains("Inode:") == false)

        // The next container on the disk reads the slow symlinks and the links from it.
        let again = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let second = try run("wc -l /long && readlink /huge | wc -c && stat -c '%h %u %g' /hard && rm /f && cat /hard && stat -c %h /hard", root: again)
        #expect(second.stdout == "7 /long\n4096\n2 1234 9\ndata\nmore\n1\n", "\(second.stdout) \(second.stderr)")
        try again.sync()
        let raw2 = try checked(container)
        #expect(Self.diskField(try debugfs(raw2, "stat /hard"), "Links") == "1")
        #expect(try debugfs(raw2, "cat /hard") == "data\nmore\n")
    }

    /// A time with nanoseconds taken from a file the container wrote (touch -r) lands on the
    /// disk with them, for the file written (its memfd's mtime) and the one touched.
    @Test func nanosecondTimesReachTheDisk() async throws {
        let (_, container) = try await chain()
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let result = try run("echo a > /ns1 && touch -r /ns1 /ns2 && stat -c '%Y %y %x' /ns1 /ns2", root: root)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 2 && lines[0] == lines[1], "\(result.stdout)")
        // "%Y %y %x": seconds, then "date time.nnnnnnnnn zone" for the mtime and the atime.
        let words = lines.first?.split(separator: " ") ?? []
        let seconds = words.first.flatMap { Int64($0) }
        let nanoseconds = words.count > 2 ? words[2].split(separator: ".").last.flatMap { UInt32($0) } : nil
        let accessNanoseconds = words.count > 5 ? words[5].split(separator: ".").last.flatMap { UInt32($0) } : nil
        #expect(nanoseconds != nil && accessNanoseconds != nil, "\(result.stdout)")
        try root.sync()
        let raw = try checked(container)
        for name in ["/ns1", "/ns2"] {
            let stat = try debugfs(raw, "stat \(name)")
            let mtime = Self.diskTime(stat, "mtime")
            #expect(mtime?.seconds == seconds && mtime?.nanoseconds == nanoseconds, "\(name): \(stat) against \(result.stdout)")
        }
        #expect(Self.diskTime(try debugfs(raw, "stat /ns2"), "atime")?.nanoseconds == accessNanoseconds)
    }

    /// struct stat of (AT_FDCWD, path) through the call layer: uid, gid, links, atime, mtime, ctime.
    func status(_ files: GuestFiles, _ path: String, flags: Int32 = 0) -> (uid: UInt32, gid: UInt32, links: UInt64, inode: UInt64, mode: UInt32, times: [(Int64, Int64)])? {
        var bytes = [UInt8](repeating: 0, count: 144)
        // unsafe: fstatat writes at most the 144 bytes of struct stat into the array's buffer.
        let result = bytes.withUnsafeMutableBytes { buffer in files.fstatat(dirfd: AT_FDCWD, path: path, into: buffer, flags: flags) }
        guard result == 0 else { return nil }
        // unsafe: every load is within the 144 bytes, at its field's natural alignment in an array's buffer.
        return bytes.withUnsafeBytes { b in
            (b.load(fromByteOffset: 28, as: UInt32.self), b.load(fromByteOffset: 32, as: UInt32.self), b.load(fromByteOffset: 16, as: UInt64.self),
             b.load(fromByteOffset: 8, as: UInt64.self), b.load(fromByteOffset: 24, as: UInt32.self),
             [72, 88, 104].map { (b.load(fromByteOffset: $0, as: Int64.self), b.load(fromByteOffset: $0 + 8, as: Int64.self)) })
        }
    }

    /// What busybox never sends, at the call layer: chown's -1 keeps a value, UTIME_OMIT
    /// keeps a time and UTIME_NOW takes the clock, nanoseconds out of range and bad flags
    /// are EINVAL, times past ext4's are clamped, a non-root caller may not give a file
    /// away; linkat's EPERM, EEXIST, EXDEV, EMLINK (65,000 links), AT_EMPTY_PATH and
    /// AT_SYMLINK_FOLLOW. debugfs reads the results after sync.
    @Test func ownerTimeAndLinkCallsAnswerAsLinux() async throws {
        let (_, container) = try await chain()
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let null = Glibc.open("/dev/null", O_RDWR)
        defer { Glibc.close(null) }
        let files = try GuestFiles(rootFileSystem: root, stdin: null, stdout: null, stderr: null)
        let rootCaller = GuestFiles.Caller(uid: 0, gid: 0)
        let keep = UInt32.max
        let omit: Int64 = (1 << 30) - 2, now: Int64 = (1 << 30) - 1

        let fd = Int32(files.openat(dirfd: AT_FDCWD, path: "/w", flags: O_CREAT | O_WRONLY, mode: 0o4755))
        #expect(fd >= 0)
        // unsafe: write reads the array's 3 bytes during the call.
        #expect(Array("abc".utf8).withUnsafeBytes { files.write(fd, from: $0) } == 3)

        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/w", uid: 7, gid: 8, flags: 0, caller: rootCaller) == 0)
        #expect(status(files, "/w").map { ($0.uid, $0.gid, $0.mode & 0o7777) } ?? (0, 0, 0) == (7, 8, 0o755))
        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/w", uid: keep, gid: 9, flags: 0, caller: rootCaller) == 0)
        #expect(status(files, "/w").map { ($0.uid, $0.gid) } ?? (0, 0) == (7, 9))
        #expect(files.fchown(fd, uid: 10, gid: keep, caller: rootCaller) == 0)
        #expect(status(files, "/w").map { ($0.uid, $0.gid) } ?? (0, 0) == (10, 9))
        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/w", uid: 1, gid: 1, flags: 0x8000, caller: rootCaller) == -Int(EINVAL))
        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/nothere", uid: 1, gid: 1, flags: 0, caller: rootCaller) == -Int(ENOENT))
        let user = GuestFiles.Caller(uid: 10, gid: 20)
        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/w", uid: 0, gid: keep, flags: 0, caller: user) == -Int(EPERM))
        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/w", uid: keep, gid: 21, flags: 0, caller: user) == -Int(EPERM))
        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/w", uid: 10, gid: 20, flags: 0, caller: user) == 0)
        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/bin/busybox", uid: 10, gid: keep, flags: 0, caller: user) == -Int(EPERM))
        // Each change moves the ctime, even chown(-1, -1) (Linux's chown_common).
        for (call, change) in [("chown", { files.fchownat(dirfd: AT_FDCWD, path: "/data/blob.bin", uid: keep, gid: keep, flags: 0, caller: rootCaller) }),
                               ("utimensat", { files.utimensat(dirfd: AT_FDCWD, path: "/data/blob.bin", times: [(5, 0), (0, omit)], flags: 0, caller: rootCaller) }),
                               ("link", { files.linkat(oldDirfd: AT_FDCWD, oldPath: "/data/blob.bin", newDirfd: AT_FDCWD, newPath: "/blob2", flags: 0) })] {
            let earlier = status(files, "/data/blob.bin")?.times[2] ?? (0, 0)
            #expect(change() == 0, "\(call)")
            let later = status(files, "/data/blob.bin")?.times[2] ?? (0, 0)
            #expect(later.0 > earlier.0 || (later.0 == earlier.0 && later.1 > earlier.1), "\(call): ctime \(earlier) then \(later)")
        }

        // Times: atime with nanoseconds and mtime kept, then the other way through the descriptor.
        let before = status(files, "/w")?.times ?? []
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/w", times: [(1_000_000_000, 123_456_789), (0, omit)], flags: 0, caller: rootCaller) == 0)
        let afterAccess = status(files, "/w")?.times ?? []
        #expect(afterAccess.count == 3 && afterAccess[0] == (1_000_000_000, 123_456_789) && afterAccess[1] == before[1], "\(afterAccess)")
        #expect(files.utimensat(dirfd: fd, path: nil, times: [(0, omit), (2_000_000_000, 987_654_321)], flags: 0, caller: rootCaller) == 0)
        let afterModify = status(files, "/w")?.times ?? []
        #expect(afterModify.count == 3 && afterModify[0] == (1_000_000_000, 123_456_789) && afterModify[1] == (2_000_000_000, 987_654_321), "\(afterModify)")
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/w", times: [(0, 1_000_000_000), (0, omit)], flags: 0, caller: rootCaller) == -Int(EINVAL))
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/w", times: [(0, -1), (0, omit)], flags: 0, caller: rootCaller) == -Int(EINVAL))
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/nothere", times: [(0, omit), (0, omit)], flags: 0, caller: rootCaller) == 0)
        #expect(files.utimensat(dirfd: AT_FDCWD, path: nil, times: nil, flags: 0, caller: rootCaller) == -Int(EFAULT))
        #expect(files.utimensat(dirfd: fd, path: nil, times: nil, flags: AT_SYMLINK_NOFOLLOW, caller: rootCaller) == -Int(EINVAL))
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/w", times: nil, flags: 0x8000, caller: rootCaller) == -Int(EINVAL))
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/bin/busybox", times: [(5, 0), (5, 0)], flags: 0, caller: user) == -Int(EPERM))
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/bin/busybox", times: nil, flags: 0, caller: user) == -Int(EACCES))
        // UTIME_NOW takes the clock (not before this call); past ext4's last second, the last second.
        let clock = Int64(Date().timeIntervalSince1970)
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/data/words.txt", times: [(0, now), (1 << 40, 5)], flags: 0, caller: rootCaller) == 0)
        let words = status(files, "/data/words.txt")?.times ?? []
        #expect(words.count == 3 && words[0].0 >= clock && words[0].0 < clock + 120 && words[1] == (15_032_385_535, 0), "\(words)")
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/data/numbers.txt", times: [(-(1 << 40), 0), (-1, 500)], flags: 0, caller: rootCaller) == 0)
        let numbers = status(files, "/data/numbers.txt")?.times ?? []
        #expect(numbers.count == 3 && numbers[0] == (-2_147_483_648, 0) && numbers[1] == (-1, 500), "\(numbers)")
        // lchown and utimensat(AT_SYMLINK_NOFOLLOW) change the link, not its target.
        #expect(files.symlinkat(target: "/w", newDirfd: AT_FDCWD, linkPath: "/sym") == 0)
        #expect(files.fchownat(dirfd: AT_FDCWD, path: "/sym", uid: 3, gid: 4, flags: AT_SYMLINK_NOFOLLOW, caller: rootCaller) == 0)
        #expect(files.utimensat(dirfd: AT_FDCWD, path: "/sym", times: [(3, 3), (4, 4)], flags: AT_SYMLINK_NOFOLLOW, caller: rootCaller) == 0)
        #expect(status(files, "/sym", flags: AT_SYMLINK_NOFOLLOW).map { ($0.uid, $0.gid, $0.times[1].0) } ?? (0, 0, 0) == (3, 4, 4))
        #expect(status(files, "/w").map { ($0.uid, $0.gid, $0.times[1].0) } ?? (0, 0, 0) == (10, 20, 2_000_000_000))

        // Hard links.
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/bin", newDirfd: AT_FDCWD, newPath: "/b2", flags: 0) == -Int(EPERM))
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/w", newDirfd: AT_FDCWD, newPath: "/bin", flags: 0) == -Int(EEXIST))
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/dev/null", newDirfd: AT_FDCWD, newPath: "/n", flags: 0) == -Int(EXDEV))
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/nothere", newDirfd: AT_FDCWD, newPath: "/n", flags: 0) == -Int(ENOENT))
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/w", newDirfd: AT_FDCWD, newPath: "/n", flags: 0x8000) == -Int(EINVAL))
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/w", newDirfd: AT_FDCWD, newPath: "/n/", flags: 0) == -Int(ENOENT))
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/w/", newDirfd: AT_FDCWD, newPath: "/n", flags: 0) == -Int(ENOTDIR))
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/w", newDirfd: AT_FDCWD, newPath: "/w/", flags: 0) == -Int(EEXIST))
        #expect(files.symlinkat(target: "/w", newDirfd: AT_FDCWD, linkPath: "/n/") == -Int(ENOENT))
        #expect(status(files, "/n", flags: AT_SYMLINK_NOFOLLOW) == nil)
        #expect(files.linkat(oldDirfd: fd, oldPath: "", newDirfd: AT_FDCWD, newPath: "/viafd", flags: 0x1000) == 0)
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/sym", newDirfd: AT_FDCWD, newPath: "/symlink2", flags: 0) == 0)
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/sym", newDirfd: AT_FDCWD, newPath: "/followed", flags: 0x400) == 0)
        let w = status(files, "/w")
        #expect(w?.links == 3 && status(files, "/followed")?.inode == w?.inode && status(files, "/viafd")?.inode == w?.inode)
        #expect(status(files, "/symlink2", flags: AT_SYMLINK_NOFOLLOW).map { ($0.links, $0.mode & 0o170000) } ?? (0, 0) == (2, 0o120000))
        #expect(files.mkdirat(dirfd: AT_FDCWD, path: "/many", mode: 0o755) == 0)
        var made = 0
        for index in 0..<64_997 where files.linkat(oldDirfd: AT_FDCWD, oldPath: "/w", newDirfd: AT_FDCWD, newPath: "/many/l\(index)", flags: 0) == 0 { made += 1 }
        #expect(made == 64_997 && status(files, "/w")?.links == 65_000)
        #expect(files.linkat(oldDirfd: AT_FDCWD, oldPath: "/w", newDirfd: AT_FDCWD, newPath: "/many/one-more", flags: 0) == -Int(EMLINK))
        // Oldest first, as rm -r goes: linear time in all (it was quadratic: minutes).
        var removed = 0
        for index in 0..<64_997 where files.unlinkat(dirfd: AT_FDCWD, path: "/many/l\(index)", flags: 0) == 0 { removed += 1 }
        #expect(removed == 64_997)
        #expect(files.unlinkat(dirfd: AT_FDCWD, path: "/w", flags: 0) == 0)
        #expect(status(files, "/viafd")?.links == 2)
        #expect(files.close(fd) == 0)
        try root.sync()

        let raw = try checked(container)
        let viafd = try debugfs(raw, "stat /viafd")
        #expect(Self.diskField(viafd, "Links") == "2" && Self.diskField(viafd, "User") == "10" && Self.diskField(viafd, "Group") == "20", "\(viafd)")
        #expect(Self.diskField(viafd, "Mode") == "0755", "\(viafd)")
        #expect(Self.diskTime(viafd, "atime").map { $0.seconds == 1_000_000_000 && $0.nanoseconds == 123_456_789 } == true, "\(viafd)")
        #expect(Self.diskTime(viafd, "mtime").map { $0.seconds == 2_000_000_000 && $0.nanoseconds == 987_654_321 } == true, "\(viafd)")
        #expect(try debugfs(raw, "cat /followed") == "abc")
        let symStat = try debugfs(raw, "stat /symlink2")
        #expect(Self.diskField(symStat, "Links") == "2" && Self.diskField(symStat, "User") == "3" && symStat.contains("Fast link dest: \"/w\""), "\(symStat)")
        let wordsStat = try debugfs(raw, "stat /data/words.txt")
        #expect(Self.diskTime(wordsStat, "mtime").map { $0.seconds == 15_032_385_535 && $0.nanoseconds == 0 } == true, "\(wordsStat)")
        let numbersStat = try debugfs(raw, "stat /data/numbers.txt")
        #expect(Self.diskTime(numbersStat, "atime")?.seconds == -2_147_483_648 && Self.diskTime(numbersStat, "mtime").map { $0.seconds == -1 && $0.nanoseconds == 500 } == true, "\(numbersStat)")
    }

    /// The calls busybox never makes, from a static C program: fchown and chown with -1,
    /// fchownat (AT_EMPTY_PATH, bad flags), lchown, utime, utimes (microseconds, EINVAL),
    /// futimesat, utimensat (UTIME_OMIT, AT_SYMLINK_NOFOLLOW, EINVAL, a NULL path), futimens,
    /// link, linkat (AT_SYMLINK_FOLLOW, AT_EMPTY_PATH) and a 150-byte symlink, against the
    /// same program run natively in a host folder; then debugfs reads the results.
    static let callsProgram = #"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/stat.h>
    #include <sys/syscall.h>
    #include <sys/time.h>
    #include <unistd.h>
    #include <utime.h>

    static void show(const char *what, long result) { printf("%s %ld %s\n", what, result, result < 0 ? strerror(errno) : ""); }
    /* The times only once they were set (a file's own are now; reads move a native atime). */
    static void status(const char *path, int flags, int times) {
        struct stat s;
        if (fstatat(AT_FDCWD, path, &s, flags) != 0) { printf("stat %s: %s\n", path, strerror(errno)); return; }
        printf("%s uid %u gid %u mode %o links %lu size %ld", path, s.st_uid, s.st_gid, s.st_mode & 07777, (unsigned long)s.st_nlink, (long)s.st_size);
        if (times) printf(" atime %ld.%09ld mtime %ld.%09ld", (long)s.st_atim.tv_sec, s.st_atim.tv_nsec, (long)s.st_mtim.tv_sec, s.st_mtim.tv_nsec);
        printf("\n");
    }

    int main(void) {
        umask(022);
        int fd = open("a", O_CREAT | O_WRONLY | O_TRUNC, 04755);
        show("write", write(fd, "abc", 3));
        show("fchown", fchown(fd, 100, 200)); status("a", 0, 0);
        show("fchown -1", fchown(fd, -1, 300)); status("a", 0, 0);
        show("chown -1 -1", chown("a", -1, -1)); status("a", 0, 0);
        show("fchownat", fchownat(AT_FDCWD, "a", 7, -1, 0)); status("a", 0, 0);
        show("fchownat bad flags", fchownat(AT_FDCWD, "a", 7, 7, 0x8000));
        show("fchownat empty path", fchownat(fd, "", 8, 9, AT_EMPTY_PATH)); status("a", 0, 0);
        show("symlink", symlink("a", "s"));
        show("lchown", lchown("s", 11, 12)); status("s", AT_SYMLINK_NOFOLLOW, 0); status("a", 0, 0);
        struct utimbuf whole = {1000, 2000};
        show("utime", utime("a", &whole)); status("a", 0, 1);
        struct timeval micro[2] = {{3000, 5}, {4000, 999999}};
        show("utimes", utimes("a", micro)); status("a", 0, 1);
        struct timeval badMicro[2] = {{1, 1000000}, {1, 0}};
        show("utimes bad", utimes("a", badMicro));
        struct timeval later[2] = {{3500, 1}, {4500, 2}};
        show("futimesat", futimesat(AT_FDCWD, "a", later)); status("a", 0, 1);
        struct timespec accessOnly[2] = {{5000, 123456789}, {0, UTIME_OMIT}};
        show("utimensat", utimensat(AT_FDCWD, "a", accessOnly, 0)); status("a", 0, 1);
        struct timespec modifyOnly[2] = {{0, UTIME_OMIT}, {6000, 1}};
        show("futimens", futimens(fd, modifyOnly)); status("a", 0, 1);
        struct timespec linkTimes[2] = {{7000, 7}, {8000, 8}};
        show("utimensat nofollow", utimensat(AT_FDCWD, "s", linkTimes, AT_SYMLINK_NOFOLLOW)); status("s", AT_SYMLINK_NOFOLLOW, 1); status("a", 0, 1);
        struct timespec invalid[2] = {{0, 1000000000}, {0, 0}};
        show("utimensat einval", utimensat(AT_FDCWD, "a", invalid, 0));
        struct timespec omit[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
        show("omit nothere", utimensat(AT_FDCWD, "nothere", omit, 0));
        show("utimensat null path", syscall(SYS_utimensat, AT_FDCWD, NULL, linkTimes, 0));
        show("futimens flags", syscall(SYS_utimensat, fd, NULL, linkTimes, AT_SYMLINK_NOFOLLOW));
        show("link", link("a", "b")); status("b", 0, 0);
        show("link exists", link("a", "b"));
        show("mkdir", mkdir("d", 0755));
        show("link dir", link("d", "d2"));
        show("linkat follow", linkat(AT_FDCWD, "s", AT_FDCWD, "c", AT_SYMLINK_FOLLOW)); status("c", 0, 0);
        show("linkat nofollow", linkat(AT_FDCWD, "s", AT_FDCWD, "s2", 0)); status("s2", AT_SYMLINK_NOFOLLOW, 0);
        show("linkat empty path", linkat(fd, "", AT_FDCWD, "e", AT_EMPTY_PATH)); status("e", 0, 0);
        show("linkat bad flags", linkat(AT_FDCWD, "a", AT_FDCWD, "f", 0x8000));
        show("link slash", link("a", "g/"));
        show("unlink", unlink("a")); status("b", 0, 1);
        char bytes[8] = {0};
        int reader = open("b", O_RDONLY);
        show("read", read(reader, bytes, 7));
        printf("b holds %s\n", bytes);
        char target[151];
        memset(target, 'q', 150);
        target[150] = 0;
        show("long symlink", symlink(target, "L"));
        char back[300];
        ssize_t length = readlink("L", back, sizeof back);
        printf("readlink %zd %d\n", length, length == 150 && memcmp(back, target, 150) == 0);
        status("L", AT_SYMLINK_NOFOLLOW, 0);
        show("fsync", fsync(fd));
        return 0;
    }
    """#

    /// A layer disk holding the rootfs folder `program` (a guest built at /prog), and a
    /// container disk chained on it; the container disk's path.
    func chain(holding program: URL, name: String) async throws -> String {
        let layer = path("\(name)-layer.vmdk"), container = path("\(name).vmdk")
        try await VMDKImage.create(at: layer, capacityBytes: 64 << 20, engine: engine)
        let builder = try Ext4Builder.create(on: try await VirtualDisk.open(path: layer, writable: true, engine: engine))
        try await builder.addTree(folder: program.path)
        try await builder.finish()
        try await VMDKImage.createChild(at: container, parent: layer, engine: engine)
        return container
    }

    /// `program`'s /prog run in the engine on a container disk chained onto a layer holding it,
    /// and natively in an empty folder: the disk (for checks after a sync), its root, and both runs.
    func runOnDiskAndNatively(_ program: URL, name: String) async throws
        -> (container: String, root: ContainerDiskRoot, guest: (status: Int32, stdout: String, stderr: String),
            native: (status: Int32, stdout: String, stderr: String)) {
        let container = try await chain(holding: program, name: name)
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let guest = try run(arguments: ["/prog"], root: root)
        let host = try HostFacts.makeTemporaryFolder("\(name)-native")
        defer { try? FileManager.default.removeItem(at: host) }
        let native = try HostFacts.run(program.appendingPathComponent("prog").path, [], currentDirectory: host)
        return (container, root, guest, (native.status, native.stdout, native.stderr))
    }

    @Test(.enabled(if: GlibcGuest.isAvailable, "needs gcc and glibc's static library"))
    func theCallsBusyboxNeverMakesAnswerAsNatively() async throws {
        let program = try GlibcGuest.rootfs(Self.callsProgram, name: "diskcalls")
        defer { try? FileManager.default.removeItem(at: program) }
        let (container, root, guest, native) = try await runOnDiskAndNatively(program, name: "calls")
        #expect(guest.status == 0 && native.status == 0, "\(guest.stderr) \(native.stderr)")
        #expect(guest.stdout == native.stdout, "guest:\n\(guest.stdout)\nnative:\n\(native.stdout)")
        // A few lines by value, so that the comparison cannot pass on two equal mistakes.
        for line in ["fchown -1 0 \na uid 100 gid 300 mode 755 links 1 size 3\n", "fchownat empty path 0 \na uid 8 gid 9 mode 755 links 1 size 3\n",
                     "utimes 0 \na uid 8 gid 9 mode 755 links 1 size 3 atime 3000.000005000 mtime 4000.999999000\n",
                     "futimesat 0 \na uid 8 gid 9 mode 755 links 1 size 3 atime 3500.000001000 mtime 4500.000002000\n",
                     "b uid 8 gid 9 mode 755 links 3 size 3 atime 5000.123456789 mtime 6000.000000001\n",
                     "futimens 0 \na uid 8 gid 9 mode 755 links 1 size 3 atime 5000.123456789 mtime 6000.000000001\n",
                     "s uid 11 gid 12 mode 777 links 1 size 1 atime 7000.000000007 mtime 8000.000000008\n",
                     "utimes bad -1 Invalid argument", "utimensat einval -1 Invalid argument", "omit nothere 0 ",
                     "utimensat null path -1 Bad address", "futimens flags -1 Invalid argument", "link exists -1 File exists",
                     "link dir -1 Operation not permitted", "linkat bad flags -1 Invalid argument", "link slash -1 No such file or directory",
                     "e uid 8 gid 9 mode 755 links 4 size 3\n", "b holds abc", "readlink 150 1", "L uid 0 gid 0 mode 777 links 1 size 150\n"] {
            #expect(guest.stdout.contains(line), "\(line) in\n\(guest.stdout)")
        }

        try root.sync()
        let raw = try checked(container)
        let b = try debugfs(raw, "stat /b")
        #expect(Self.diskField(b, "User") == "8" && Self.diskField(b, "Group") == "9" && Self.diskField(b, "Links") == "3", "\(b)")
        #expect(Self.diskTime(b, "atime").map { $0.seconds == 5000 && $0.nanoseconds == 123_456_789 } == true, "\(b)")
        #expect(Self.diskTime(b, "mtime").map { $0.seconds == 6000 && $0.nanoseconds == 1 } == true, "\(b)")
        #expect(try debugfs(raw, "cat /e") == "abc")
        let s2 = try debugfs(raw, "stat /s2")
        #expect(Self.diskField(s2, "Links") == "2" && Self.diskField(s2, "User") == "11" && s2.contains("Fast link dest: \"a\""), "\(s2)")
        #expect(Self.diskTime(s2, "mtime").map { $0.seconds == 8000 && $0.nanoseconds == 8 } == true, "\(s2)")
        #expect(try debugfs(raw, "cat /L") == String(repeating: "q", count: 150))
    }

    /// pwrite64 and pread64 at offsets Linux refuses, on a file of the container's own disk:
    /// a negative offset is EINVAL before anything else. The growth a pwrite is charged for
    /// was reckoned from its offset first, so 2^63 bytes before the start of a file with
    /// bytes in it overflowed and trapped, ending the engine and every container it served.
    static let negativeOffsets = #"""
    static void show(const char *label, i64 result) { print(label); print(" "); print_hex((u64)result); print("\n"); }
    int main(void) {
        char byte = 0;
        i64 fd = sys(SYS_open, "f", 0102, 0644); /* O_RDWR | O_CREAT, in the working folder */
        if (fd < 0) return 2;
        show("write", sys(SYS_write, fd, "0123456789", 10));
        show("pwrite at -2^63", sys(18, fd, "x", 1, 0x8000000000000000UL));
        show("pwrite of nothing at -2^63", sys(18, fd, "x", 0, 0x8000000000000000UL));
        show("pwrite at -1", sys(18, fd, "x", 1, -1L));
        show("pread at -2^63", sys(17, fd, &byte, 1, 0x8000000000000000UL));
        show("pwrite at 10", sys(18, fd, "x", 1, 10));
        show("pread at 10", sys(17, fd, &byte, 1, 10));
        return byte == 'x' ? 0 : 3;
    }
    """#

    @Test(.enabled(if: HostileGuest.isAvailable, "needs gcc"))
    func aNegativeOffsetIsRefusedAsNatively() async throws {
        let program = try HostileGuest.rootfs(Self.negativeOffsets, name: "negativeoffsets")
        defer { try? FileManager.default.removeItem(at: program) }
        let (container, root, guest, native) = try await runOnDiskAndNatively(program, name: "offsets")
        #expect(guest.status == 0 && native.status == 0, "\(guest.status) \(native.status) \(guest.stderr)")
        #expect(guest.stdout == native.stdout, "guest:\n\(guest.stdout)\nnative:\n\(native.stdout)")
        let invalid = "0xffffffffffffffea" // -EINVAL
        for line in ["pwrite at -2^63 \(invalid)", "pwrite of nothing at -2^63 \(invalid)", "pwrite at -1 \(invalid)",
                     "pread at -2^63 \(invalid)", "pwrite at 10 0x0000000000000001"] {
            #expect(guest.stdout.contains(line), "\(line) in\n\(guest.stdout)")
        }
        try root.sync()
        #expect(try debugfs(try checked(container), "cat /f") == "0123456789x")
    }

    /// ftruncate of a file whose last name went while it was open: `forget` gave its bytes
    /// back to the growth budget at the unlink, and ftruncate gave them back again as it
    /// shrank the memfd, so each round grew the budget by the file's size — past the disk's
    /// free space, letting a guest fill the engine's memory with memfds. Now the shrinking of
    /// such a file gives nothing back, and growing a named file past the free space is ENOSPC.
    static let unlinkedShrinks = #"""
    static void show(const char *label, i64 result) { print(label); print(" "); print_hex((u64)result); print("\n"); }
    int main(void) {
        for (int round = 0; round < 16; round++) {
            i64 fd = sys(SYS_open, "t", 0102, 0644); /* O_RDWR | O_CREAT */
            if (fd < 0) return 2;
            if (sys(77, fd, 16L << 20) != 0) return 3; /* ftruncate */
            if (sys(87, "t") != 0) return 4; /* unlink */
            if (sys(77, fd, 0L) != 0) return 5;
            sys(SYS_close, fd);
        }
        i64 fd = sys(SYS_open, "big", 0102, 0644);
        if (fd < 0) return 6;
        show("ftruncate past the free space", sys(77, fd, 128L << 20));
        return 0;
    }
    """#

    @Test(.enabled(if: HostileGuest.isAvailable, "needs gcc"))
    func shrinkingAnUnlinkedFileGivesNothingBack() async throws {
        let program = try HostileGuest.rootfs(Self.unlinkedShrinks, name: "unlinkedshrinks")
        defer { try? FileManager.default.removeItem(at: program) }
        let container = try await chain(holding: program, name: "shrinks")
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let guest = try run(arguments: ["/prog"], root: root)
        #expect(guest.status == 0, "\(guest.status) \(guest.stderr)")
        #expect(guest.stdout.contains("ftruncate past the free space 0xffffffffffffffe4"), "\(guest.stdout)") // -ENOSPC
        #expect(root.growthBudget.left < 64 << 20, "budget \(root.growthBudget.left)")
        try root.sync()
        _ = try checked(container)
    }

    /// A guest running as a user (an image's USER) owns what it creates, may set the times
    /// and the group (its own) of its files, and gets EPERM for giving a file away, for
    /// another group, and for the times of root's files, as on Linux.
    @Test func aUserGuestOwnsWhatItCreatesAndMayNotGiveItAway() async throws {
        let (_, container) = try await chain()
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let script = """
        echo x > /tmp/mine && mkdir /tmp/dir && ln -s mine /tmp/link && stat -c '%u %g' /tmp/mine /tmp/dir /tmp/link
        touch -d '2001-02-03 04:05:06' /tmp/mine; echo "touch $?"
        chgrp 1000 /tmp/mine; echo "chgrp own $?"
        chown 0 /tmp/mine; echo "chown away $?"
        chgrp 5 /tmp/mine; echo "chgrp other $?"
        touch -d '2001-02-03 04:05:06' /bin/busybox; echo "touch root's $?"
        chown 1000 /bin/busybox; echo "chown root's $?"
        stat -c '%u %g %Y' /tmp/mine /bin/busybox
        """
        let result = try run(arguments: ["/bin/sh", "-c", script], root: root, identity: GuestIdentity(uid: 1000, gid: 1000))
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(Array(lines.prefix(9)) == ["1000 1000", "1000 1000", "1000 1000", "touch 0", "chgrp own 0", "chown away 1", "chgrp other 1",
                                           "touch root's 1", "chown root's 1"], "\(result.stdout) \(result.stderr)")
        #expect(lines.count == 11 && lines[9] == "1000 1000 981173106" && lines[10].hasPrefix("0 0 ") && lines[10] != "0 0 981173106", "\(result.stdout)")
        #expect(result.stderr.components(separatedBy: "Operation not permitted").count - 1 == 4, "\(result.stderr)")
        try root.sync()
        let raw = try checked(container)
        let mine = try debugfs(raw, "stat /tmp/mine")
        #expect(Self.diskField(mine, "User") == "1000" && Self.diskField(mine, "Group") == "1000", "\(mine)")
        #expect(Self.diskTime(mine, "mtime")?.seconds == 981173106, "\(mine)")
        #expect(Self.diskField(try debugfs(raw, "stat /tmp/dir"), "User") == "1000")
        #expect(Self.diskField(try debugfs(raw, "stat /bin/busybox"), "User") == "0")
    }

    /// On an image's read-only chain, chown, touch and ln answer EROFS as every change does.
    @Test func anImagesChainRefusesOwnersTimesAndLinks() async throws {
        let (layer, _) = try await chain()
        let image = try await DiskRootFileSystem.open(path: layer, engine: engine)
        let result = try run("chown 1 /bin/busybox; echo $?; touch -c /bin/busybox; echo $?; ln /bin/busybox /l; echo $?; ln -s /bin/busybox /s; echo $?", root: image)
        #expect(result.stdout == "1\n1\n1\n1\n", "\(result.stdout)")
        #expect(result.stderr.components(separatedBy: "Read-only file system").count - 1 == 4, "\(result.stderr)")
    }

    /// A container killed (SIGKILL to `vmfork run --disk --writable`) while it writes and
    /// syncs in a loop leaves a disk qemu-img check accepts; e2fsck at most replays its
    /// journal, the engine's recovery leaves it clean, the files synced before each loop read
    /// back whole, and the next container on the disk writes again.
    @Test func aKilledContainerLosesNothingItSynced() async throws {
        let (_, container) = try await chain()
        let vmfork = HostFacts.productsFolder.appendingPathComponent("vmfork").path
        let synced = String(repeating: "synced line\n", count: 500)
        var syncedRounds: [Int] = []
        for round in 1...3 {
            let output = path("out\(round).txt")
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: vmfork)
            process.arguments = ["run", "--disk", container, "--writable", "--", "/bin/sh", "-c", """
                i=0; while [ $i -lt 500 ]; do echo synced line; i=$((i+1)); done > /kept\(round).txt && sync && echo synced && \
                n=0; while true; do echo data $n > /loop$((n % 50)); mkdir -p /dirs/$n; rm -rf /dirs/$((n - 3)); sync; n=$((n+1)); done
                """]
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            let errors = path("err\(round).txt")
            _ = FileManager.default.createFile(atPath: errors, contents: nil)
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
            try process.run()
            // On a loaded host the container may take a while to get there.
            let deadline = Date().addingTimeInterval(180)
            func reported() -> Bool { String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: output))) ?? Data(), as: UTF8.self).contains("synced") }
            while !reported(), Date() < deadline, process.isRunning {
                try await Task.sleep(for: .milliseconds(10))
            }
            if reported() {
                syncedRounds.append(round)
            } else {
                Issue.record("round \(round): the container never reported its sync: \(String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: errors))) ?? Data(), as: UTF8.self))")
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 50...600)))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal, "round \(round): the container ended on its own")

            let check = try HostFacts.run(Self.qemuImg, ["check", container])
            #expect(check.status == 0, "round \(round): qemu-img check: \(check.stdout)\(check.stderr)")
            let raw = container + ".raw"
            try? FileManager.default.removeItem(atPath: raw)
            #expect(try HostFacts.run(Self.qemuImg, ["convert", "-O", "raw", container, raw]).status == 0)
            let repair = try HostFacts.run(Self.e2fsck, ["-fy", raw])
            #expect(repair.status == 0 || repair.status == 1, "round \(round): e2fsck -fy: \(repair.stdout)")
            for kept in syncedRounds {
                #expect(try debugfs(raw, "cat /kept\(kept).txt") == synced, "round \(round): /kept\(kept).txt")
            }
            // The engine's own recovery (a writable open replays the journal) leaves a disk
            // e2fsck finds clean without repairs: the kill fell between whole commits.
            _ = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: container, writable: true, engine: engine))
            let recovered = try checked(container)
            for kept in syncedRounds {
                #expect(try debugfs(recovered, "cat /kept\(kept).txt") == synced, "round \(round), after recovery: /kept\(kept).txt")
            }
        }
    }
}
