import Foundation
import Synchronization

/// A container's log folder: the names of what it holds.
enum ContainerFolder {
    /// The files every container's folder holds (see `ContainerStreams`).
    static let logFiles = ["stdout.log", "stderr.log", "stdout.times", "stderr.times"]
    /// With the standard input given at create.
    static let knownFiles = logFiles + ["stdin"]

    /// The log file of `stream` (stdout or stderr) in a container's folder.
    static func logFile(_ stream: LogStream) -> String { stream == .stderr ? "stderr.log" : "stdout.log" }

    /// Its time index (`LogTimeIndex`).
    static func timesFile(_ stream: LogStream) -> String { stream == .stderr ? "stderr.times" : "stdout.times" }

    /// The path of `name` in the folder at `folder`, made as a string: URL's
    /// `appendingPathComponent(_:)` asks the file system whether the result is a folder (a
    /// stat per call, about ten per container on the create and remove path).
    static func path(_ name: String, in folder: String) -> String {
        folder.hasSuffix("/") ? folder + name : folder + "/" + name
    }
}

/// Containers' log folders, made ahead with their empty log files, as the VM pools make VMs:
/// a container's create renames a ready folder into place and opens its files, and a
/// removed container's folder is emptied and made ready again, both off the caller's path.
///
/// Why: on this kind of machine (ext4 mounted with `discard`, a journal shared with every
/// other writer on the host) a file system change can wait for the journal's commit: an
/// rmdir takes about 4 ms of wall time (60 µs of CPU) holding the containers folder's lock,
/// and a create after deletions took a median 0.2–1.5 ms while other processes wrote files.
/// Fork → echo through the engine spent a median 390 µs making its log folder and files
/// (mkdir and four creates) while the previous container's rmdir ran. Now the create makes
/// one change (a rename within the folder) and opens four existing files unchanged.
///
/// Ready folders are named `.ready-OWNER-…` in the containers folder itself (a rename
/// within one folder, which a worker's Landlock domain allows), one OWNER per engine
/// process (the daemon, or worker K), so that two processes sharing the folder never take
/// the same one. Those an earlier process of the same owner left are emptied and taken over.
final class ContainerFolderPool: Sendable {
    let folder: URL
    private let folderPath: String
    private let prefix: String
    private let ready: Mutex<[String]>
    private let named = Atomic<Int>(0)
    private let refilling = Atomic<Bool>(false)
    /// Removed containers' folders queued to be emptied: ready soon, so a refill counts them
    /// (without, a refill made new folders while those waited in the queue, and once they
    /// came back beyond `capacity` they were deleted: on ext4 without a journal every new
    /// inode's allocation scans past the inodes deleted in the last seconds, so that churn
    /// cost more CPU than anything else in a container's create at 600 launches a second).
    private let returning = Atomic<Int>(0)
    private let queue = DispatchQueue(label: "vmfork.engine.container-folders", qos: .utility)
    /// Folders made ahead while fewer are ready.
    static let target = 8
    /// Folders kept at most (removed containers' beyond the target); beyond, one is deleted.
    static let capacity = 64

    /// `owner`: "d" for a daemon or an engine on its own, "wK" for worker K.
    init(folder: URL, owner: String) {
        self.folder = folder
        folderPath = folder.path
        prefix = ".ready-\(owner)-\(getpid())-"
        ready = Mutex([])
        let ownerPrefix = ".ready-\(owner)-"
        let left = (try? FileManager.default.contentsOfDirectory(atPath: folder.path))?.filter { $0.hasPrefix(ownerPrefix) } ?? []
        queue.async { [self] in
            for name in left { recycle(folder.appendingPathComponent(name, isDirectory: true)) }
            fill()
        }
    }

    /// Folders ready now.
    var readyCount: Int { ready.withLock { $0.count } }

