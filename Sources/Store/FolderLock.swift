#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// An exclusive advisory lock on a state folder, held while a store is open. The placement
/// service keeps the state in memory and writes through, so two processes placing from one
/// folder at once could both grant the same capacity; with the lock, the second waits for the
/// first to finish (a `vmfork` command takes a fraction of a second) or gives up, naming the
/// folder.
final class FolderLock: Sendable {
    private let descriptor: Int32

    struct Busy: Error, CustomStringConvertible {
        let folder: String
        let waited: Double
        var description: String { "state folder \(folder) is in use by another vmfork process (waited \(waited) s for its lock)" }
    }

    init(folder: URL, waitSeconds: Double) throws {
        let path = folder.appendingPathComponent("placement.lock").path
        // Held in a local until the lock is taken: once `descriptor` is set the object is whole,
        // and an init that throws then still runs deinit, which would close it a second time
        // (a number by then perhaps another thread's file: an io_uring ring's, in one test run).
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
        let deadline = Date().addingTimeInterval(waitSeconds)
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR, Date() < deadline else {
                close(fd)
                throw Busy(folder: folder.path, waited: waitSeconds)
            }
            usleep(20_000)
        }
        descriptor = fd
    }

    deinit { close(descriptor) }
}
