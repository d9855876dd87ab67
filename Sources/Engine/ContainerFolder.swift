import CShims
import Foundation
import HostSystem
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

/// A container's four log files, open (stdout.log, stderr.log and their time indexes), kept
/// with its folder from one container to the next (`ContainerFolderPool`): a container's
/// create hands the guest duplicates of the logs, its time indexes write through the kept
/// descriptors, its end reads its output through them, and its removal empties them through
/// them: per launch, 11 opens and 14 closes became none and 3 (a profile had put opens at
/// 5 % of the engine's CPU for a `busybox echo`; an A/B of CPU per launch moved within noise).
///
/// And while a file is open here, no container's close of it is its last, so ext4 never
/// flushes a log it emptied (`auto_da_alloc`): a few bytes of output written and emptied
/// within a container's life never reach the disk.
final class ContainerLogFiles: Sendable {
    /// The logs, opened O_WRONLY | O_APPEND as the guest's descriptors 1 and 2 are.
    let stdout: Int32
    let stderr: Int32
    let stdoutTimes: Int32
    let stderrTimes: Int32
    /// The logs again, read-only, for the engine's reads of a container's output.
    private let stdoutReader: Int32
    private let stderrReader: Int32

    /// Opens (creating) the four files in the folder at `folderPath`; `truncate` empties them
    /// (a folder that was not a ready one may hold an earlier container's).
    init(folderPath: String, truncate: Bool) throws {
        var opened: [Int32] = []
        func open(_ name: String, _ flags: Int32) throws {
            let path = ContainerFolder.path(name, in: folderPath)
            var fd = Glibc.open(path, flags | O_CLOEXEC, 0o600)
            // O_NOATIME (with relatime the first read after a write changes the inode, a journalled
            // write) needs the file's owner; without it, an ordinary read.
            if fd < 0, errno == EPERM, flags & CSHIMS_O_NOATIME != 0 { fd = Glibc.open(path, (flags & ~CSHIMS_O_NOATIME) | O_CLOEXEC, 0o600) }
            guard fd >= 0 else {
                let error = EngineError(.failed, "cannot open \(name) in \(folderPath): \(String(cString: strerror(errno)))")
                for fd in opened { close(fd) }
                throw error
            }
            opened.append(fd)
        }
        for name in ContainerFolder.logFiles { try open(name, O_WRONLY | O_CREAT | O_APPEND | (truncate ? O_TRUNC : 0)) }
        for stream in [LogStream.stdout, .stderr] { try open(ContainerFolder.logFile(stream), O_RDONLY | CSHIMS_O_NOATIME) }
        (stdout, stderr, stdoutTimes, stderrTimes, stdoutReader, stderrReader) = (opened[0], opened[1], opened[2], opened[3], opened[4], opened[5])
    }

    deinit {
        for fd in [stdout, stderr, stdoutTimes, stderrTimes, stdoutReader, stderrReader] { close(fd) }
    }

    /// The log's size now, or 0 when it cannot be read.
    func size(_ stream: LogStream) -> Int {
        var info = stat()
        return fstat(stream == .stderr ? stderrReader : stdoutReader, &info) == 0 ? Int(info.st_size) : 0
    }

    /// The log's bytes.
    func read(_ stream: LogStream) -> [UInt8] { Self.readWhole(stream == .stderr ? stderrReader : stdoutReader) }

    /// The log's first `size` bytes (a size just taken with `size(_:)`: no second fstat).
    func read(_ stream: LogStream, size: Int) -> [UInt8] { Self.read(stream == .stderr ? stderrReader : stdoutReader, size: size) }

    /// The whole file open at `fd`, from its start (fstat for the size, then pread).
    static func readWhole(_ fd: Int32) -> [UInt8] {
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size > 0 else { return [] }
        return read(fd, size: Int(info.st_size))
    }