    /// Makes the folder of a container (mode 0700). True when it is a ready one: its log
    /// files exist and are empty, to be opened without O_TRUNC.
    func make(_ container: URL) throws -> Bool {
        defer { if readySoon < Self.target / 2 { refill() } }
        let containerPath = container.path
        while let name = ready.withLock({ $0.popLast() }) {
            if rename(ContainerFolder.path(name, in: folderPath), containerPath) == 0 { return true }
        }
        if mkdir(containerPath, 0o700) == 0 || errno == EEXIST { return false }
        try FileManager.default.createDirectory(at: container, withIntermediateDirectories: true)
        return false
    }

    /// Removes a container's folder: off the caller's path, it is emptied and made ready
    /// again (or deleted when enough are kept).
    func remove(_ container: URL) {
        returning.add(1, ordering: .relaxed)
        queue.async { [self] in
            recycle(container)
            returning.subtract(1, ordering: .relaxed)
        }
    }

    /// Folders ready now or on their way back.
    private var readySoon: Int { ready.withLock { $0.count } + returning.load(ordering: .relaxed) }

    /// Returns once the removals queued so far are done (shutdown).
    func waitForRemovals() { queue.sync {} }

    /// Empties a folder and adds it to the ready ones; deletes it when the pool is full or
    /// when it holds something unknown.
    private func recycle(_ container: URL) {
        let full = ready.withLock { $0.count >= Self.capacity }
        guard !full else { return Self.delete(container) }
        let containerPath = container.path
        unlink(ContainerFolder.path("stdin", in: containerPath))
        for name in ContainerFolder.logFiles {
            // An empty file stays unchanged: truncating it would be one more journalled write.
            let path = ContainerFolder.path(name, in: containerPath)
            var info = stat()
            if stat(path, &info) == 0, info.st_size == 0 { continue }
            // Truncated through a descriptor closed at once: ext4 (auto_da_alloc) marks a file
            // cut to nothing to have its delayed writes flushed at its next last close, which
            // was the next container's, writing out its few bytes of log (and allocating their
            // blocks) on its way out; closed here, there is nothing yet to flush.
            let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
            guard fd >= 0 else {
                if errno == ENOENT { continue }
                return Self.delete(container)
            }
            close(fd)
        }
        guard Self.holdsOnly(ContainerFolder.logFiles, container) else { return Self.delete(container) }
        let name = "\(prefix)\(named.add(1, ordering: .relaxed).newValue)"
        if rename(containerPath, ContainerFolder.path(name, in: folderPath)) == 0 {
            ready.withLock { $0.append(name) }
        } else if errno != ENOENT {
            Self.delete(container)
        }
    }

    /// Makes folders ahead, off the caller's path, until `target` are ready.
    private func refill() {
        guard refilling.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        queue.async { [self] in
            fill()
            refilling.store(false, ordering: .releasing)
        }
    }

    private func fill() {
        while readySoon < Self.target {
            let name = "\(prefix)\(named.add(1, ordering: .relaxed).newValue)"
            let path = ContainerFolder.path(name, in: folderPath)
            guard mkdir(path, 0o700) == 0 else { return }
            for file in ContainerFolder.logFiles {
                let fd = open("\(path)/\(file)", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { return Self.delete(URL(fileURLWithPath: path, isDirectory: true)) }
                close(fd)
            }
            ready.withLock { $0.append(name) }
        }
    }

    /// Removes a folder and what it holds.
    private static func delete(_ container: URL) {
        for name in ContainerFolder.knownFiles { unlink(ContainerFolder.path(name, in: container.path)) }
        if rmdir(container.path) == 0 || errno == ENOENT { return }
        try? FileManager.default.removeItem(at: container)
    }

    /// True when `container` holds nothing but (some of) `names`; false when it cannot be read.
    private static func holdsOnly(_ names: [String], _ container: URL) -> Bool {
        guard let directory = opendir(container.path) else { return false }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            // unsafe: d_name is a NUL-terminated name inside the dirent readdir returned, valid until the next readdir.
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != ".", name != "..", !names.contains(name) { return false }
        }
        return true
    }
}
