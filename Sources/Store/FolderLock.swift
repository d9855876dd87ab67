#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// An exclusive advisory lock (flock) on a file in a state folder, held for the object's life.
/// Two take one:
/// - the store (`placement.lock`), waiting a while: the placement service keeps the state in
///   memory and writes through, so two processes placing from one folder at once could both
///   grant the same capacity; the second waits for the first (a `vmfork` command takes a
///   fraction of a second) or gives up, naming the folder;
/// - the daemon (`vmfork.lock`), without waiting and recording its pid in the file: a second
///   daemon on the same folder is refused at once, naming the process that holds it.
public final class FolderLock: Sendable {
    private let descriptor: Int32

    /// Another process holds the lock.
    public struct Busy: Error, CustomStringConvertible {
        public let folder: String
        public let waited: Double
        /// The holder's pid as it recorded it (`recordsPID`), when it did.
        public let holder: String?
        public var description: String { "state folder \(folder) is in use by another vmfork process (waited \(waited) s for its lock)" }
    }

    /// The lock file could not be opened.
    public struct Unopenable: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "cannot open \(path): \(reason)" }
    }

    /// Takes the lock on `folder`/`file`, trying again every 20 ms for `waitSeconds` (0: once);
    /// with `recordsPID` the file then holds this process's pid, for the next one to name.
    public init(folder: URL, file: String, waitSeconds: Double, mode: mode_t = 0o644, recordsPID: Bool = false) throws {
        let path = folder.appendingPathComponent(file).path
        // Held in a local until the lock is taken: once `descriptor` is set the object is whole,
        // and an init that throws then still runs deinit, which would close it a second time
        // (a number by then perhaps another thread's file: an io_uring ring's, in one test run).
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Unopenable(path: path, reason: String(cString: strerror(errno))) }
        let deadline = Date().addingTimeInterval(waitSeconds)
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR, Date() < deadline else {
                var holder: String?
                if recordsPID {
                    var buffer = [UInt8](repeating: 0, count: 32)
                    let count = pread(fd, &buffer, buffer.count, 0)
                    if count > 0 { holder = String(decoding: buffer.prefix(count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
                }
                close(fd)
                throw Busy(folder: folder.path, waited: waitSeconds, holder: holder)
            }
            usleep(20_000)
        }
        descriptor = fd
        if recordsPID {
            let pid = Array("\(getpid())\n".utf8)
            _ = ftruncate(fd, 0)
            _ = pwrite(fd, pid, pid.count, 0)
        }
    }

    deinit { close(descriptor) }
}
