import Fork
import Foundation
import ProcessVM
import Synchronization

/// One container the engine keeps: what inspect shows, the forked VM while it lives, its log
/// files and standard input, and the tasks waiting for it to end.
final class ManagedContainer: Sendable {
    let id: String
    /// Its folder's path (its log files; see `ContainerFolder`).
    let logFolder: String
    /// The warm parent family it was forked from (nil for containers recorded before a restart).
    let family: ParentFamily?
    /// Its own writable disk, when its root filesystem is served from its image's disks.
    let disk: ContainerDiskRoot?
    /// Its terminal, when it has one and its VM is in this process.
    let terminal: GuestTerminal?
    /// Its log files, open, when this process made its folder (else they are read by path).
    let logFiles: ContainerLogFiles?
    /// Whether its folder holds a standard input file.
    let stdinFile: Bool
    /// Whether it was made with an open standard input to write to (openStdin).
    let attachable: Bool
    private let state: Mutex<MutableState>

    struct MutableState {
        var info: ContainerInfo
        var vm: Fork.Container?
        /// The write end of an open standard input (attach), or -1.
        var stdinWriter: Int32 = -1
        var waiters: [CheckedContinuation<ExitInfo, Never>] = []
        var exit: ExitInfo?
        var removed = false
        var finishing = false
        /// The worker holding its VM (workers mode); nil in one process.
        var shard: Int?
        /// A run's output as its worker sent it with the run's end (nil: read the log files).
        var output: (stdout: [UInt8], stderr: [UInt8])?
        /// Its worker removed it at the run's end (nothing is left there to remove).
        var removedInWorker = false
    }

    init(info: ContainerInfo, logFolder: String, vm: Fork.Container?, stdinWriter: Int32, family: ParentFamily?, exit: ExitInfo? = nil,
         shard: Int? = nil, disk: ContainerDiskRoot? = nil, terminal: GuestTerminal? = nil, logFiles: ContainerLogFiles? = nil,
         stdinFile: Bool = true) {
        id = info.id
        self.logFiles = logFiles
        self.stdinFile = stdinFile
        attachable = stdinWriter >= 0
        self.terminal = terminal
        self.disk = disk
        self.logFolder = logFolder
        self.family = family
        state = Mutex(MutableState(info: info, vm: vm, stdinWriter: stdinWriter, exit: exit, shard: shard))
    }

    var info: ContainerInfo { state.withLock { $0.info } }
    var vm: Fork.Container? { state.withLock { $0.vm } }
    var exit: ExitInfo? { state.withLock { $0.exit } }
    var isLive: Bool { state.withLock { !$0.removed && ($0.vm != nil || ($0.shard != nil && $0.exit == nil)) } }
    var shard: Int? { state.withLock { $0.shard } }

    func setShard(_ shard: Int) { state.withLock { $0.shard = shard } }

    /// Keeps what a worker sent with a run's end.
    func took(_ end: WorkerRunEnd) {
        state.withLock { state in
            if let stdout = end.stdout, let stderr = end.stderr { state.output = (stdout, stderr) }
            state.removedInWorker = end.removed
        }
    }

    /// Its worker removed it (a run on a caller's connection the worker held: `callerRunRemoved`).
    func removedThere() { state.withLock { $0.removedInWorker = true } }

    var output: (stdout: [UInt8], stderr: [UInt8])? { state.withLock { $0.output } }
    var removedInWorker: Bool { state.withLock { $0.removedInWorker } }
    /// The worker that still holds it: its shard, unless that worker removed it at its run's end
    /// (then nothing is left there to start, signal, write to or resize).
    var liveShard: Int? { state.withLock { $0.removedInWorker ? nil : $0.shard } }

    /// Takes a worker's view of the container (created or running) unless it has ended here
    /// already; true when something changed.
    func applyRemote(_ remote: ContainerInfo) -> Bool {
        state.withLock { state in
            guard state.exit == nil, remote.state != .exited,
                  state.info.state != remote.state || state.info.startedAt != remote.startedAt else { return false }
            state.info.state = remote.state
            state.info.startedAt = remote.startedAt
            return true
        }
    }

