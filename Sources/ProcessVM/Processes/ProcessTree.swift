import Foundation
import HostSystem
import KVM

/// The processes of one container: its first process (the one the engine started, or forked
/// from a warm parent) and every process it forked since, each in a process VM of its own.
/// It gives out pids, holds the container's process limit, keeps each process's parent,
/// process group and session, and keeps a finished process's status until its parent reaps
/// it (a zombie, as Linux keeps one), so that wait4 and kill between the container's
/// processes work as on Linux. When the first process ends, every other one is killed and
/// its VM released before the container's `run` returns, as the end of a pid namespace's
/// init ends the namespace.
///
/// `@unchecked Sendable`: every field is read and written under `condition`, except the
/// constants and `system` (made once under the lock, never changed).
public final class ProcessTree: @unchecked Sendable {
    /// One process, running or a zombie.
    struct Entry {
        /// The running process's VM; nil for the first process (its owner holds it) and once
        /// the process has ended.
        var vm: ProcessVM?
        var parent: Int32
        var processGroup: Int32
        var session: Int32
        /// Set once the process has ended; the entry goes when its parent reaps it.
        var status: ExitStatus?
        /// True once it called execve: its parent may no longer change its process group.
        var hasExeced = false
        /// argv of its last execve (a forked process keeps its parent's); nil while it runs
        /// the container's own program.
        var command: [String]?
        /// A stop or a continue its parent has not waited for yet (WUNTRACED, WCONTINUED).
        var jobReport: JobReport?
    }

    /// A change of a process's job-control state, as a wait reports it.
    enum JobReport: Equatable {
        case stopped(Int32)
        case continued
    }

    /// One process as `processes` reports it.
    public struct ProcessEntry: Sendable, Equatable {
        public let pid: Int32
        public let parentPid: Int32
        /// False for a zombie (ended, not yet reaped).
        public let running: Bool
        /// argv of the program it runs since an execve; nil for the container's own program.
        public let command: [String]?
    }

    /// What a forked process did, counted when it ended.
    public struct ProcessReport: Sendable, Equatable {
        public let pid: Int32
        public let status: ExitStatus
        /// VM exits over its life (nil where KVM keeps no statistics).
        public let exits: UInt64?
    }

    public let rootPid: Int32
    /// Processes (running and zombies) the container may have at once, the first included:
    /// fork past it gives EAGAIN, as RLIMIT_NPROC does.
    public let processLimit: Int
    private let condition = NSCondition()
    private var entries: [Int32: Entry] = [:]
    private var nextPid: Int32
    /// The first process has ended: no process may be forked any more.
    private var terminating = false
    /// Threads running forked processes, joined when the first process ends.
    private let running = DispatchGroup()
    /// Processes whose SIGCHLD is ignored (their children leave no zombie).
    private var autoReaping: Set<Int32> = []
    private var kvm: (system: KVMSystem, cpuid: CPUIDTable)?
    private var reports: [ProcessReport] = []
    private var endedCPU = 0.0
    /// Thread ids given out to the threads (beyond each process's first) alive now: they
    /// come from the pids' numbers and count against `processLimit`, as RLIMIT_NPROC counts
    /// threads on Linux.
    private var threadIDs: Set<Int32> = []
    /// The most reports kept (the first ones): a guest forking in a loop must not grow them.
    static let reportLimit = 4096

    init(root: Int32, parentOfRoot: Int32, processLimit: Int) {
        rootPid = root
        self.processLimit = max(1, processLimit)
        nextPid = root &+ 1
        entries[root] = Entry(vm: nil, parent: parentOfRoot, processGroup: root, session: root)
    }

    private func locked<T>(_ body: () throws(LinuxErrno) -> T) throws(LinuxErrno) -> T {
        condition.lock()
        defer { condition.unlock() }
        return try body()
    }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    /// The KVM system and CPUID children are made with, opened on the first fork.
    func kvmSystem() throws(KVMError) -> (system: KVMSystem, cpuid: CPUIDTable) {
        condition.lock()
        defer { condition.unlock() }
        if let kvm { return kvm }
        let system = try KVMSystem()
        let made = (system, try system.supportedCPUID())
        kvm = made
        return made
    }

