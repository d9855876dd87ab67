import CShims
import Foundation
import HostSystem
import ProcessVM
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct GuestFilesTests {
    // MARK: - Setting up

    @Test func rootfsMustBeAFolder() throws {
        let folder = try HostFacts.makeTemporaryFolder("guestfiles-notafolder")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("plain-file").path
        try "x".write(toFile: file, atomically: false, encoding: .utf8)
        #expect(throws: SystemError(call: "open(rootfs \(file))", errno: ENOTDIR)) {
            _ = try GuestFiles(rootfs: file, stdin: 0, stdout: 1, stderr: 2)
        }
        let missing = folder.appendingPathComponent("missing").path
        #expect(throws: SystemError(call: "open(rootfs \(missing))", errno: ENOENT)) {
            _ = try GuestFiles(rootfs: missing, stdin: 0, stdout: 1, stderr: 2)
        }
    }

    @Test func standardStreamsAreDuplicatesOfTheCallersDescriptors() throws {
        let rootfs = try GuestRootfs()
        for fd: Int32 in 0...2 {
            let host = try #require(rootfs.files.hostDescriptor(of: fd))
            #expect(host > 2)
            let target = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(host)")
            #expect(target == "/dev/null")
        }
        #expect(rootfs.write(1, "abc") == 3)
        #expect(rootfs.open("/data/hello.txt") == 3)
    }

    // MARK: - Differential checks against the host

    @Test func fstatBytesEqualTheHosts() throws {
        let rootfs = try GuestRootfs()
        let busybox = rootfs.open("/bin/busybox")
        #expect(busybox == 3)
        var buffer = [UInt8](repeating: 0, count: 144)
        #expect(buffer.withUnsafeMutableBytes { rootfs.files.fstat(Int32(busybox), into: $0) } == 0)
        #expect(buffer == hostStatBytes(rootfs.path("bin/busybox")))

        #expect(rootfs.stat("/data").bytes == hostStatBytes(rootfs.path("data")))
        #expect(rootfs.stat("/bin/sh").bytes == hostStatBytes(rootfs.path("bin/busybox")))
        #expect(rootfs.stat("/abs", flags: AT_SYMLINK_NOFOLLOW).bytes == hostStatBytes(rootfs.path("abs"), followSymlink: false))
        #expect(rootfs.stat("/abs").bytes == hostStatBytes(rootfs.path("etc")))
        #expect(rootfs.stat("", flags: CSHIMS_AT_EMPTY_PATH, dirfd: Int32(busybox)).bytes == buffer)
        #expect(rootfs.stat("", flags: CSHIMS_AT_EMPTY_PATH).bytes == hostStatBytes(rootfs.folder.path))
        #expect(rootfs.stat("").result == -Int(ENOENT))
        #expect(rootfs.stat("/data/nothing-here").result == -Int(ENOENT))
        #expect(rootfs.stat("/data", flags: 0x4000_0000).result == -Int(EINVAL))

        var tooSmall = [UInt8](repeating: 0, count: 100)
        #expect(tooSmall.withUnsafeMutableBytes { rootfs.files.fstat(Int32(busybox), into: $0) } == -Int(EFAULT))
    }

    @Test func statxBytesEqualTheHosts() throws {
        let rootfs = try GuestRootfs()
        let everything: UInt32 = 0xfff
        let cases: [(guest: String, host: String, flags: Int32)] = [
            ("/bin/busybox", "bin/busybox", 0),
            ("/abs", "abs", AT_SYMLINK_NOFOLLOW),
            ("/abs", "etc", 0),
            ("data/sub", "data/sub", 0),
        ]
        for (guestPath, hostPath, flags) in cases {
            var guest = [UInt8](repeating: 0, count: 256)
            let result = guestPath.withCString { path in
                guest.withUnsafeMutableBytes { rootfs.files.statx(dirfd: AT_FDCWD, path: path, flags: flags, mask: everything, into: $0) }
            }
            var host = [UInt8](repeating: 0, count: 256)
            let hostResult = host.withUnsafeMutableBytes { cshims_statx_bytes(AT_FDCWD, rootfs.path(hostPath), flags, everything, $0.baseAddress) }
            #expect(result == 0 && hostResult == 0)
            #expect(guest == host, "statx of \(guestPath)")
        }
        var buffer = [UInt8](repeating: 0, count: 256)
        let reserved = buffer.withUnsafeMutableBytes { rootfs.files.statx(dirfd: AT_FDCWD, path: "/bin", flags: 0, mask: 0x8000_0000, into: $0) }
        #expect(reserved == -Int(EINVAL))
        let bothSyncTypes = buffer.withUnsafeMutableBytes { rootfs.files.statx(dirfd: AT_FDCWD, path: "/bin", flags: CSHIMS_AT_STATX_SYNC_TYPE, mask: 1, into: $0) }
        #expect(bothSyncTypes == -Int(EINVAL))
    }

    @Test func getdents64ListsWhatTheHostLists() throws {
        let rootfs = try GuestRootfs()
        let many = rootfs.open("/data/many", O_RDONLY | O_DIRECTORY)
        #expect(many >= 0)
        let guestListing = readDirectory { rootfs.files.getdents64(Int32(many), into: $0) }
        let hostDirectory = try FileDescriptor.open(rootfs.path("data/many"), O_RDONLY | O_DIRECTORY)
        let hostListing = readDirectory { cshims_getdents64(hostDirectory.rawValue, $0.baseAddress, $0.count) }
        #expect(guestListing.count == 42)
        #expect(guestListing == hostListing)

        let root = rootfs.open("/", O_RDONLY | O_DIRECTORY)
        let rootListing = readDirectory { rootfs.files.getdents64(Int32(root), into: $0) }
        let hostRoot = try FileDescriptor.open(rootfs.folder.path, O_RDONLY | O_DIRECTORY)
        let hostRootListing = readDirectory { cshims_getdents64(hostRoot.rawValue, $0.baseAddress, $0.count) }
        let rootInode = try #require(rootfs.inode("/"))
        #expect(rootListing.filter { $0.name != ".." } == hostRootListing.filter { $0.name != ".." })
        #expect(rootListing.first { $0.name == ".." }?.inode == rootInode, "the root's .. is the root itself")
        #expect(hostRootListing.first { $0.name == ".." }?.inode != rootInode)

        let file = rootfs.open("/data/hello.txt")
        var buffer = [UInt8](repeating: 0, count: 1024)
        #expect(buffer.withUnsafeMutableBytes { rootfs.files.getdents64(Int32(file), into: $0) } == -Int(ENOTDIR))
        #expect(buffer.withUnsafeMutableBytes { rootfs.files.getdents64(99, into: $0) } == -Int(EBADF))
    }

    @Test func readPreadAndLseekMatchTheHost() throws {
        let rootfs = try GuestRootfs()
        let host = try #require(FileManager.default.contents(atPath: "/bin/busybox")).map { $0 }
        let fd = Int32(rootfs.open("/bin/sh"))
        #expect(fd == 3)
        #expect(rootfs.read(Int(fd), count: 4096) == Array(host[0..<4096]))
        #expect(rootfs.read(Int(fd), count: 100) == Array(host[4096..<4196]))
        #expect(rootfs.files.lseek(fd, offset: 0, whence: SEEK_CUR) == 4196)

        var chunk = [UInt8](repeating: 0, count: 333)
        #expect(chunk.withUnsafeMutableBytes { rootfs.files.pread(fd, into: $0, offset: 100_000) } == 333)
        #expect(chunk == Array(host[100_000..<100_333]))
        #expect(rootfs.files.lseek(fd, offset: 0, whence: SEEK_CUR) == 4196, "pread leaves the offset alone")
        #expect(chunk.withUnsafeMutableBytes { rootfs.files.pread(fd, into: $0, offset: -1) } == -Int(EINVAL))

        #expect(rootfs.files.lseek(fd, offset: 0, whence: SEEK_END) == host.count)
        #expect(rootfs.read(Int(fd)) == [])
        #expect(rootfs.files.lseek(fd, offset: -10, whence: SEEK_END) == host.count - 10)
        #expect(rootfs.read(Int(fd)) == Array(host[(host.count - 10)...]))
        #expect(rootfs.files.lseek(fd, offset: 0, whence: 17) == -Int(EINVAL))
        #expect(rootfs.files.lseek(fd, offset: -1, whence: SEEK_SET) == -Int(EINVAL))
        #expect(rootfs.read(Int(fd)) == [])
        #expect(rootfs.write(Int(fd), "x") == -Int(EBADF))
        #expect(Array("x".utf8).withUnsafeBytes { rootfs.files.pwrite(fd, from: $0, offset: 0) } == -Int(EBADF))
        #expect(rootfs.read(Int(fd), count: 4)?.elementsEqual([0x7f, 0x45, 0x4c, 0x46]) == false)
        #expect(rootfs.files.lseek(fd, offset: 0, whence: SEEK_SET) == 0)
        #expect(rootfs.read(Int(fd), count: 4) == [0x7f, 0x45, 0x4c, 0x46], "busybox is an ELF file")
    }

    // MARK: - Confinement

    @Test func symlinksAndDotDotStayInsideTheRoot() throws {
        let rootfs = try GuestRootfs()
        let inside: Result<String, GuestErrno> = .success(rootfs.hostnameMarker)
        #expect(rootfs.contents("/etc/hostname") == inside)
        #expect(rootfs.contents("/escape/etc/hostname") == inside)
        #expect(rootfs.contents("/escape/escape/escape/etc/hostname") == inside)
        #expect(rootfs.contents("/abs/hostname") == inside)
        #expect(rootfs.contents("/hostfile") == inside)
        #expect(rootfs.contents("/../../../../../etc/hostname") == inside)
        #expect(rootfs.contents("../../etc/hostname") == inside)
        #expect(rootfs.contents("/data/up/data/up/etc/hostname") == inside)

        let sub = rootfs.open("/data/sub", O_RDONLY | O_DIRECTORY)
        #expect(sub >= 0)
        #expect(rootfs.contents("../../../../../etc/hostname", dirfd: Int32(sub)) == inside)
        #expect(rootfs.contents("deep/file.txt", dirfd: Int32(sub)) == .success("deep\n"))
        #expect(rootfs.contents("/etc/hostname", dirfd: 12345) == inside, "an absolute path ignores dirfd")

        #expect(rootfs.chdir("/data/sub/deep") == 0)
        #expect(rootfs.contents("../../../../../../etc/hostname") == inside)
        #expect(rootfs.contents("file.txt") == .success("deep\n"))

        let rootInode = try #require(rootfs.inode("/"))
        #expect(rootfs.inode("/escape") == rootInode)
        #expect(rootfs.inode("/..") == rootInode)
        #expect(rootfs.inode("/abs") == rootfs.inode("/etc"))
        #expect(rootfs.readlink("/escape") == .success("../../../../.."))
        #expect(rootfs.readlink("/hostfile") == .success("/etc/hostname"))
        #expect(rootfs.readlink("/abs/hostname") == .failure(GuestErrno(EINVAL)))
        #expect(rootfs.readlink("/nothing") == .failure(GuestErrno(ENOENT)))

        let escapeFD = rootfs.open("/escape", O_RDONLY | O_DIRECTORY)
        #expect(rootfs.files.fchdir(Int32(escapeFD)) == 0)
        #expect(rootfs.cwd() == "/")
    }

    @Test func symlinkChainsAndLoopsGiveELOOP() throws {
        let rootfs = try GuestRootfs()
        #expect(rootfs.contents("/chain/link0") == .failure(GuestErrno(ELOOP)), "50 links are more than Linux's 40")
        #expect(rootfs.contents("/chain/link15") == .success(GuestRootfs.helloText), "35 links resolve")
        #expect(rootfs.contents("/loop_a") == .failure(GuestErrno(ELOOP)))
        #expect(rootfs.contents("/loop_a/x") == .failure(GuestErrno(ELOOP)))
        #expect(rootfs.stat("/loop_b").result == -Int(ELOOP))
        #expect(rootfs.stat("/loop_b", flags: AT_SYMLINK_NOFOLLOW).result == 0)
        #expect(rootfs.readlink("/loop_b") == .success("loop_a"))
        #expect(rootfs.open("/abs", O_RDONLY | O_NOFOLLOW) == -Int(ELOOP))
        let linkItself = rootfs.open("/abs", CSHIMS_O_PATH | O_NOFOLLOW)
        #expect(linkItself >= 0)
        #expect(rootfs.readlink("", dirfd: Int32(linkItself)) == .success("/etc"))
        #expect(rootfs.chdir("/loop_a") == -Int(ELOOP))
    }

    @Test func writesToTheRootfsGiveEROFS() throws {
        let rootfs = try GuestRootfs()
        let before = try Data(contentsOf: URL(fileURLWithPath: rootfs.path("etc/hostname")))
        #expect(rootfs.open("/etc/hostname", O_WRONLY) == -Int(EROFS))
        #expect(rootfs.open("/etc/hostname", O_RDWR) == -Int(EROFS))
        #expect(rootfs.open("/etc/hostname", O_RDONLY | O_TRUNC) == -Int(EROFS))
        #expect(rootfs.open("/hostfile", O_WRONLY | O_APPEND) == -Int(EROFS))
        #expect(rootfs.open("/etc/new-file", O_WRONLY | O_CREAT) == -Int(EROFS))
        #expect(rootfs.open("/escape/new-file", O_WRONLY | O_CREAT) == -Int(EROFS))
        #expect(rootfs.open("/escape/../new-file", O_RDONLY | O_CREAT) == -Int(EROFS))
        #expect(rootfs.open("/no-such-folder/new-file", O_WRONLY | O_CREAT) == -Int(ENOENT))
        #expect(rootfs.open("/etc/hostname", O_WRONLY | O_CREAT | O_EXCL) == -Int(EEXIST))
        #expect(rootfs.open("/etc", O_WRONLY) == -Int(EISDIR))
        #expect(rootfs.open("/etc", O_RDONLY | O_DIRECTORY | O_CREAT) == -Int(EINVAL))
        #expect(rootfs.open("/data", O_WRONLY | CSHIMS_O_TMPFILE) == -Int(EROFS))
        #expect(rootfs.open("/data", O_RDONLY | CSHIMS_O_TMPFILE) == -Int(EINVAL))

        let existing = rootfs.open("/etc/hostname", O_RDONLY | O_CREAT)
        #expect(existing >= 0, "O_CREAT of an existing file opened read-only succeeds, as on a read-only mount")
        #expect(rootfs.read(existing) == Array(rootfs.hostnameMarker.utf8))

        #expect(rootfs.access("/etc/hostname", R_OK) == 0)
        #expect(rootfs.access("/bin/busybox", X_OK) == 0)
        #expect(rootfs.access("/etc/hostname", W_OK) == -Int(EROFS))
        #expect(rootfs.access("/etc", R_OK | W_OK) == -Int(EROFS))
        #expect(rootfs.access("/missing", W_OK) == -Int(ENOENT))
        #expect(rootfs.access("/etc/hostname", 8) == -Int(EINVAL))
        #expect(rootfs.access("/dev/null", W_OK) == 0)

        #expect(try Data(contentsOf: URL(fileURLWithPath: rootfs.path("etc/hostname"))) == before)
        #expect(!FileManager.default.fileExists(atPath: rootfs.path("etc/new-file")))
        #expect(!FileManager.default.fileExists(atPath: rootfs.path("new-file")))
        #expect(!FileManager.default.fileExists(atPath: rootfs.folder.deletingLastPathComponent().appendingPathComponent("new-file").path))
    }

    @Test func allowlistedDevicesReachTheHostDevices() throws {
        let rootfs = try GuestRootfs()
        let null = rootfs.open("/dev/null", O_WRONLY)
        #expect(null == 3)
        #expect(rootfs.write(null, "0123456789") == 10)
        #expect(rootfs.stat("/dev//null").bytes == hostStatBytes("/dev/null"))
        #expect(rootfs.open("/dev/null/") == -Int(ENOTDIR))

        let zero = rootfs.open("/dev/zero")
        #expect(rootfs.read(zero, count: 64) == [UInt8](repeating: 0, count: 64))
        let random = rootfs.open("/dev/urandom")
        let bytes = try #require(rootfs.read(random, count: 64))
        #expect(bytes.count == 64 && bytes != [UInt8](repeating: 0, count: 64))
        #expect(rootfs.open("/dev/random") >= 0)

        #expect(rootfs.chdir("/dev") == 0)
        #expect(rootfs.contents("zero").map(\.count) == .success(4096), "a relative path from /dev reaches the allowlist")
        #expect(rootfs.open("/dev/sda") == -Int(ENOENT), "other /dev paths are looked up in the rootfs")
        #expect(rootfs.open("/dev/null", O_WRONLY | O_CREAT | O_EXCL) == -Int(EEXIST))
    }

    @Test(.enabled(if: HostFacts.isRoot, "mknod needs root"))
    func deviceNodesInsideTheRootfsCannotBeOpened() throws {
        let rootfs = try GuestRootfs()
        var hostNull = stat()
        #expect(stat("/dev/null", &hostNull) == 0)
        #expect(mknod(rootfs.path("dev/disk"), S_IFCHR | 0o666, hostNull.st_rdev) == 0)
        #expect(rootfs.open("/dev/disk", O_RDONLY) == -Int(EACCES))
        #expect(rootfs.open("/dev/disk", O_WRONLY) == -Int(EACCES))
        #expect(rootfs.stat("/dev/disk").result == 0, "stat of a device node still works, as on a nodev mount")
    }

    @Test func badPathsGiveLinuxErrors() throws {
        let rootfs = try GuestRootfs()
        #expect(rootfs.open(String(repeating: "a", count: 4096)) == -Int(ENAMETOOLONG))
        #expect(rootfs.open("") == -Int(ENOENT))
        #expect(rootfs.open("data/hello.txt", dirfd: 77) == -Int(EBADF))
        #expect(rootfs.open("data/hello.txt", dirfd: -5) == -Int(EBADF))
        let file = rootfs.open("/data/hello.txt")
        #expect(rootfs.open("x", dirfd: Int32(file)) == -Int(ENOTDIR))
        #expect(rootfs.open("/data/hello.txt/") == -Int(ENOTDIR))
        #expect(rootfs.open("/data/hello.txt", O_RDONLY | O_DIRECTORY) == -Int(ENOTDIR))
        #expect(rootfs.open("/data/hello.txt", 0x4000_0000 | O_RDONLY) >= 0, "unknown flag bits are ignored, as openat(2) does")
    }

    @Test func pathsAreBytesNotStrings() throws {
        let rootfs = try GuestRootfs()
        let name: [CChar] = Array("data/caf".utf8CString.dropLast()) + [CChar(bitPattern: 0xE9), CChar(bitPattern: 0xFF), 0]
        let hostName = Array(rootfs.folder.path.utf8CString.dropLast()) + [CChar(UInt8(ascii: "/"))] + name
        let created = open(hostName, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        #expect(created >= 0 && Glibc.write(created, "latin-1 name\n", 13) == 13 && Glibc.close(created) == 0)
        let fd = name.withUnsafeBufferPointer { rootfs.files.openat(dirfd: AT_FDCWD, path: $0.baseAddress!, flags: O_RDONLY, mode: 0) }
        #expect(fd == 3)
        #expect(rootfs.read(fd) == Array("latin-1 name\n".utf8))
        let repaired = String(decoding: name.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #expect(rootfs.open(repaired) == -Int(ENOENT), "the name is looked up byte for byte")
    }

    @Test func emptyPathsAndNoFollowFlags() throws {
        let rootfs = try GuestRootfs()
        let link = Int32(rootfs.open("/loop_a", CSHIMS_O_PATH | O_NOFOLLOW))
        #expect(link == 3)
        #expect(rootfs.access("/loop_a", R_OK) == -Int(ELOOP))
        #expect(rootfs.access("/loop_a", R_OK, flags: AT_SYMLINK_NOFOLLOW) == 0)
        #expect("".withCString { rootfs.files.faccessat(dirfd: link, path: $0, mode: W_OK, flags: CSHIMS_AT_EMPTY_PATH) } == -Int(EROFS))
        #expect("".withCString { rootfs.files.faccessat(dirfd: 0, path: $0, mode: W_OK, flags: CSHIMS_AT_EMPTY_PATH) } == 0)
        #expect(rootfs.access("", R_OK) == -Int(ENOENT))

        var viaFD = [UInt8](repeating: 0, count: 256)
        var viaPath = [UInt8](repeating: 0, count: 256)
        #expect(viaFD.withUnsafeMutableBytes { buffer in
            "".withCString { rootfs.files.statx(dirfd: link, path: $0, flags: CSHIMS_AT_EMPTY_PATH, mask: 0xfff, into: buffer) }
        } == 0)
        #expect(viaPath.withUnsafeMutableBytes { buffer in
            "/loop_a".withCString { rootfs.files.statx(dirfd: AT_FDCWD, path: $0, flags: AT_SYMLINK_NOFOLLOW, mask: 0xfff, into: buffer) }
        } == 0)
        #expect(viaFD == viaPath)
        #expect(rootfs.readlink("", dirfd: 0) == .failure(GuestErrno(ENOENT)))
        #expect(rootfs.readlink("") == .failure(GuestErrno(ENOENT)))
        var noRoom = [UInt8]()
        #expect(noRoom.withUnsafeMutableBytes { buffer in "/abs".withCString { rootfs.files.readlinkat(dirfd: AT_FDCWD, path: $0, into: buffer) } } == -Int(EINVAL))
    }

    // MARK: - Descriptor semantics

    @Test func descriptorsAreAllocatedLowestFirst() throws {
        let rootfs = try GuestRootfs()
        #expect((0..<3).map { _ in rootfs.open("/data/hello.txt") } == [3, 4, 5])
        #expect(rootfs.files.close(4) == 0)
        #expect(rootfs.files.close(4) == -Int(EBADF))
        #expect(rootfs.open("/etc/hostname") == 4)
        #expect(rootfs.files.close(0) == 0)
        #expect(rootfs.files.dup(5) == 0)
        #expect(rootfs.files.fcntl(3, command: F_DUPFD, argument: 4) == 6)
        #expect(rootfs.files.fcntl(3, command: F_DUPFD, argument: 100) == 100)
        #expect(rootfs.open("/etc/hostname") == 7)
    }

    @Test func dupSharesTheOffset() throws {
        let rootfs = try GuestRootfs()
        let fd = Int32(rootfs.open("/data/hello.txt"))
        let copy = Int32(rootfs.files.dup(fd))
        #expect(copy == 4)
        #expect(rootfs.read(Int(fd), count: 5) == Array("hello".utf8))
        #expect(rootfs.files.lseek(copy, offset: 0, whence: SEEK_CUR) == 5)
        #expect(rootfs.read(Int(copy), count: 5) == Array(" from".utf8))
        #expect(rootfs.files.hostDescriptor(of: fd) == rootfs.files.hostDescriptor(of: copy))
        #expect(rootfs.files.close(fd) == 0)
        #expect(rootfs.read(Int(copy), count: 5) == Array(" insi".utf8), "the copy outlives the original")

        let separate = Int32(rootfs.open("/data/hello.txt"))
        #expect(rootfs.files.lseek(separate, offset: 0, whence: SEEK_CUR) == 0, "a second open has its own offset")
    }

    @Test func dup2OntoAnOpenDescriptorClosesIt() throws {
        let rootfs = try GuestRootfs()
        let hello = Int32(rootfs.open("/data/hello.txt"))
        let deep = Int32(rootfs.open("/data/sub/deep/file.txt"))
        #expect(hostDescriptors(under: rootfs.folder).contains { $0.hasSuffix("/deep/file.txt") })
        #expect(rootfs.files.dup2(hello, deep) == Int(deep))
        #expect(!hostDescriptors(under: rootfs.folder).contains { $0.hasSuffix("/deep/file.txt") }, "the replaced file's host descriptor is closed")
        #expect(rootfs.read(Int(deep)) == Array(GuestRootfs.helloText.utf8))
        #expect(rootfs.files.dup2(hello, hello) == Int(hello))
        #expect(rootfs.files.dup2(hello, 1024) == -Int(EBADF))
        #expect(rootfs.files.dup2(hello, -1) == -Int(EBADF))
        #expect(rootfs.files.dup2(50, 51) == -Int(EBADF))
        #expect(rootfs.files.dup2(hello, 200) == 200)
        #expect(rootfs.files.dup3(hello, hello, flags: 0) == -Int(EINVAL))
        #expect(rootfs.files.dup3(hello, 9, flags: O_NONBLOCK) == -Int(EINVAL))
        #expect(rootfs.files.dup3(hello, 9, flags: O_CLOEXEC) == 9)
        #expect(rootfs.files.fcntl(9, command: F_GETFD, argument: 0) == Int(FD_CLOEXEC))
    }

    @Test func closeOnExecIsPerDescriptor() throws {
        let rootfs = try GuestRootfs()
        let marked = Int32(rootfs.open("/data/hello.txt", O_RDONLY | O_CLOEXEC))
        #expect(rootfs.files.fcntl(marked, command: F_GETFD, argument: 0) == Int(FD_CLOEXEC))
        let plainCopy = Int32(rootfs.files.dup(marked))
        #expect(rootfs.files.fcntl(plainCopy, command: F_GETFD, argument: 0) == 0, "dup clears close-on-exec")
        let markedCopy = Int32(rootfs.files.fcntl(marked, command: F_DUPFD_CLOEXEC, argument: 0))
        #expect(markedCopy == 5)
        #expect(rootfs.files.fcntl(markedCopy, command: F_GETFD, argument: 0) == Int(FD_CLOEXEC))
        #expect(rootfs.files.fcntl(marked, command: F_SETFD, argument: 0) == 0)
        #expect(rootfs.files.fcntl(marked, command: F_GETFD, argument: 0) == 0)
        #expect(rootfs.files.fcntl(plainCopy, command: F_SETFD, argument: Int(FD_CLOEXEC)) == 0)

        rootfs.files.closeDescriptorsMarkedCloseOnExec()
        #expect(rootfs.files.hostDescriptor(of: marked) != nil)
        #expect(rootfs.files.hostDescriptor(of: plainCopy) == nil)
        #expect(rootfs.files.hostDescriptor(of: markedCopy) == nil)
        #expect(rootfs.files.hostDescriptor(of: 1) != nil)
    }

    @Test func fcntlStatusFlagsAndUnknownCommands() throws {
        let rootfs = try GuestRootfs()
        let fd = Int32(rootfs.open("/data/hello.txt"))
        let hostFD = try #require(rootfs.files.hostDescriptor(of: fd))
        let flags = rootfs.files.fcntl(fd, command: F_GETFL, argument: 0)
        #expect(flags == Int(Glibc.fcntl(hostFD, F_GETFL)))
        #expect(Int32(flags) & O_ACCMODE == O_RDONLY)
        #expect(rootfs.files.fcntl(fd, command: F_SETFL, argument: Int(O_NONBLOCK | O_ASYNC)) == 0)
        let updated = Int32(rootfs.files.fcntl(fd, command: F_GETFL, argument: 0))
        #expect(updated & O_NONBLOCK != 0 && updated & O_ASYNC == 0, "O_ASYNC is never set on the host")
        #expect(rootfs.files.fcntl(fd, command: F_SETLK, argument: 0) == -Int(EINVAL))
        #expect(rootfs.files.fcntl(fd, command: 9999, argument: 0) == -Int(EINVAL))
        #expect(rootfs.files.fcntl(fd, command: F_DUPFD, argument: -1) == -Int(EINVAL))
        #expect(rootfs.files.fcntl(fd, command: F_DUPFD, argument: 1024) == -Int(EINVAL))
        #expect(rootfs.files.fcntl(88, command: F_GETFD, argument: 0) == -Int(EBADF))
    }

    @Test func badDescriptorsGiveEBADF() throws {
        let rootfs = try GuestRootfs()
        var buffer = [UInt8](repeating: 0, count: 256)
        for fd: Int32 in [-1, 3, 999, 1024, Int32.max, Int32.min] {
            #expect(buffer.withUnsafeMutableBytes { rootfs.files.read(fd, into: $0) } == -Int(EBADF))
            #expect(buffer.withUnsafeMutableBytes { rootfs.files.pread(fd, into: $0, offset: 0) } == -Int(EBADF))
            #expect(buffer.withUnsafeBytes { rootfs.files.write(fd, from: $0) } == -Int(EBADF))
            #expect(buffer.withUnsafeMutableBytes { rootfs.files.fstat(fd, into: $0) } == -Int(EBADF))
            #expect(buffer.withUnsafeMutableBytes { rootfs.files.getdents64(fd, into: $0) } == -Int(EBADF))
            #expect(buffer.withUnsafeMutableBytes { rootfs.files.ioctl(fd, request: UInt32(TCGETS), argument: $0) } == -Int(EBADF))
            #expect(rootfs.files.lseek(fd, offset: 0, whence: SEEK_SET) == -Int(EBADF))
            #expect(rootfs.files.close(fd) == -Int(EBADF))
            #expect(rootfs.files.dup(fd) == -Int(EBADF))
            #expect(rootfs.files.fchdir(fd) == -Int(EBADF))
            #expect(rootfs.files.fcntl(fd, command: F_GETFL, argument: 0) == -Int(EBADF))
            #expect(rootfs.files.hostDescriptor(of: fd) == nil)
        }
    }

    @Test func descriptorTableStopsAtTheLimit() throws {
        let rootfs = try GuestRootfs()
        var opened = 0
        while rootfs.files.dup(0) >= 0 { opened += 1 }
        #expect(opened == GuestFiles.defaultDescriptorLimit - 3)
        #expect(rootfs.files.dup(0) == -Int(EMFILE))
        #expect(rootfs.open("/data/hello.txt") == -Int(EMFILE))
        #expect(rootfs.files.fcntl(0, command: F_DUPFD, argument: 0) == -Int(EMFILE))
        #expect(rootfs.files.close(700) == 0)
        #expect(rootfs.open("/data/hello.txt") == 700)

        let small = try GuestRootfs(descriptorLimit: 5)
        #expect(small.open("/data/hello.txt") == 3)
        #expect(small.open("/data/hello.txt") == 4)
        #expect(small.open("/data/hello.txt") == -Int(EMFILE))
        #expect(small.files.dup2(3, 5) == -Int(EBADF))
    }

    @Test func ioctlAnswersOnlyForTerminals() throws {
        let rootfs = try GuestRootfs()
        let file = Int32(rootfs.open("/data/hello.txt"))
        var argument = [UInt8](repeating: 0, count: 64)
        #expect(argument.withUnsafeMutableBytes { rootfs.files.ioctl(file, request: UInt32(TCGETS), argument: $0) } == -Int(ENOTTY))
        #expect(argument.withUnsafeMutableBytes { rootfs.files.ioctl(1, request: UInt32(TIOCGWINSZ), argument: $0) } == -Int(ENOTTY))
        #expect(GuestFiles.ioctlArgumentSize(request: UInt32(TCGETS)) == 36)
        #expect(GuestFiles.ioctlArgumentSize(request: UInt32(TIOCGWINSZ)) == 8)
        #expect(GuestFiles.ioctlArgumentSize(request: UInt32(TIOCSWINSZ)) == nil)

        let terminal = try PseudoTerminal()
        var size = winsize(ws_row: 33, ws_col: 101, ws_xpixel: 0, ws_ypixel: 0)
        #expect(ioctl(terminal.controller.rawValue, UInt(TIOCSWINSZ), &size) == 0)
        let withTerminal = try GuestFiles(rootfs: rootfs.folder.path, stdin: terminal.terminal.rawValue,
                                          stdout: terminal.terminal.rawValue, stderr: 2)
        var guestSize = [UInt8](repeating: 0, count: 8)
        #expect(guestSize.withUnsafeMutableBytes { withTerminal.ioctl(1, request: UInt32(TIOCGWINSZ), argument: $0) } == 0)
        #expect(guestSize == withUnsafeBytes(of: &size) { Array($0) })

        var guestTermios = [UInt8](repeating: 0, count: 36)
        var hostTermios = [UInt8](repeating: 0, count: 36)
        #expect(guestTermios.withUnsafeMutableBytes { withTerminal.ioctl(0, request: UInt32(TCGETS), argument: $0) } == 0)
        #expect(hostTermios.withUnsafeMutableBytes { cshims_ioctl_ptr(terminal.terminal.rawValue, UInt(TCGETS), $0.baseAddress) } == 0)
        #expect(guestTermios == hostTermios)
        var tooSmall = [UInt8](repeating: 0, count: 4)
        #expect(tooSmall.withUnsafeMutableBytes { withTerminal.ioctl(0, request: UInt32(TCGETS), argument: $0) } == -Int(EFAULT))
        #expect(guestTermios.withUnsafeMutableBytes { withTerminal.ioctl(0, request: UInt32(TIOCSWINSZ), argument: $0) } == -Int(ENOTTY))
    }

    // MARK: - Working directory

    @Test func workingDirectoryFollowsChdir() throws {
        let rootfs = try GuestRootfs()
        #expect(rootfs.cwd() == "/")
        var two = [UInt8](repeating: 0xff, count: 2)
        #expect(two.withUnsafeMutableBytes { rootfs.files.getcwd(into: $0) } == 2)
        #expect(two == [UInt8(ascii: "/"), 0])
        #expect(rootfs.chdir("data/sub") == 0)
        #expect(rootfs.cwd() == "/data/sub")
        #expect(two.withUnsafeMutableBytes { rootfs.files.getcwd(into: $0) } == -Int(ERANGE))
        #expect(rootfs.chdir("..") == 0)
        #expect(rootfs.cwd() == "/data")
        #expect(rootfs.chdir("/abs") == 0)
        #expect(rootfs.cwd() == "/etc", "the working directory is the symlink's target, as the kernel records it")
        #expect(rootfs.chdir("/data/up/../..//bin/") == 0)
        #expect(rootfs.cwd() == "/bin")
        #expect(rootfs.chdir("/data/hello.txt") == -Int(ENOTDIR))
        #expect(rootfs.chdir("missing") == -Int(ENOENT))
        #expect(rootfs.chdir("") == -Int(ENOENT))
        #expect(rootfs.cwd() == "/bin")
        #expect(rootfs.read(rootfs.open("sh"))?.count == 4096)

        let deep = Int32(rootfs.open("/data/sub/deep", O_RDONLY | O_DIRECTORY))
        #expect(rootfs.files.fchdir(deep) == 0)
        #expect(rootfs.cwd() == "/data/sub/deep")
        let file = Int32(rootfs.open("/data/hello.txt"))
        #expect(rootfs.files.fchdir(file) == -Int(ENOTDIR))
        #expect(rootfs.files.fchdir(1) == -Int(ENOTDIR))
        #expect(rootfs.cwd() == "/data/sub/deep")
    }

    // MARK: - Fork and lifetime

    @Test func forkCopyIsIndependentAfterClose() throws {
        let rootfs = try GuestRootfs()
        let parent = rootfs.files
        let fd = Int32(rootfs.open("/data/hello.txt"))
        #expect(parent.dup2(fd, 7) == 7)
        #expect(parent.fcntl(7, command: F_SETFD, argument: Int(FD_CLOEXEC)) == 0)
        #expect(rootfs.chdir("/data/sub") == 0)

        let child = try parent.copyForFork()
        #expect(parent.close(fd) == 0)
        #expect(parent.close(7) == 0)
        #expect(child.hostDescriptor(of: fd) != nil && child.hostDescriptor(of: 7) != nil)
        #expect(child.hostDescriptor(of: 4) == nil)
        #expect(child.fcntl(7, command: F_GETFD, argument: 0) == Int(FD_CLOEXEC))
        #expect(child.fcntl(fd, command: F_GETFD, argument: 0) == 0)
        var cwd = [UInt8](repeating: 0, count: 64)
        #expect(cwd.withUnsafeMutableBytes { child.getcwd(into: $0) } == 10)

        var buffer = [UInt8](repeating: 0, count: 5)
        #expect(buffer.withUnsafeMutableBytes { child.read(fd, into: $0) } == 5)
        #expect(buffer == Array("hello".utf8))
        #expect(child.lseek(7, offset: 0, whence: SEEK_CUR) == 5, "descriptors sharing a file in the parent share it in the child")

        let childFD = "/etc/hostname".withCString { child.openat(dirfd: AT_FDCWD, path: $0, flags: O_RDONLY, mode: 0) }
        #expect(childFD == 4)
        #expect(rootfs.open("/etc/hostname") == 3, "the parent's table is its own")
        #expect("deep/file.txt".withCString { child.openat(dirfd: AT_FDCWD, path: $0, flags: O_RDONLY, mode: 0) } == 5)
        #expect(child.close(1) == 0)
        #expect(parent.hostDescriptor(of: 1) != nil)
    }

    @Test func forkCopySharesOffsetsWithTheParentLikeFork() throws {
        let rootfs = try GuestRootfs()
        let fd = Int32(rootfs.open("/data/hello.txt"))
        let child = try rootfs.files.copyForFork()
        #expect(rootfs.read(Int(fd), count: 6) == Array("hello ".utf8))
        #expect(child.lseek(fd, offset: 0, whence: SEEK_CUR) == 6)
        #expect(rootfs.files.hostDescriptor(of: fd) != child.hostDescriptor(of: fd))
    }

    @Test func hostDescriptorsCloseExactlyOnce() throws {
        let folder: URL
        do {
            let rootfs = try GuestRootfs()
            folder = rootfs.folder
            #expect(hostDescriptors(under: folder).count == 1, "only the root folder is open")
            _ = rootfs.open("/data/hello.txt")
            _ = rootfs.open("/data", O_RDONLY | O_DIRECTORY)
            _ = rootfs.files.dup(3)
            let child = try rootfs.files.copyForFork()
            #expect(hostDescriptors(under: folder).count == 5, "the root, shared, and two files in parent and child")
            _ = child.close(3)
            _ = child.close(5)
            #expect(hostDescriptors(under: folder).count == 4)
            _ = rootfs.files.close(3)
            #expect(hostDescriptors(under: folder).count == 4, "descriptor 5 still holds the file")
        }
        #expect(hostDescriptors(under: folder).isEmpty)
    }
}

