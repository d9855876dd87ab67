import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// Guest paths as the kernel sees them: bytes, not always UTF-8, so never a Swift String.
enum GuestPath {
    static let slash = UInt8(ascii: "/")

    /// The host devices a guest may open by their usual paths. Anything else under /dev is
    /// looked up in the root filesystem, where device nodes cannot be opened (as on a nodev mount).
    private static let allowlistedDevices: [[UInt8]] = ["null", "zero", "urandom", "random"].map { Array($0.utf8) }

    /// Copies a NUL-terminated guest path; Linux refuses paths of PATH_MAX bytes or more.
    static func bytes(of path: UnsafePointer<CChar>) throws(SystemError) -> [UInt8] {
        let length = strnlen(path, Int(PATH_MAX))
        guard length < Int(PATH_MAX) else { throw SystemError(call: "guest path", errno: ENAMETOOLONG) }
        return UnsafeRawBufferPointer(start: path, count: length).map { $0 }
    }

    /// The allowlisted device `absolutePath` names, if it is "/dev/<name>" as written
    /// (repeated slashes ignored; no "." or ".." processing, which could cross a symlink). A
    /// trailing slash is kept so that the kernel answers ENOTDIR as for the real device.
    static func allowlistedDevice(_ absolutePath: [UInt8]) -> [UInt8]? {
        let components = absolutePath.split(separator: slash, omittingEmptySubsequences: true)
        guard components.count == 2, components[0].elementsEqual("dev".utf8),
              let name = allowlistedDevices.first(where: { components[1].elementsEqual($0) }) else { return nil }
        return absolutePath.last == slash ? name + [slash] : name
    }

    /// Runs `body` with `bytes` as a NUL-terminated C string.
    static func withCString<T>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws(SystemError) -> T) throws(SystemError) -> T {
        let terminated = bytes + [0]
        // unsafe: the pointer is into `terminated`'s NUL-ended storage, alive for body's call; UInt8 and CChar may alias.
        let result = terminated.withUnsafeBytes { raw in
            Result { () throws(SystemError) in try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self)) }
        }
        return try result.get()
    }
}

/// Where a guest path lands on the host: a directory descriptor owned by `GuestFiles` (the
/// root folder, or the host's /dev for the device allowlist), the path to hand the kernel
/// relative to it, and the openat2 resolve flags that keep the kernel's walk confined.
struct HostLocation {
    let base: Int32
    let path: [UInt8]
    let resolve: UInt64
    let isInsideRootfs: Bool

    /// The same walk, ending at the lexical parent of this (absolute) path: for telling
    /// "no parent folder" (ENOENT) from "cannot create here" (EROFS).
    var parent: HostLocation {
        var trimmed = path
        while trimmed.count > 1, trimmed.last == GuestPath.slash { trimmed.removeLast() }
        while let last = trimmed.last, last != GuestPath.slash { trimmed.removeLast() }
        while trimmed.count > 1, trimmed.last == GuestPath.slash { trimmed.removeLast() }
        return HostLocation(base: base, path: trimmed, resolve: resolve, isInsideRootfs: isInsideRootfs)
    }

    /// openat2(2) with `flags` (O_CLOEXEC added: host descriptors never leak into host
    /// children). The kernel may answer EAGAIN when a concurrent rename keeps it from proving
    /// that a ".." stayed inside the root; openat2(2) says to retry, a bounded number of times.
    func open(flags: Int32) throws(SystemError) -> FileDescriptor {
        let howFlags = UInt64(UInt32(bitPattern: flags | O_CLOEXEC))
        var retriesLeft = 8
        while true {
            do {
                let fd = try GuestPath.withCString(path) { (path) throws(SystemError) in
                    try retryingSyscall("openat2") { cshims_openat2(base, path, howFlags, 0, resolve) }
                }
                return FileDescriptor(adopting: fd)
            } catch {
                guard error.errno == EAGAIN, retriesLeft > 0 else { throw error }
                retriesLeft -= 1
            }
        }
    }
}

/// The host calls on descriptors the guest file layer makes besides the guest's own.
enum HostFileCalls {
    /// A new host descriptor for the same open file (shared offset and status flags).
    static func duplicate(_ fd: Int32) throws(SystemError) -> FileDescriptor {
        FileDescriptor(adopting: try retryingSyscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) })
    }

    /// A new open file description for the file behind `fd`, with its status flags and
    /// offset: the same file, but an offset of its own.
    static func reopenIndependently(_ fd: Int32) throws(SystemError) -> FileDescriptor {
        let flags = try retryingSyscall("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        let reopened = try FileDescriptor.open("/proc/self/fd/\(fd)", flags & ~(O_CREAT | O_TRUNC | O_EXCL))
        let offset = lseek(fd, 0, SEEK_CUR)
        if offset > 0 { _ = lseek(reopened.rawValue, offset, SEEK_SET) }
        return reopened
    }

    static func status(_ fd: Int32) throws(SystemError) -> stat {
        var info = stat()
        _ = try retryingSyscall("fstat") { fstat(fd, &info) }
        return info
    }

    /// The S_IFMT bits: regular file, folder, symlink, device...
    static func fileType(_ fd: Int32) throws(SystemError) -> mode_t {
        try status(fd).st_mode & S_IFMT
    }

    /// The host path of an open descriptor, as /proc/self/fd reports it.
    static func path(of fd: Int32) throws(SystemError) -> [UInt8] {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let link = "/proc/self/fd/\(fd)"
        let length = try retryingSyscall("readlink(\(link))") { readlink(link, &buffer, buffer.count) }
        guard length < buffer.count else { throw SystemError(call: "readlink(\(link))", errno: ENAMETOOLONG) }
        return buffer[0..<length].map { UInt8(bitPattern: $0) }
    }
}
