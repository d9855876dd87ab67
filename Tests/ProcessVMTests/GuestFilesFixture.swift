import Foundation
import HostSystem
import ProcessVM
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A root filesystem folder built for one test: real files, folders, the real busybox and
/// hostile symlinks, plus a `GuestFiles` serving it with /dev/null as the standard streams.
final class GuestRootfs {
    let folder: URL
    let files: GuestFiles
    /// The content of the rootfs's own etc/hostname, unique per fixture so that reading it
    /// proves a path stayed inside this root.
    let hostnameMarker: String
    static let helloText = "hello from inside the guest rootfs\n"
    static let chainLength = 50

    init(descriptorLimit: Int = GuestFiles.defaultDescriptorLimit) throws {
        let folder = try HostFacts.makeTemporaryFolder("guestfiles")
        let marker = "guest-\(UUID().uuidString)\n"
        try Self.populate(folder, hostnameMarker: marker)
        let streams = try FileDescriptor.open("/dev/null", O_RDWR)
        self.folder = folder
        hostnameMarker = marker
        files = try GuestFiles(rootfs: folder.path, stdin: streams.rawValue, stdout: streams.rawValue,
                               stderr: streams.rawValue, descriptorLimit: descriptorLimit)
    }

    private static func populate(_ folder: URL, hostnameMarker: String) throws {
        let manager = FileManager.default
        func path(_ relative: String) -> String { folder.appendingPathComponent(relative).path }
        func link(_ relative: String, to target: String) throws {
            try manager.createSymbolicLink(atPath: path(relative), withDestinationPath: target)
        }
        for directory in ["bin", "etc", "dev", "data/sub/deep", "data/many", "chain"] {
            try manager.createDirectory(atPath: path(directory), withIntermediateDirectories: true)
        }
        try manager.copyItem(atPath: "/bin/busybox", toPath: path("bin/busybox"))
        try hostnameMarker.write(toFile: path("etc/hostname"), atomically: false, encoding: .utf8)
        try helloText.write(toFile: path("data/hello.txt"), atomically: false, encoding: .utf8)
        try "deep\n".write(toFile: path("data/sub/deep/file.txt"), atomically: false, encoding: .utf8)
        for index in 0..<40 {
            try "file \(index)\n".write(toFile: path("data/many/entry-with-a-longish-name-\(index)"), atomically: false, encoding: .utf8)
        }
        try link("bin/sh", to: "busybox")
        try link("escape", to: "../../../../..")
        try link("abs", to: "/etc")
        try link("hostfile", to: "/etc/hostname")
        try link("data/up", to: "../..")
        try link("loop_a", to: "loop_b")
        try link("loop_b", to: "loop_a")
        for index in 0..<chainLength {
            try link("chain/link\(index)", to: index + 1 < chainLength ? "link\(index + 1)" : "/data/hello.txt")
        }
    }

    deinit {
        try? FileManager.default.removeItem(at: folder)
    }

    /// The host path of `relative` inside the rootfs.
    func path(_ relative: String) -> String { folder.appendingPathComponent(relative).path }

    // MARK: - Guest calls with Swift values

    func open(_ guestPath: String, _ flags: Int32 = O_RDONLY, dirfd: Int32 = AT_FDCWD) -> Int {
        guestPath.withCString { files.openat(dirfd: dirfd, path: $0, flags: flags, mode: 0o644) }
    }

    func read(_ fd: Int, count: Int = 4096) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        let result = buffer.withUnsafeMutableBytes { files.read(Int32(fd), into: $0) }
        return result < 0 ? nil : Array(buffer[0..<result])
    }

    /// Opens, reads up to 4 KiB and closes; the text, or the negative errno of the open.
    func contents(_ guestPath: String, dirfd: Int32 = AT_FDCWD) -> Result<String, GuestErrno> {
        let fd = open(guestPath, dirfd: dirfd)
        guard fd >= 0 else { return .failure(GuestErrno(fd)) }
        defer { _ = files.close(Int32(fd)) }
        return .success(String(decoding: read(fd) ?? [], as: UTF8.self))
    }

    func stat(_ guestPath: String, flags: Int32 = 0, dirfd: Int32 = AT_FDCWD) -> (result: Int, bytes: [UInt8]) {
        var buffer = [UInt8](repeating: 0, count: 144)
        let result = guestPath.withCString { path in
            buffer.withUnsafeMutableBytes { files.fstatat(dirfd: dirfd, path: path, into: $0, flags: flags) }
        }
        return (result, buffer)
    }

    func readlink(_ guestPath: String, dirfd: Int32 = AT_FDCWD) -> Result<String, GuestErrno> {
        var buffer = [UInt8](repeating: 0, count: 256)
        let result = guestPath.withCString { path in
            buffer.withUnsafeMutableBytes { files.readlinkat(dirfd: dirfd, path: path, into: $0) }
        }
        return result < 0 ? .failure(GuestErrno(result)) : .success(String(decoding: buffer[0..<result], as: UTF8.self))
    }

    func access(_ guestPath: String, _ mode: Int32, flags: Int32 = 0) -> Int {
        guestPath.withCString { files.faccessat(dirfd: AT_FDCWD, path: $0, mode: mode, flags: flags) }
    }

    func write(_ fd: Int, _ text: String) -> Int {
        Array(text.utf8).withUnsafeBytes { files.write(Int32(fd), from: $0) }
    }

    func chdir(_ guestPath: String) -> Int {
        guestPath.withCString { files.chdir($0) }
    }

    func cwd() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let length = buffer.withUnsafeMutableBytes { files.getcwd(into: $0) }
        guard length > 0, buffer[length - 1] == 0 else { return nil }
        return String(decoding: buffer[0..<(length - 1)], as: UTF8.self)
    }

    func inode(_ guestPath: String) -> UInt64? {
        let (result, bytes) = stat(guestPath)
        return result == 0 ? inodeOfStat(bytes) : nil
    }
}

/// A Linux error result as a value, so `#expect(... == .failure(GuestErrno(ELOOP)))` reads well.
struct GuestErrno: Error, Equatable, CustomStringConvertible {
    let code: Int32
    init(_ code: Int32) { self.code = code }
    init(_ result: Int) { self.code = Int32(-result) }
    var description: String { "\(String(cString: strerror(code))) (errno \(code))" }
}

/// Offset 8 of the x86-64 struct stat is st_ino.
func inodeOfStat(_ bytes: [UInt8]) -> UInt64 {
    bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }
}

/// The host's own struct stat bytes for `path` (lstat when `followSymlink` is false).
func hostStatBytes(_ path: String, followSymlink: Bool = true) -> [UInt8]? {
    var info = stat()
    let result = followSymlink ? stat(path, &info) : lstat(path, &info)
    return result == 0 ? withUnsafeBytes(of: &info) { Array($0) } : nil
}

/// The host descriptors of this process whose /proc/self/fd link points under `folder`.
func hostDescriptors(under folder: URL) -> [String] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    let prefix = folder.resolvingSymlinksInPath().path
    return entries.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)") }
        .filter { $0.hasPrefix(prefix) }
}