/// Reads a whole directory through `getdents` in small buffers, so that listings span
/// several calls; the records as (inode, type, name).
private func readDirectory(_ getdents: (UnsafeMutableRawBufferPointer) -> Int) -> [DirectoryEntry] {
    var entries: [DirectoryEntry] = []
    var buffer = [UInt8](repeating: 0, count: 200)
    while true {
        let length = buffer.withUnsafeMutableBytes { getdents($0) }
        guard length > 0 else { return entries }
        var offset = 0
        buffer.withUnsafeBytes { raw in
            while offset < length {
                let recordLength = Int(raw.loadUnaligned(fromByteOffset: offset + 16, as: UInt16.self))
                let nameBytes = raw[(offset + 19)..<(offset + recordLength)].prefix { $0 != 0 }
                entries.append(DirectoryEntry(inode: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self),
                                              type: raw[offset + 18], name: String(decoding: nameBytes, as: UTF8.self)))
                offset += recordLength
            }
        }
    }
}

private struct DirectoryEntry: Equatable {
    let inode: UInt64
    let type: UInt8
    let name: String
}

/// A pseudo-terminal pair from /dev/ptmx, for the terminal ioctls. Glibc's posix_openpt and
/// friends are not visible to Swift, so this unlocks the terminal and finds its number with
/// the two ioctls they use (Linux x86-64 numbers, _IOW/_IOR('T', 0x31/0x30, int)).
private struct PseudoTerminal: ~Copyable {
    let controller: FileDescriptor
    let terminal: FileDescriptor

    init() throws {
        let controller = try FileDescriptor.open("/dev/ptmx", O_RDWR | O_NOCTTY)
        let setLock: UInt = (1 << 30) | (4 << 16) | (UInt(UInt8(ascii: "T")) << 8) | 0x31
        let getNumber: UInt = (2 << 30) | (4 << 16) | (UInt(UInt8(ascii: "T")) << 8) | 0x30
        var unlock: Int32 = 0
        var number: UInt32 = 0
        _ = try retryingSyscall("ioctl(TIOCSPTLCK)") { cshims_ioctl_ptr(controller.rawValue, setLock, &unlock) }
        _ = try retryingSyscall("ioctl(TIOCGPTN)") { cshims_ioctl_ptr(controller.rawValue, getNumber, &number) }
        terminal = try FileDescriptor.open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        self.controller = controller
    }
}