    // MARK: - Forks and ends

    /// Reserves a pid for a child of `parent`, or EAGAIN at the process limit (or once the
    /// container is ending).
    func reservePid(parent: Int32) throws(LinuxErrno) -> Int32 {
        try locked { () throws(LinuxErrno) -> Int32 in
            guard !terminating, entries.count + threadIDs.count < processLimit, let parentEntry = entries[parent], parentEntry.status == nil else { throw .EAGAIN }
            let pid = takeNextID()
            entries[pid] = Entry(vm: nil, parent: parent, processGroup: parentEntry.processGroup, session: parentEntry.session,
                                 command: parentEntry.command)
            return pid
        }
    }

    /// The next free number for a pid or a thread id. Under the lock.
    private func takeNextID() -> Int32 {
        var id = nextPid
        // Ids wrap inside the positive range, skipping those in use.
        while entries[id] != nil || threadIDs.contains(id) || id <= 0 { id = id >= Int32.max - 1 ? rootPid &+ 1 : id + 1 }
        nextPid = id + 1
        return id
    }

    /// A thread id for a new thread of a process, or EAGAIN at the process limit (threads
    /// count) or once the container is ending.
    func reserveThreadID() throws(LinuxErrno) -> Int32 {
        try locked { () throws(LinuxErrno) -> Int32 in
            guard !terminating, entries.count + threadIDs.count < processLimit else { throw .EAGAIN }
            let id = takeNextID()
            threadIDs.insert(id)
            return id
        }
    }

    /// Gives back the id of a thread that ended (or could not be made).
    func releaseThreadID(_ id: Int32) {
        locked { _ = threadIDs.remove(id) }
    }

    /// Gives back a pid reserved for a child that could not be made.
    func releasePid(_ pid: Int32) {
        locked { entries[pid] = nil }
    }

