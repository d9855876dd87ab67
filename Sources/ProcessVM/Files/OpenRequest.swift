import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// A guest's open(2) flags, reduced the way Linux's openat reduces them (unknown bits
/// dropped, O_PATH keeping only its companions), and what they ask of the file.
struct OpenRequest {
    /// The flags openat(2) honours. O_ASYNC is left out: it would aim SIGIO at the engine.
    private static let knownFlags = O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK
        | O_DSYNC | O_SYNC | CSHIMS_O_DIRECT | CSHIMS_O_LARGEFILE | O_DIRECTORY | O_NOFOLLOW | CSHIMS_O_NOATIME
        | O_CLOEXEC | CSHIMS_O_PATH | CSHIMS_O_TMPFILE
    private static let pathOnlyCompanions = CSHIMS_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
    /// O_TMPFILE without the O_DIRECTORY bit it includes.
    private static let temporaryFileBit = CSHIMS_O_TMPFILE & ~O_DIRECTORY

    let flags: Int32

    init(guestFlags: Int32) {
        let known = guestFlags & Self.knownFlags
        flags = known & CSHIMS_O_PATH != 0 ? known & Self.pathOnlyCompanions : known
    }

    var isPathOnly: Bool { flags & CSHIMS_O_PATH != 0 }
    var creates: Bool { flags & O_CREAT != 0 }
    var makesTemporaryFile: Bool { flags & Self.temporaryFileBit != 0 }
    /// Write access or truncation: both need a writable file system.
    var mayWrite: Bool { !isPathOnly && (flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0) }

    /// Flags for reopening an already-resolved file: nothing is created there and the
    /// /proc/self/fd link must be followed; O_NOCTTY so a terminal never becomes the engine's.
    var reopenFlags: Int32 { (flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC)) | O_NOCTTY }

    /// Linux's EINVAL combinations: O_TMPFILE needs O_DIRECTORY, write access and no
    /// O_CREAT; O_CREAT cannot go with O_DIRECTORY.
    func validate() throws(SystemError) {
        let valid = makesTemporaryFile
            ? flags & (CSHIMS_O_TMPFILE | O_CREAT) == CSHIMS_O_TMPFILE && flags & O_ACCMODE != O_RDONLY
            : !(creates && flags & O_DIRECTORY != 0)
        guard valid else { throw SystemError(call: "openat flags", errno: EINVAL) }
    }
}