    /// Up to `size` bytes of the file open at `fd`, from its start.
    private static func read(_ fd: Int32, size: Int) -> [UInt8] {
        guard size > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: size)
        var filled = 0
        while filled < size {
            // unsafe: the pointer is into the array's own storage, offset below its count, for the call.
            let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + filled, size - filled, off_t(filled)) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            filled += count
        }
        if filled < size { bytes.removeSubrange(filled...) }
        return bytes
    }

    /// Empties every file that holds something; false when one could not be emptied.
    func empty() -> Bool {
        for fd in [stdout, stderr, stdoutTimes, stderrTimes] {
            var info = stat()
            guard fstat(fd, &info) == 0 else { return false }
            if info.st_size > 0, ftruncate(fd, 0) != 0 { return false }
        }
        return true
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
    /// Ready folders by name, with their log files open when this process made or emptied them.
    private let ready: Mutex<ReadyFolders>
    /// /dev/null, open for reading: the standard input of every container given none (the
    /// guest gets a duplicate).
    let devNull: Int32
    private let named = Atomic<Int>(0)
    private let refilling = Atomic<Bool>(false)
    /// Removed containers' folders queued to be emptied: ready soon, so a refill counts them
    /// (without, a refill made new folders while those waited in the queue, and once they
    /// came back beyond `capacity` they were deleted: on ext4 without a journal every new
    /// inode's allocation scans past the inodes deleted in the last seconds, so that churn
    /// cost more CPU than anything else in a container's create at 600 launches a second).
    private let returning = Atomic<Int>(0)
    /// Removed folders are emptied in batches, gathered for 2 ms (one wake-up per batch, see
    /// `BackgroundThread`): nothing waits for them while ready ones are left.
    private let queue = BackgroundThread(name: "vmfork-folders", gathering: .milliseconds(2))
    /// Folders made ahead while fewer are ready: as many as are kept open, so that a fresh
    /// state folder has them before its first burst. With 8, a daemon's first seconds at
    /// 1,700 launches a second made 35 more while the launches ran, each new inode a scan
    /// past the ones deleted in the last minutes (ext4's `recently_deleted`): 12 % of the
    /// engine's CPU in that profile, and a pool run dry sends a create to mkdir on its own
    /// path, where one waited 120 ms for an inode table block (perf sched, 2026-12-07).
    /// Made once per state folder: the next process of the same owner takes them over.
    static let target = 64
    /// Folders kept at most (removed containers' beyond the target); beyond, one is deleted.
    /// Many: a burst of launches beyond what the host runs at once takes hundreds of folders,
    /// and deleting them afterwards made the next burst allocate new inodes, each a scan past
    /// the inodes deleted in the last seconds (ext4's `recently_deleted`): 28 % of the engine's
    /// CPU in a run that fell behind at 3,200 launches a second, with the pool at 64.
    static let capacity = 1024
    /// Ready folders kept with their log files open at most (six descriptors each); beyond,
    /// a folder is kept with its files closed, opened again by the container that takes it.
    static let openCapacity = 64

    /// `owner`: "d" for a daemon or an engine on its own, "wK" for worker K.
    init(folder: URL, owner: String) {
        self.folder = folder
        folderPath = folder.path
        prefix = ".ready-\(owner)-\(getpid())-"
        ready = Mutex(ReadyFolders())
        devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let ownerPrefix = ".ready-\(owner)-"
        let left = (try? FileManager.default.contentsOfDirectory(atPath: folder.path))?.filter { $0.hasPrefix(ownerPrefix) } ?? []
        queue.async { [self] in
            for name in left { recycle(ContainerFolder.path(name, in: folderPath)) }
            fill()
        }
    }

    deinit {
        if devNull >= 0 { close(devNull) }
    }

    /// Folders ready now.
    var readyCount: Int { ready.withLock { $0.count } }

    /// The path of container `id`'s folder (made as a string, as `ContainerFolder.path`).
    func path(of id: String) -> String { ContainerFolder.path(id, in: folderPath) }

    /// Makes the folder of a container (mode 0700) and returns its log files, open and empty:
    /// a ready folder's, renamed into place, or new ones.
    func make(_ containerPath: String) throws -> ContainerLogFiles {
        defer { if readySoon < Self.target / 2 { refill() } }
        while let folder = ready.withLock({ $0.popLast() }) {
            guard rename(ContainerFolder.path(folder.name, in: folderPath), containerPath) == 0 else { continue }
            if let files = folder.files { return files }
            // Made or emptied by an earlier process: its files exist and are empty, opened as
            // they are (O_TRUNC changes the inode, a journalled write, even for an empty file).
            return try ContainerLogFiles(folderPath: containerPath, truncate: false)
        }
        if mkdir(containerPath, 0o700) != 0 && errno != EEXIST {
            try FileManager.default.createDirectory(atPath: containerPath, withIntermediateDirectories: true)
        }
        return try ContainerLogFiles(folderPath: containerPath, truncate: true)
    }

    /// A ready folder as it is (not renamed), with its log files open and empty, or a new one
    /// with a ready name when none is ready: a run's folder that only this process looks for.
    /// `remove` makes it ready again under the same name.
    func take() throws -> (path: String, files: ContainerLogFiles) {
        defer { if readySoon < Self.target / 2 { refill() } }
        while let folder = ready.withLock({ $0.popLast() }) {
            let path = ContainerFolder.path(folder.name, in: folderPath)
            if let files = folder.files { return (path, files) }
            // Made or emptied by an earlier process, opened as `make` opens those; gone (deleted
            // behind this process's back): the next one.
            if let files = try? ContainerLogFiles(folderPath: path, truncate: false) { return (path, files) }
        }
        let path = ContainerFolder.path("\(prefix)\(named.add(1, ordering: .relaxed).newValue)", in: folderPath)
        guard mkdir(path, 0o700) == 0 else {
            throw EngineError(.failed, "cannot make the log folder \(path): \(String(cString: strerror(errno)))")
        }
        return (path, try ContainerLogFiles(folderPath: path, truncate: true))
    }

    /// Removes a container's folder: off the caller's path, it is emptied and made ready
    /// again (or deleted when enough are kept). `files`: its log files as `make` gave them,
    /// emptied through their descriptors and kept with the folder; `stdinFile`: whether it
    /// holds a standard input file. Without `files` (a container of an earlier process, or a
    /// worker's), what the folder holds is looked at by name.
    func remove(_ container: String, files: ContainerLogFiles? = nil, stdinFile: Bool = true) {
        returning.add(1, ordering: .relaxed)
        queue.async { [self] in
            if let files { recycle(container, files: files, stdinFile: stdinFile) } else { recycle(container) }
            returning.subtract(1, ordering: .relaxed)
        }
    }

    /// Folders ready now or on their way back.
    private var readySoon: Int { ready.withLock { $0.count } + returning.load(ordering: .relaxed) }

    /// Returns once the removals queued so far are done (shutdown).
    func waitForRemovals() { queue.sync {} }

    /// Empties a folder and adds it to the ready ones; deletes it when the pool is full or
    /// when it holds something unknown.
    private func recycle(_ containerPath: String) {
        let full = ready.withLock { $0.count >= Self.capacity }
        guard !full else { return Self.delete(containerPath) }
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
                return Self.delete(containerPath)
            }
            close(fd)
        }
        guard Self.holdsOnly(ContainerFolder.logFiles, containerPath) else { return Self.delete(containerPath) }
        makeReady(containerPath, files: nil)
    }

    /// `recycle` of a folder this process made, with its log files open: emptied through
    /// them (this engine puts nothing else there but the standard input file).
    private func recycle(_ container: String, files: ContainerLogFiles, stdinFile: Bool) {
        let count = ready.withLock { $0.count }
        guard count < Self.capacity, files.empty() else { return Self.delete(container) }
        if stdinFile { unlink(ContainerFolder.path("stdin", in: container)) }
        makeReady(container, files: files)
    }

    /// Renames an emptied folder to a ready name and lists it; one that has a ready name of
    /// this process's (`take`) keeps it.
    private func makeReady(_ container: String, files: ContainerLogFiles?) {
        let ownReady = folderPath + "/" + prefix
        if container.hasPrefix(ownReady), !container.dropFirst(ownReady.count).contains("/") {
            let name = String(container.dropFirst(folderPath.count + 1))
            // A folder's files let go by `push` are closed once the lock is.
            _ = ready.withLock { $0.push(name, files) }
            return
        }
        let name = "\(prefix)\(named.add(1, ordering: .relaxed).newValue)"
        if rename(container, ContainerFolder.path(name, in: folderPath)) == 0 {
            _ = ready.withLock { $0.push(name, files) }
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
            guard let files = try? ContainerLogFiles(folderPath: path, truncate: false) else {
                return Self.delete(path)
            }
            _ = ready.withLock { $0.push(name, files) }
        }
    }

    /// Whether the folder at `path` lies in this pool's folder.
    func holds(_ path: String) -> Bool { path.hasPrefix(folderPath + "/") }

    /// Deletes the ready folders this process holds (a pool on tmpfs at its engine's stop).
    func deleteReady() {
        queue.sync {
            let taken = self.ready.withLock { $0.removeAll() }
            for name in taken { Self.delete(ContainerFolder.path(name, in: self.folderPath)) }
        }
    }

    /// Deletes, off the caller's path, the folders here not named in `known` (containers'
    /// folders an earlier process left); ready ones too with `ready`.
    func deleteLeft(keeping known: Set<String>, ready: Bool = false) {
        queue.async { [self] in
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folderPath)) ?? []
            for name in names where (ready || !name.hasPrefix(".ready-")) && !known.contains(name) {
                Self.delete(ContainerFolder.path(name, in: folderPath))
            }
        }
    }

    /// Removes a folder and what it holds.
    private static func delete(_ container: String) {
        for name in ContainerFolder.knownFiles { unlink(ContainerFolder.path(name, in: container)) }
        if rmdir(container) == 0 || errno == ENOENT { return }
        try? FileManager.default.removeItem(atPath: container)
    }

    /// True when `container` holds nothing but (some of) `names`; false when it cannot be read.
    private static func holdsOnly(_ names: [String], _ container: String) -> Bool {
        guard let directory = opendir(container) else { return false }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            // unsafe: d_name is a NUL-terminated name inside the dirent readdir returned, valid until the next readdir.
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != ".", name != "..", !names.contains(name) { return false }
        }
        return true
    }
}

