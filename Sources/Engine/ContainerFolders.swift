import CShims
import Foundation
import HostSystem
import Images

/// Where containers' log folders live: kept containers' in the state folder (STATE/containers,
/// on disk: their logs outlive the engine, as Docker's do), and runs' (`POST
/// /v1/containers/run` removing its container at its end: a transient container) in a folder
/// on tmpfs of their own, when the machine has one.
///
/// Why: a run's logs live a few milliseconds and are thrown away, yet on ext4 (this kind of
/// machine mounts it with `discard`, its journal shared with every writer on the host) each
/// run's folder rename is a journalled change, and emptying a log whose few bytes had been
/// written back waits for that writeback and for a synchronous discard: 11–187 ms seen on the
/// folders thread (perf sched, 2026-12-07), while ready folders ran out and creates made
/// new ones on the caller's path. On tmpfs none of that exists. A run's output is held whole
/// in memory for its answer anyway, so its log there costs at most as much again until the
/// run ends.
///
/// A folder's pool is known from its path: a container's folder is made, emptied and kept by
/// the pool of the folder it lies in.
///
/// A run's folder on tmpfs keeps the name it had as a ready folder, unless the engine is a
/// worker: nothing but this engine looks for it, through the container's record, so the two
/// renames a container's folder costs (into place at its create, to a ready name at its
/// removal; 19 µs of each launch's CPU at 1,400 launches a second, 2026-12-07) are not made.
/// A worker's daemon finds a worker's run's folder by the container's id, so a worker's
/// runs' folders are named by it.
final class ContainerFolders: Sendable {
    /// Kept containers' folders (STATE/containers, or the daemon's for a worker).
    let kept: ContainerFolderPool
    /// Runs' folders; `kept` when the machine has no tmpfs for them.
    let runs: ContainerFolderPool
    /// Whether a run's folder keeps its ready name (see above).
    let runsKeepReadyNames: Bool

    /// `runsFolder`: where runs' folders go (nil: with the kept ones). `owner`: "d" for a
    /// daemon or an engine on its own, "wK" for worker K.
    init(kept keptFolder: URL, runs runsFolder: URL?, owner: String) {
        kept = ContainerFolderPool(folder: keptFolder, owner: owner)
        runs = runsFolder.map { ContainerFolderPool(folder: $0, owner: owner) } ?? kept
        runsKeepReadyNames = runs !== kept && owner == "d"
    }

    /// /dev/null open for reading (the standard input of a container given none).
    var devNull: Int32 { kept.devNull }

    /// The folder of container `id`: a run's (`run`: removed at its end) or a kept one's.
    func path(of id: String, run: Bool) -> String { (run ? runs : kept).path(of: id) }

    /// The folder of container `id` made by an earlier process or a worker, where it is:
    /// among the runs' when there, else among the kept ones'.
    func existingPath(of id: String) -> String {
        let run = runs.path(of: id)
        return runs !== kept && access(run, F_OK) == 0 ? run : kept.path(of: id)
    }

    /// Makes the folder of container `id` (`run`: removed at its end) and returns its path
    /// and its log files: `path(of:run:)`, or a ready folder as it is for a run when runs'
    /// folders keep their ready names.
    func make(id: String, run: Bool) throws -> (path: String, files: ContainerLogFiles) {
        if run && runsKeepReadyNames { return try runs.take() }
        let path = path(of: id, run: run)
        return (path, try pool(holding: path).make(path))
    }

    /// Removes the folder at `path` off the caller's path (see `ContainerFolderPool.remove`).
    func remove(_ path: String, files: ContainerLogFiles? = nil, stdinFile: Bool = true) {
        pool(holding: path).remove(path, files: files, stdinFile: stdinFile)
    }

    /// Returns once the removals queued so far are done.
    func waitForRemovals() {
        kept.waitForRemovals()
        if runs !== kept { runs.waitForRemovals() }
    }

    /// At shutdown, once every container has stopped: the runs' folders go (tmpfs is memory:
    /// a stopped engine leaves nothing there; a run cut short by the stop was answered with
    /// what it had). `all`: every one (an engine on its own, or the daemon of workers once
    /// they are gone); else the ready ones this process holds (a worker). The kept
    /// containers' stay for the next process.
    func discardRunFolders(all: Bool) {
        guard runs !== kept else { return }
        runs.waitForRemovals()
        runs.deleteReady()
        if all { runs.deleteLeft(keeping: [], ready: true) }
        runs.waitForRemovals()
        // Not the user's folder above it: another engine may be making its own in it now.
        rmdir(runs.folder.path)
    }

    /// At an engine's start on its own (no workers): folders of runs an earlier process left
    /// (it stopped while they ran) and that no record names are deleted.
    func deleteLeftRuns(keeping known: Set<String>) {
        guard runs !== kept else { return }
        runs.deleteLeft(keeping: known)
    }

    private func pool(holding path: String) -> ContainerFolderPool {
        runs !== kept && runs.holds(path) ? runs : kept
    }

    /// The runs' folder for the engine (or the daemon of workers) on `stateFolder`: under
    /// /dev/shm/vmfork-UID/, named by a digest of the state folder's path (so each state
    /// folder has its own and a worker finds its daemon's), when /dev/shm is a tmpfs and
    /// vmfork-UID is a folder of this user's that no other user can enter; else nil (runs'
    /// folders go with the kept ones, and why is returned too).
    static func runsFolder(stateFolder: URL, shm: String = "/dev/shm") -> (folder: URL?, whyNot: String?) {
        let type = cshims_file_system_type(shm)
        guard type >= 0 else { return (nil, "\(shm): \(String(cString: strerror(errno)))") }
        guard type == CSHIMS_TMPFS_MAGIC else { return (nil, "\(shm) is not a tmpfs") }
        let user = geteuid()
        let base = "\(shm)/vmfork-\(user)"
        // Not followed: a link or another user's folder here (the folder above is shared by
        // every user) would hand runs' output to someone else. Made only when missing (a
        // confined worker may not make it, and finds its daemon's).
        var info = stat()
        if lstat(base, &info) != 0 {
            guard errno == ENOENT, mkdir(base, 0o700) == 0 || errno == EEXIST, lstat(base, &info) == 0 else {
                return (nil, "cannot make \(base): \(String(cString: strerror(errno)))")
            }
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { return (nil, "\(base) is not a folder") }
        guard info.st_uid == user, info.st_mode & 0o077 == 0 else { return (nil, "\(base) is not this user's alone") }
        let digest = SHA256.hex(of: Array(stateFolder.standardizedFileURL.path.utf8)).prefix(16)
        return (URL(fileURLWithPath: "\(base)/\(digest)", isDirectory: true), nil)
    }
}
