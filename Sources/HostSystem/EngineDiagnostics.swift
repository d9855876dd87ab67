import CShims
#if canImport(Glibc)
import Glibc
#endif

/// The engine's own messages on its standard error, written so that they can never bring the
/// engine down: FileHandle's write traps on any error, and the engine's stderr may be a pipe
/// that someone else made non-blocking, filled or closed (EAGAIN, EPIPE).
public enum EngineDiagnostics {
    /// How long a message waits for room in a full non-blocking stderr before the rest is dropped.
    static let patience: Duration = .seconds(1)

    /// Writes `message` to standard error: whole when it can, never trapping. A full
    /// non-blocking stderr gets `patience` to drain; any other failure drops the message.
    public static func write(_ message: String) {
        let bytes = Array(message.utf8)
        let deadline = ContinuousClock.now + patience
        var done = 0
        while done < bytes.count {
            // unsafe: write reads [done, count) of `bytes`'s storage (done < count: the loop's condition), during the closure.
            let written = bytes.withUnsafeBytes { buffer in
                Glibc.write(STDERR_FILENO, buffer.baseAddress! + done, buffer.count - done)
            }
            if written > 0 {
                done += written
                continue
            }
            let code = cshims_errno()
            if written < 0, code == EINTR { continue }
            guard written < 0, code == EAGAIN, ContinuousClock.now < deadline else { return }
            var ready = pollfd(fd: STDERR_FILENO, events: Int16(POLLOUT), revents: 0)
            _ = poll(&ready, 1, 100)
        }
    }
}