    /// Runs `child` (reserved pid `pid`) on a thread of its own until it ends. False when
    /// the container began ending meanwhile (the child is then not run; its pid is gone).
    func start(_ child: ProcessVM, pid: Int32) -> Bool {
        let admitted = locked { () -> Bool in
            guard !terminating, entries[pid] != nil else {
                entries[pid] = nil
                return false
            }
            entries[pid]?.vm = child
            running.enter()
            return true
        }
        guard admitted else { return false }
        let thread = Thread { [self] in
            let status: ExitStatus
            do { status = try child.run() } catch {
                EngineDiagnostics.write("vmfork: process \(pid) of the container ended: \(error)\n")
                status = .signaled(9)
            }
            let cpu = child.cpuSeconds
            locked { endedCPU += cpu }
            ended(pid, status: status, exits: child.lastRunCounters?.exits)
            running.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
        return true
    }

    /// Records that `pid` ended: its children go to the first process, its VM goes, and its
    /// parent gets SIGCHLD (when it has a handler) and wakes from wait4.
    private func ended(_ pid: Int32, status: ExitStatus, exits: UInt64?) {
        let parent: ProcessVM? = locked {
            guard var entry = entries[pid] else { return nil }
            entry.vm = nil
            entry.status = status
            if reports.count < Self.reportLimit { reports.append(ProcessReport(pid: pid, status: status, exits: exits)) }
            for (other, child) in entries where child.parent == pid { entries[other]?.parent = rootPid }
            let parentPid = entry.parent
            if autoReaping.contains(parentPid) {
                entries[pid] = nil
            } else {
                entries[pid] = entry
            }
            condition.broadcast()
            return parentPid == rootPid ? rootVM : entries[parentPid]?.vm
        }
        parent?.childEnded()
    }

    /// The first process's VM, which it registers itself (weakly: its owner holds it).
    weak var rootVM: ProcessVM?

    /// The first process ended: every other process is killed, and this returns once all of
    /// them have ended and their VMs are released.
    func rootEnded() {
        let victims: [ProcessVM] = locked {
            terminating = true
            return entries.values.compactMap(\.vm)
        }
        for vm in victims { vm.kill() }
        running.wait()
    }

    /// Kills every process, the first included (the container's kill).
    func killAll(signal: Int32 = 9) {
        let victims: [ProcessVM] = locked { entries.values.compactMap(\.vm) }
        for vm in victims { vm.kill(signal: signal) }
    }

    // MARK: - wait4

    enum Reaped {
        case child(pid: Int32, status: ExitStatus)
        /// A child stopped (by the signal), or went on, since its parent last waited for that.
        case jobChange(pid: Int32, JobReport)
        /// Children match, none has ended yet.
        case noneYet
    }

    /// Which children a wait4/waitid selects.
    enum Selection {
        case any
        case pid(Int32)
        case group(Int32)
        /// The caller's own process group.
        case ownGroup
    }

    /// Takes (or with `keep`, only looks at) an ended child of `parent` that `selection`
    /// names; ECHILD when no child matches at all.
    func reap(parent: Int32, _ selection: Selection, keep: Bool, exited: Bool = true, stopped: Bool = false,
              continued: Bool = false) throws(LinuxErrno) -> Reaped {
        try locked { () throws(LinuxErrno) -> Reaped in
            let ownGroup = entries[parent]?.processGroup
            let children = entries.filter { pid, entry in
                guard entry.parent == parent, pid != parent else { return false }
                switch selection {
                case .any: return true
                case .pid(let wanted): return pid == wanted
                case .group(let group): return entry.processGroup == group
                case .ownGroup: return entry.processGroup == ownGroup
                }
            }
            guard !children.isEmpty else { throw .ECHILD }
            if exited, let (pid, entry) = children.filter({ $0.value.status != nil }).min(by: { $0.key < $1.key }) {
                if !keep { entries[pid] = nil }
                return .child(pid: pid, status: entry.status!)
            }
            let changes = children.filter { _, entry in
                guard entry.status == nil, let report = entry.jobReport else { return false }
                return report == .continued ? continued : stopped
            }
            guard let (pid, entry) = changes.min(by: { $0.key < $1.key }) else { return .noneYet }
            if !keep { entries[pid]?.jobReport = nil }
            return .jobChange(pid: pid, entry.jobReport!)
        }
    }

    /// `pid` stopped or went on: kept for its parent's wait, which is woken (and SIGCHLD
    /// sent when the parent asks for it). The first process has no parent in the container.
    func jobStateChanged(_ pid: Int32, _ report: JobReport) {
        let parent: ProcessVM? = locked {
            guard pid != rootPid, let entry = entries[pid], entry.status == nil else { return nil }
            entries[pid]?.jobReport = report
            condition.broadcast()
            return entry.parent == rootPid ? rootVM : entries[entry.parent]?.vm
        }
        parent?.childChangedJobState()
    }

    /// Whether `pid` ignores SIGCHLD (SIG_IGN or SA_NOCLDWAIT): its children then leave no
    /// zombies, and those it has go now.
    func setAutoReaping(_ pid: Int32, _ value: Bool) {
        locked {
            if value {
                autoReaping.insert(pid)
                for (child, entry) in entries where entry.parent == pid && entry.status != nil { entries[child] = nil }
            } else {
                autoReaping.remove(pid)
            }
        }
    }

    // MARK: - Identity, groups, sessions

    func parent(of pid: Int32) -> Int32? { locked { entries[pid]?.parent } }
    func processGroup(of pid: Int32) -> Int32? { locked { entries[pid].map(\.processGroup) } }
    func session(of pid: Int32) -> Int32? { locked { entries[pid].map(\.session) } }

    /// True when a running process of `pid`'s session is in process group `group`
    /// (what TIOCSPGRP accepts).
    func groupExists(_ group: Int32, inSessionOf pid: Int32) -> Bool {
        locked {
            guard let session = entries[pid]?.session else { return false }
            return entries.values.contains { $0.processGroup == group && $0.session == session && $0.status == nil }
        }
    }

    func markExeced(_ pid: Int32, command: [String]) {
        locked {
            entries[pid]?.hasExeced = true
            entries[pid]?.command = command
        }
    }

    /// setpgid(2) by `caller`: `pid` is the caller or one of its children (not after its
    /// execve), in the caller's session; the group is new (its own pid) or one in the session.
    func setProcessGroup(caller: Int32, pid requested: Int32, group requestedGroup: Int32) throws(LinuxErrno) {
        try locked { () throws(LinuxErrno) in
            guard requestedGroup >= 0 else { throw .EINVAL }
            let pid = requested == 0 ? caller : requested
            let group = requestedGroup == 0 ? pid : requestedGroup
            guard let target = entries[pid], let callerEntry = entries[caller] else { throw .ESRCH }
            if pid != caller {
                guard target.parent == caller else { throw .ESRCH }
                guard target.session == callerEntry.session else { throw .EPERM }
                guard !target.hasExeced else { throw .EACCES }
            }
            // A session leader cannot move.
            guard target.session != pid else { throw .EPERM }
            if group != pid {
                guard entries.values.contains(where: { $0.processGroup == group && $0.session == target.session && $0.status == nil }) else {
                    throw .EPERM
                }
            }
            entries[pid]?.processGroup = group
        }
    }

    /// setsid(2): a new session and group led by `pid`, unless it leads a group already.
    func newSession(_ pid: Int32) throws(LinuxErrno) -> Int32 {
        try locked { () throws(LinuxErrno) -> Int32 in
            guard entries[pid] != nil else { throw .ESRCH }
            guard !entries.contains(where: { $0.value.processGroup == pid }) else { throw .EPERM }
            entries[pid]?.processGroup = pid
            entries[pid]?.session = pid
            return pid
        }
    }

    // MARK: - Signals between processes

    /// The running processes `kill(pid)` from `caller` names: a pid, a group (-pgid, or 0
    /// for the caller's), or every process but the caller (-1). ESRCH when none exists
    /// (a zombie counts as existing, and gets nothing).
    func signalTargets(caller: Int32, pid: Int32) throws(LinuxErrno) -> [ProcessVM?] {
        try locked { () throws(LinuxErrno) -> [ProcessVM?] in
            let matches: [(Int32, Entry)]
            switch pid {
            case Int32.min: throw .ESRCH
            case -1: matches = entries.filter { $0.key != caller && $0.key != rootPid }.map { ($0.key, $0.value) }
            case 0, ..<0:
                let group = pid == 0 ? entries[caller]?.processGroup ?? caller : -pid
                matches = entries.filter { $0.value.processGroup == group }.map { ($0.key, $0.value) }
            default:
                matches = entries[pid].map { [(pid, $0)] } ?? []
            }
            guard !matches.isEmpty else { throw .ESRCH }
            return matches.filter { $0.1.status == nil }.map { key, entry in key == rootPid ? rootVM : entry.vm }
        }
    }

    /// The running processes of process group `group` (a terminal's foreground group).
    func runningMembers(ofGroup group: Int32) -> [ProcessVM] {
        locked {
            entries.filter { $0.value.processGroup == group && $0.value.status == nil }
                .compactMap { $0.key == rootPid ? rootVM : $0.value.vm }
        }
    }

    // MARK: - Reports

    /// Processes alive now (the first one included) and zombies not reaped yet.
    public var processCount: Int { locked { entries.count } }

    /// Those processes, by pid.
    public var processes: [ProcessEntry] {
        locked {
            entries.map { ProcessEntry(pid: $0.key, parentPid: $0.value.parent, running: $0.value.status == nil, command: $0.value.command) }
                .sorted { $0.pid < $1.pid }
        }
    }

    /// VMs of the forked processes running now (not the first process's).
    public var runningVMs: [ProcessVM] { locked { entries.values.compactMap(\.vm) } }
    /// CPU seconds of the processes other than the first that have ended.
    public var endedCPUSeconds: Double { locked { endedCPU } }

    /// Every forked process that ended, with its status and VM exits, in the order they ended.
    public var endedProcesses: [ProcessReport] { locked { reports } }
}
