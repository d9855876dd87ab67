#if canImport(Glibc)
import Glibc
#endif

/// An open file descriptor that this value owns: it is closed exactly once, when the value
/// is consumed by `close()` or goes out of scope.
public struct FileDescriptor: ~Copyable, Sendable {
    /// The kernel's descriptor number; valid while this value lives.
    public let rawValue: Int32

    /// Takes ownership of `rawValue`, which must be an open descriptor no one else closes.
    public init(adopting rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// Opens `path` with `flags` (O_CLOEXEC is always added).
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws(SystemError) -> FileDescriptor {
        let fd = try retryingSyscall("open(\(path))") { Glibc.open(path, flags | O_CLOEXEC, mode) }
        return FileDescriptor(adopting: fd)
    }

    /// Closes now, reporting a failure instead of ignoring it.
    public consuming func close() throws(SystemError) {
        let fd = rawValue
        discard self
        if Glibc.close(fd) == -1 {
            throw SystemError(call: "close", errno: errno)
        }
    }

    deinit {
        _ = Glibc.close(rawValue)
    }
}
