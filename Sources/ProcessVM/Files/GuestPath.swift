import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// Where a guest path lands on the host: a directory descriptor owned by `GuestFiles` (the
/// root folder, or the host's /dev for the device allowlist), the path to hand the kernel
/// relative to it, and the openat2 resolve flags that keep the kernel's walk confined.
struct HostLocation {
    let base: Int32
    let path: [UInt8]
    let resolve: UInt64
    let isInsideRootfs: Bool

    /// The same walk, ending at the lexical parent of this path (for telling "no parent
    /// folder" from "cannot create here").
    var parent: HostLocation {
        var trimmed = path
        while trimmed.count > 1, trimmed.last == slash { trimmed.removeLast() }
        while let last = trimmed.last, last != slash { trimmed.removeLast() }
        while trimmed.count > 1, trimmed.last == slash { trimmed.removeLast() }
        return HostLocation(base: base, path: trimmed.isEmpty ? [dot] : trimmed, resolve: resolve, isInsideRootfs: isInsideRootfs)
    }
}

let slash = UInt8(ascii: "/")
let dot = UInt8(ascii: ".")

/// The host devices a guest may open by their usual paths. Anything else under /dev is
/// looked up in the root filesystem, where device nodes cannot be opened (as on a nodev mount).
let allowlistedDevices: [[UInt8]] = ["null", "zero", "urandom", "random"].map { Array($0.utf8) }

/// The allowlisted device `path` names, if it is "/dev/<name>" as written (repeated slashes
/// ignored; no "." or ".." processing, which could cross a symlink). A trailing slash is kept
/// so that the kernel answers ENOTDIR as it would for the real device.
func allowlistedDevice(_ absolutePath: [UInt8]) -> [UInt8]? {
    let components = absolutePath.split(separator: slash, omittingEmptySubsequences: true)
    guard components.count == 2, components[0].elementsEqual("dev".utf8),
          let name = allowlistedDevices.first(where: { components[1].elementsEqual($0) }) else { return nil }
    return absolutePath.last == slash ? name + [slash] : name
}

/// Copies a NUL-terminated guest path; Linux refuses paths of PATH_MAX bytes or more.
func pathBytes(_ path: UnsafePointer<CChar>) throws(SystemError) -> [UInt8] {
    let length = strnlen(path, Int(PATH_MAX))
    guard length < Int(PATH_MAX) else { throw SystemError(call: "guest path", errno: ENAMETOOLONG) }
    return UnsafeRawBufferPointer(start: path, count: length).map { $0 }
}

/// Runs `body` with `bytes` as a NUL-terminated C string (paths are bytes, not always UTF-8).
func withCPath<T>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws(SystemError) -> T) throws(SystemError) -> T {
    let terminated = bytes + [0]
    let result = terminated.withUnsafeBytes { raw in
        Result { () throws(SystemError) in try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self)) }
    }
    return try result.get()
}

/// The host path of an open descriptor, as /proc/self/fd reports it.
func hostPath(of fd: Int32) throws(SystemError) -> [UInt8] {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let link = "/proc/self/fd/\(fd)"
    let length = try retryingSyscall("readlink(\(link))") { readlink(link, &buffer, buffer.count) }
    guard length < buffer.count else { throw SystemError(call: "readlink(\(link))", errno: ENAMETOOLONG) }
    return buffer[0..<length].map { UInt8(bitPattern: $0) }
}

/// openat2(2) on `location` with `flags` (O_CLOEXEC added: host descriptors never leak into
/// host children). The kernel may answer EAGAIN when a concurrent rename makes it unable
/// to prove a ".." stayed inside the root; openat2(2) says to retry, a bounded number of times.
func openHost(_ location: HostLocation, flags: Int32) throws(SystemError) -> FileDescriptor {
    let howFlags = UInt64(UInt32(bitPattern: flags | O_CLOEXEC))
    var retriesLeft = 8
    while true {
        do {
            let fd = try withCPath(location.path) { (path) throws(SystemError) in
                try retryingSyscall("openat2") { cshims_openat2(location.base, path, howFlags, 0, location.resolve) }
            }
            return FileDescriptor(adopting: fd)
        } catch {
            guard error.errno == EAGAIN, retriesLeft > 0 else { throw error }
            retriesLeft -= 1
        }
    }
}

/// A new host descriptor for the same open file (shared offset and status flags).
func duplicateHost(_ fd: Int32) throws(SystemError) -> FileDescriptor {
    FileDescriptor(adopting: try retryingSyscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) })
}

/// A new open file description for the file behind `fd`, with its status flags and offset:
/// the same file, but an offset of its own.
func reopenIndependently(_ fd: Int32) throws(SystemError) -> FileDescriptor {
    let flags = try retryingSyscall("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
    let reopened = try FileDescriptor.open("/proc/self/fd/\(fd)", flags & ~(O_CREAT | O_TRUNC | O_EXCL))
    let offset = lseek(fd, 0, SEEK_CUR)
    if offset > 0 { _ = lseek(reopened.rawValue, offset, SEEK_SET) }
    return reopened
}

/// fstat(2) of a host descriptor, for type checks.
func hostStat(_ fd: Int32) throws(SystemError) -> stat {
    var info = stat()
    _ = try retryingSyscall("fstat") { fstat(fd, &info) }
    return info
}

func fileType(_ info: stat) -> mode_t { info.st_mode & S_IFMT }