/// A pool's ready folders: the latest readied are taken first, and the latest `openCapacity`
/// keep their log files open. Those are the ones taken, so a container's create opens no file
/// even after a burst has left hundreds of folders ready (when the folders kept open were the
/// first readied, every create after such a burst opened six files and closed six: 2026-12-07).
struct ReadyFolders {
    /// With their files open, the latest last.
    private var open: [(name: String, files: ContainerLogFiles)] = []
    /// Without, the latest last.
    private var closed: [String] = []

    var count: Int { open.count + closed.count }

    /// The latest readied folder, with its files when they are open.
    mutating func popLast() -> (name: String, files: ContainerLogFiles?)? {
        if let folder = open.popLast() { return (folder.name, folder.files) }
        return closed.popLast().map { ($0, nil) }
    }

    /// Adds a folder; returns the files of the folder that no longer keeps them open (beyond
    /// `ContainerFolderPool.openCapacity`), for the caller to let go outside any lock.
    mutating func push(_ name: String, _ files: ContainerLogFiles?) -> ContainerLogFiles? {
        guard let files else {
            closed.append(name)
            return nil
        }
        open.append((name, files))
        guard open.count > ContainerFolderPool.openCapacity else { return nil }
        let oldest = open.removeFirst()
        closed.append(oldest.name)
        return oldest.files
    }

    /// Empties the list and returns every name.
    mutating func removeAll() -> [String] {
        defer { (open, closed) = ([], []) }
        return open.map(\.name) + closed
    }
}