    /// `finish` for a container whose end a worker reports, perhaps more than once: nil when
    /// it has ended already.
    func finishOnce(_ exit: ExitInfo, at time: Double, startedAt: Double?) -> (info: ContainerInfo, wake: () -> Void)? {
        let first = state.withLock { state -> Bool in
            guard state.exit == nil, !state.finishing else { return false }
            state.finishing = true
            if state.info.startedAt == nil { state.info.startedAt = startedAt }
            return true
        }
        guard first else { return nil }
        return finish(exit, at: time)
    }

    var stdoutPath: String { ContainerFolder.path(ContainerFolder.logFile(.stdout), in: logFolder) }
    var stderrPath: String { ContainerFolder.path(ContainerFolder.logFile(.stderr), in: logFolder) }

    /// Marks it running and returns its VM, or nil when it was not in the created state.
    func markRunning(at time: Double) -> Fork.Container? {
        state.withLock { state in
            guard state.info.state == .created, let vm = state.vm else { return nil }
            state.info.state = .running
            state.info.startedAt = time
            return vm
        }
    }

    /// Records how it ended; returns the info to persist and a call that wakes its waiters
    /// (made after the exit is queued for the event log, so the log keeps cause before effect).
    func finish(_ exit: ExitInfo, at time: Double) -> (info: ContainerInfo, wake: () -> Void) {
        let (waiters, info) = state.withLock { state in
            state.exit = exit
            state.info.state = .exited
            state.info.exitCode = exit.exitCode
            state.info.exitReason = exit.reason
            state.info.finishedAt = time
            if state.stdinWriter >= 0 {
                close(state.stdinWriter)
                state.stdinWriter = -1
            }
            defer { state.waiters = [] }
            return (state.waiters, state.info)
        }
        return (info, { for waiter in waiters { waiter.resume(returning: exit) } })
    }

    /// Waits until the container has ended.
    func waitForExit() async -> ExitInfo {
        await withCheckedContinuation { (continuation: CheckedContinuation<ExitInfo, Never>) in
            let ended: ExitInfo? = state.withLock { state in
                if let exit = state.exit { return exit }
                state.waiters.append(continuation)
                return nil
            }
            if let ended { continuation.resume(returning: ended) }
        }
    }

    /// Waits up to `timeout` for the container to end; nil when it is still running then.
    func waitForExit(timeout: Duration) async -> ExitInfo? {
        await withTaskGroup(of: ExitInfo?.self) { group in
            group.addTask { await self.waitForExit() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            if first != nil {
                group.cancelAll()
                return first
            }
            // The timer won: the waiter task stays until the container ends (kill follows).
            return nil
        }
    }

    /// Writes to its open standard input; closes it afterwards when `closing`. Nothing to
    /// write to an input already closed (a ^C that ended the container, say) is no error.
    func writeStdin(_ data: Data, closing: Bool) throws(EngineError) {
        guard attachable else { throw EngineError(.conflict, "container \(id) has no open standard input (create it with openStdin)") }
        // A duplicate taken under the lock: the container's end (finish) closes its own
        // descriptor meanwhile, never the number written to here, which could be reused.
        let (fd, failure) = state.withLock { state -> (Int32, Int32) in
            guard state.stdinWriter >= 0 else { return (-1, 0) }
            let copy = fcntl(state.stdinWriter, F_DUPFD_CLOEXEC, 0)
            return (copy, copy < 0 ? errno : 0)
        }
        guard fd >= 0 else {
            if failure != 0 { throw EngineError(.unavailable, "standard input of container \(id): \(String(cString: strerror(failure)))") }
            if data.isEmpty { return }
            throw EngineError(.conflict, "standard input of container \(id) is closed (it ended, or was closed)")
        }
        defer { close(fd) }
        var offset = 0
        while offset < data.count {
            // unsafe: offset < count, so the pointer and length stay inside the buffer.
            let written = data.withUnsafeBytes { bytes in Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                throw EngineError(.conflict, "standard input of container \(id) is closed: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
        if closing { closeStdin() }
    }

    func closeStdin() {
        state.withLock { state in
            if state.stdinWriter >= 0 {
                close(state.stdinWriter)
                state.stdinWriter = -1
            }
        }
    }

    /// Detaches the VM for removal; nil when already removed.
    func takeForRemoval() -> (vm: Fork.Container?, wasRemoved: Bool) {
        state.withLock { state in
            let wasRemoved = state.removed
            state.removed = true
            defer { state.vm = nil }
            return (state.vm, wasRemoved)
        }
    }

    func update(_ body: (inout ContainerInfo) -> Void) {
        state.withLock { body(&$0.info) }
    }
}
