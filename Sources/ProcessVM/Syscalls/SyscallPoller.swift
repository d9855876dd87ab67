import CShims
import Foundation
import HostSystem
import KVM
import Synchronization

/// One engine thread that serves the posted system calls of the VMs it watches, without a
/// VM exit: the guest's stub spins on its mailbox page while the poller runs the call. Only
/// calls that neither block nor touch the vCPU's registers are served here; the rest are
/// handed back to the stub, which then exits as usual.
///
/// Spin briefly, then block: the poller watches a VM from the moment it starts to run. It
/// stops watching every VM once none has posted for `parkAfter`, and, while others post, a VM
/// that has posted nothing for `dormantAfter`: it clears the VM's `pollerActive` word, so the
/// stub exits straight away (and gives up a wait in progress). The next call of that VM that
/// the poller could have served takes the exit path and has it watched again
/// (`ProcessVM.resumePolling`). So a container that computes, sleeps or waits for input costs
/// the poller nothing, and a turn visits only the VMs making calls: with 1,000 idle
/// containers alive, visiting all of them at each turn made fork → echo 717 µs against
/// 526 µs. The poller yields its core at each turn once nothing has been posted for a while,
/// and sleeps when it watches no VM, after lingering briefly when the last one ended: forks
/// come in runs, and a child's first call would otherwise wait for it to wake. And when it
/// finds it lost its core (a turn of its loop took over 1 ms) while it watches fewer VMs than
/// there are cores, other work wants the host: guests would spin for a poller that is not
/// running, so polling stays off for 10 ms and every call exits.
///
/// Polling must also pay for itself: once the engine has measured what a call costs on this
/// machine by VM exit and by the poller (`setCosts`), the poller compares, over each stretch
/// of its work (at least 2 ms of its CPU time), that CPU time with what the calls it served
/// saved (each the difference of the two costs). When it spent
/// more than they saved, polling stays off for half a second and every call exits. Short
/// containers make few calls the poller can serve (a `busybox echo` forked at main, about
/// one; the rest of its exits are faults) while it spins through their whole life: measured
/// at 400-2,000 launches a second with VM exits at 22.6 µs, polling cost the engine 20 %
/// more CPU per launch and 15-30 % more latency than exits. A program making many calls
/// (a shell loop writing lines) keeps polling on.
///
/// One poller per KVM system (`of(_:)`), so the engine that owns the system owns its poller;
/// `stop()` ends its thread once no VM runs (the engine's shutdown does).
///
/// `@unchecked Sendable`: `watched`, `started`, `threadID`, `stopped` and `backingOffUntil` are read and written under
/// `condition`; `generation`, the counters and the costs are Atomics; the loop's state is local to the poller thread.
public final class SyscallPoller: KVMSystemCompanion, @unchecked Sendable {
    /// The poller of the VMs of `system`, started at its first VM.
    public static func of(_ system: KVMSystem) -> SyscallPoller {
        system.companion(SyscallPoller.self) { SyscallPoller() }
    }

    /// How long the poller keeps spinning with no VM to watch before it sleeps. Short: at
    /// hundreds of launches a second a 2 ms linger (and park, below) kept it spinning on a
    /// core from one container to the next, 1-2 ms of CPU per `busybox echo` that makes a few
    /// calls; a VM that starts while it sleeps wakes it (`watch`).
    private static let linger: Duration = .microseconds(200)
    /// How long it spins with nothing posted before it yields its core at each turn.
    private static let yieldAfter: Duration = .microseconds(200)
    /// How long the poller goes on with nothing posted by any VM before it stops watching all.
    private static let parkAfter: Duration = .microseconds(500)
    /// How long one VM goes without posting while others post before the poller stops
    /// watching it: longer than a time slice, so that a vCPU thread waiting for a core (more
    /// busy VMs than cores) is not taken for a quiet one.
    private static let dormantAfter: Duration = .milliseconds(10)
    /// A turn of the loop that took this long means the poller lost its core to other work.
    private static let preemptedAfter: Duration = .milliseconds(1)
    /// How long polling stays off once the poller has lost its core.
    private static let backOff: Duration = .milliseconds(10)
    private static let cores = ProcessInfo.processInfo.activeProcessorCount
    /// How much polling is looked at, at most, before the poller judges whether it paid.
    private static let judgedEvery: Duration = .milliseconds(20)
    /// Less of the poller's CPU time than this is too little to judge: the stretch carries on,
    /// across the poller's sleeps (its CPU clock stops while it sleeps). Short containers each
    /// cost it a few hundred µs, so several go into one judgement; a vCPU kept off its core
    /// for a moment (the poller spinning for nothing meanwhile) does not turn polling off alone.
    private static let leastJudgedNanoseconds = 2_000_000
    /// How long polling stays off once it cost more than it saved.
    private static let unprofitableBackOff: Duration = .milliseconds(500)

    /// A watched VM and its mailbox page (which never moves while the VM lives).
    private struct Watched {
        var vm: ProcessVM
        let mailbox: UnsafeMutableRawPointer
        /// Tells this watch from a later one of the same VM.
        let serial: Int
        /// When it last posted a call (or started to be watched).
        var lastPosted: ContinuousClock.Instant
    }

    private let condition = NSCondition()
    private var watched: [ObjectIdentifier: Watched] = [:]
    /// Bumped (under the lock) whenever the watched set changes, so the loop copies the set
    /// only when it changed.
    private let generation = Atomic<Int>(0)
    /// Where a VM whose last reference was the loop's is torn down (see `letGo`).
    private let releaseQueue = BackgroundThread(name: "vmfork-release")
    private var started = false
    /// The poller thread's kernel id, once it started (for per-thread CPU figures).
    public var kernelThreadID: pid_t? { condition.withLock { threadID } }
    private var threadID: pid_t?
    /// Set by `stop()`: the thread ends at its next idle turn and no VM is watched again.
    private var stopped = false
    /// Until when polling is off because the host has no core to spare for it.
    private var backingOffUntil: ContinuousClock.Instant?
    /// Calls served without an exit, and how often polling went off for want of a core (a turn
    /// that lost the core, or a judged stretch that served no call at all).
    private let callsServed = Atomic<Int>(0)
    private let backOffs = Atomic<Int>(0)
    /// How often polling went off because it cost more than it saved.
    private let unprofitableBackOffs = Atomic<Int>(0)
    /// What a call costs by VM exit and by the poller on this machine (nanoseconds), once
    /// measured (`setCosts`); 0 while unknown, when polling is never judged.
    private let exitNanoseconds = Atomic<Int>(0)
    private let polledNanoseconds = Atomic<Int>(0)

    /// This machine's costs, as the engine measured them (`MachineCosts`): from now on the
    /// poller judges whether polling pays.
    public func setCosts(_ costs: MachineCosts) {
        exitNanoseconds.store(Int(costs.exitMicroseconds * 1000), ordering: .relaxed)
        polledNanoseconds.store(Int(costs.polledMicroseconds * 1000), ordering: .relaxed)
    }

    /// The costs it judges by, once set: (exit, polled call) in µs.
    public var costs: (exitMicroseconds: Double, polledMicroseconds: Double)? {
        let exit = exitNanoseconds.load(ordering: .relaxed)
        guard exit > 0 else { return nil }
        return (Double(exit) / 1000, Double(polledNanoseconds.load(ordering: .relaxed)) / 1000)
    }

    /// The poller's CPU time and calls served at the start of the stretch being judged.
    private struct Stretch {
        var started: ContinuousClock.Instant
        var cpuNanoseconds: Int
        var served = 0

        init() {
            started = .now
            cpuNanoseconds = Stretch.threadCPUNanoseconds()
        }

        static func threadCPUNanoseconds() -> Int {
            var time = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
            return time.tv_sec * 1_000_000_000 + time.tv_nsec
        }
    }

    /// Whether the stretch's polling cost the poller more CPU than its calls saved; nil when
    /// there is too little to judge yet (or the costs are unknown). A judged stretch starts anew.
    private func judge(_ stretch: inout Stretch) -> Bool? {
        let saving = exitNanoseconds.load(ordering: .relaxed) - polledNanoseconds.load(ordering: .relaxed)
        guard exitNanoseconds.load(ordering: .relaxed) > 0 else { return nil }
        let spent = Stretch.threadCPUNanoseconds() - stretch.cpuNanoseconds
        guard spent >= Self.leastJudgedNanoseconds else {
            // Too little to judge: the stretch goes on, looked at again `judgedEvery` later.
            stretch.started = .now
            return nil
        }
        let served = stretch.served
        let unprofitable = !Self.paid(spentNanoseconds: spent, served: served, savingNanoseconds: saving)
        stretch = Stretch()
        // A stretch that served nothing says no call was worth too little: its vCPUs did not
        // run (a busy host), which counts as the poller's want of a core.
        if unprofitable, served == 0 {
            backOffs.add(1, ordering: .relaxed)
        } else if unprofitable {
            unprofitableBackOffs.add(1, ordering: .relaxed)
        }
        return unprofitable
    }

    /// Whether polling paid over a stretch: the poller spent no more CPU than the calls it
    /// served saved, each `savingNanoseconds` (an exit's cost less a polled call's).
    static func paid(spentNanoseconds: Int, served: Int, savingNanoseconds: Int) -> Bool {
        spentNanoseconds <= served * max(0, savingNanoseconds)
    }

    /// The poller's figures so far, for the engine's metrics.
    public var statistics: SystemCallPollerStatistics {
        SystemCallPollerStatistics(callsServed: callsServed.load(ordering: .relaxed), backOffs: backOffs.load(ordering: .relaxed),
                                   watchedVMs: condition.withLock { watched.count },
                                   unprofitableBackOffs: unprofitableBackOffs.load(ordering: .relaxed))
    }

    /// Watches `vm`, whose mailbox page is `mailbox`, and turns its stub to polling, unless
    /// the poller backs off (the stub then keeps exiting). Called by the vCPU thread when the
    /// VM starts to run, and when a call the poller could have served took the exit path.
    func watch(_ vm: ProcessVM, mailbox: UnsafeMutableRawPointer) {
        let added = condition.withLock { () -> Bool in
            startIfNeeded()
            guard !backingOff, !stopped else {
                Self.setPollerActive(mailbox, false)
                return false
            }
            var added = false
            if watched[ObjectIdentifier(vm)] == nil {
                let serial = generation.add(1, ordering: .releasing).newValue
                watched[ObjectIdentifier(vm)] = Watched(vm: vm, mailbox: mailbox, serial: serial, lastPosted: .now)
                added = true
            }
            Self.setPollerActive(mailbox, true)
            return added
        }
        // Woken after the lock is let go: the poller, at a higher priority, takes the core at
        // once, and woken under the lock it only blocked on it and was woken again (traced:
        // two switches per container). Not lost: it looks at `watched` under the lock first.
        if added { condition.broadcast() }
    }

    /// Starts the poller's thread now rather than at the first VM, and returns its kernel id
    /// (nil when it did not start within a second): an engine worker has it started early so
    /// that its daemon, which holds CAP_SYS_NICE, can raise its priority (`startIfNeeded`).
    public func startNow() -> pid_t? {
        condition.withLock { startIfNeeded() }
        let deadline = ContinuousClock.now + .seconds(1)
        while ContinuousClock.now < deadline {
            if let thread = kernelThreadID { return thread }
            usleep(100)
        }
        return nil
    }

    /// Stops watching a VM whose program ended.
    /// The poller's loop may still hold the VM in the set it copied before; should that be
    /// the VM's last reference, the loop hands it to `releaseQueue` (see `letGo`).
    func unregister(_ vm: ProcessVM) {
        condition.withLock {
            guard let entry = watched.removeValue(forKey: ObjectIdentifier(vm)) else { return }
            Self.setPollerActive(entry.mailbox, false)
            generation.add(1, ordering: .releasing)
        }
    }

    /// Drops the loop's references to `entries`, outside the lock. A VM whose owner let go
    /// while the loop still held it would be torn down right here — closing its KVM
    /// descriptors and unmapping its memory, milliseconds of work on the thread every other
    /// VM waits for — so such a VM's last reference goes to `releaseQueue` instead. (Waiting
    /// in `unregister` until the loop let go cost every fork ~100 µs on 2 busy cores.)
    private func letGo(_ entries: inout [Watched]) {
        while var entry = entries.popLast() {
            guard isKnownUniquelyReferenced(&entry.vm) else { continue }
            let vm = entry.vm
            releaseQueue.async { withExtendedLifetime(vm) {} }
        }
    }

    /// Ends the poller's thread once it watches no VM (at once when it is idle): the engine's
    /// shutdown calls it after its VMs stopped. VMs that run later take the exit path.
    public func systemEnded() { stop() }

    public func stop() {
        condition.withLock {
            stopped = true
            condition.broadcast()
        }
    }

    private var backingOff: Bool {
        guard let until = backingOffUntil else { return false }
        return ContinuousClock.now < until
    }

    /// The word is written under the lock, so it always says whether the VM is watched.
    private static func setPollerActive(_ mailbox: UnsafeMutableRawPointer, _ active: Bool) {
        // unsafe: callers hold the VM, so its mailbox page stays mapped; pollerActive (+4) is a 4-aligned word inside it.
        cshims_atomic_store_u32(mailbox.advanced(by: Int(SyscallStub.Offset.pollerActive)).assumingMemoryBound(to: UInt32.self),
                                active ? 1 : 0)
    }

    private func startIfNeeded() {
        guard !started else { return }
        started = true
        let thread = Thread { [self] in
            // Named for ps and top (Foundation's name does not reach the kernel's).
            _ = cshims_set_thread_name("vmfork-poller")
            let kernelID = pid_t(cshims_thread_id())
            condition.withLock { threadID = kernelID }
            // Guests spin while they wait for it, so it must win a core when it is
            // runnable: at normal priority 1 % of forks waited a 3 ms time slice for it
            // (fork → echo p99 3.1 ms against 0.3 ms at nice -10). Raising priority
            // needs CAP_SYS_NICE; without it the poller runs at normal priority (an engine
            // worker has none: its daemon raises it, see `startNow`).
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -10)
            loop()
        }
        thread.start()
    }

    private func loop() {
        var current: [Watched] = []
        var seenGeneration = -1
        var lastServed = ContinuousClock.now
        var lastBusy = ContinuousClock.now
        var lastTurn = ContinuousClock.now
        /// Bumped at each turn while VMs are watched, and written to their mailboxes.
        var heartbeat: UInt32 = 0
        var stretch = Stretch()
        while true {
            // The set is copied only when it changed: the lock is not taken at each turn,
            // where it would starve a thread starting a VM.
            if generation.load(ordering: .acquiring) != seenGeneration {
                // Each VM keeps when it last posted across copies.
                let lastPosted = Dictionary(uniqueKeysWithValues: current.map { ($0.serial, $0.lastPosted) })
                let (fresh, freshGeneration) = condition.withLock {
                    (watched.values.map { entry in
                        var entry = entry
                        if let posted = lastPosted[entry.serial] { entry.lastPosted = posted }
                        return entry
                    }, generation.load(ordering: .relaxed))
                }
                // The old set's references go outside the lock.
                var previous = current
                current = fresh
                letGo(&previous)
                seenGeneration = freshGeneration
                // A VM just watched has not had its chance to post yet.
                lastServed = ContinuousClock.now
            }
            if current.isEmpty {
                if ContinuousClock.now - lastBusy > Self.linger {
                    // The stretch that ends here is judged (its lingering included).
                    if judge(&stretch) == true {
                        stopWatchingAll(&current, until: .now + Self.unprofitableBackOff)
                    }
                    condition.withLock {
                        while watched.isEmpty && !stopped { condition.wait() }
                    }
                    if condition.withLock({ stopped && watched.isEmpty }) { return }
                } else {
                    sched_yield()
                }
                lastTurn = ContinuousClock.now
                continue
            }
            let now = ContinuousClock.now
            lastBusy = now
            var served = false
            heartbeat &+= 1
            for index in current.indices {
                // A stub spinning on this mailbox sees the poller is on its core.
                // unsafe: `current` holds each VM, so its mailbox page stays mapped; state (+0) and heartbeat (+80) are 4-aligned words in it.
                cshims_atomic_store_u32((current[index].mailbox + Int(SyscallStub.Offset.heartbeat)).assumingMemoryBound(to: UInt32.self), heartbeat)
                let state = cshims_atomic_load_u32(current[index].mailbox.assumingMemoryBound(to: UInt32.self))
                if state == SyscallStub.State.posted.rawValue, current[index].vm.servePostedSystemCall() {
                    current[index].lastPosted = now
                    served = true
                    stretch.served += 1
                    callsServed.add(1, ordering: .relaxed)
                } else if now - current[index].lastPosted > Self.dormantAfter {
                    stopWatching(current[index])
                }
            }
            if current.count < Self.cores, now - lastTurn > Self.preemptedAfter {
                // The poller lost its core although its VMs leave one free: other work wants
                // the host, and guests would spin while the poller waits for a core, each
                // call costing more than an exit. Polling stays off for a while. (With as
                // many busy VMs as cores, losing the core is expected, and whichever vCPU
                // runs is still served in microseconds.)
                backOffs.add(1, ordering: .relaxed)
                stopWatchingAll(&current, until: now + Self.backOff)
            } else if now - stretch.started > Self.judgedEvery, judge(&stretch) == true {
                stopWatchingAll(&current, until: now + Self.unprofitableBackOff)
            } else if served {
                lastServed = now
            } else if now - lastServed > Self.parkAfter {
                let unprofitable = judge(&stretch) == true
                stopWatchingAll(&current, until: unprofitable ? now + Self.unprofitableBackOff : nil)
            } else if now - lastServed > Self.yieldAfter {
                // Nothing posted for a while: let other threads (pool refill, teardown)
                // have the core, but come back at once if none wants it.
                sched_yield()
            }
            lastTurn = ContinuousClock.now
        }
    }

    /// Turns a VM's stub to the exit path, then serves a call it may have posted just before.
    private func stopWatching(_ entry: Watched) {
        let stopped: Bool = condition.withLock {
            // The VM may have left, or been watched anew, since the loop copied the set.
            guard watched[ObjectIdentifier(entry.vm)]?.serial == entry.serial else { return false }
            watched.removeValue(forKey: ObjectIdentifier(entry.vm))
            Self.setPollerActive(entry.mailbox, false)
            generation.add(1, ordering: .releasing)
            return true
        }
        if stopped { _ = entry.vm.servePostedSystemCall() }
    }

    /// Stops watching every VM and sleeps, holding none of them (`current` is emptied): until
    /// one is watched again, or, backing off, until `deadline`, when none may be watched before.
    private func stopWatchingAll(_ current: inout [Watched], until deadline: ContinuousClock.Instant?) {
        condition.withLock {
            backingOffUntil = deadline
            for entry in watched.values { Self.setPollerActive(entry.mailbox, false) }
            watched.removeAll()
            generation.add(1, ordering: .releasing)
        }
        for entry in current { _ = entry.vm.servePostedSystemCall() }
        letGo(&current)
        condition.withLock {
            guard let deadline else {
                while watched.isEmpty && !stopped { condition.wait() }
                return
            }
            let remaining = (deadline - ContinuousClock.now).components
            let wallDeadline = Date(timeIntervalSinceNow: Double(remaining.seconds) + Double(remaining.attoseconds) / 1e18)
            while ContinuousClock.now < deadline && !stopped { _ = condition.wait(until: wallDeadline) }
            backingOffUntil = nil
        }
    }
}

extension ProcessVM {
    /// System calls the poller may serve: none blocks (file I/O only on regular files, see
    /// `servePostedSystemCall`), none needs the vCPU's registers or ends the program. The
    /// memory calls change page tables while the guest runs — it spins in its stub, or, a
    /// hostile one, posted the call itself and runs on — which is safe: a new mapping needs
    /// nothing from KVM; the poller drops KVM's translations of removed or changed ones
    /// before it answers; and an unmapped frame stays quarantined until then, so no frame a
    /// stale translation still reaches is ever handed out again (as a page table, say).
    static let pollableSystemCalls: Set<Int> = [
        0, 1, 2, 3, 4, 5, 6, 8, 16, 17, 18, 21, 32, 33, 72, 79, 80, 81, 89, 217, 257, 262, 267, 269, 292, 332, 439,
        24, 39, 63, 95, 97, 98, 99, 102, 104, 107, 108, 109, 110, 111, 112, 115, 121, 157, 186, 204, 218, 273, 302, 318, 334,
        96, 201, 228, 229,
        13, 14, 131,
        9, 10, 11, 12, 25, 28,
    ]
    /// Of those, the calls that transfer data through a descriptor, which may have to wait
    /// on a pipe, terminal or socket (a wait, made interruptibly, belongs to the vCPU thread).
    static let descriptorTransfers: Set<Int> = [0, 1, 17, 18]

    /// The most bytes one polled call may move (read, write, pread64, pwrite64, or a file
    /// mmap's copy): the poller serves every VM, so a guest asking for more waits on its own
    /// vCPU thread instead (a 256 MiB pread took ~60 ms of the shared thread). readv and
    /// writev, whose total is known only after reading their vectors, are not polled at all.
    static let largestPolledTransfer: UInt64 = 1 << 20

    /// True when serving `call` on the poller costs a bounded amount of work.
    static func isBoundedForPoller(_ call: SystemCall) -> Bool {
        switch call.number {
        case 0, 1, 17, 18: return call.a2 <= largestPolledTransfer
        case 9: return call.int(call.a3) & 0x20 != 0 || call.a1 <= largestPolledTransfer // MAP_ANONYMOUS, or a small file copy
        default: return true
        }
    }

    /// Called on the vCPU thread for each call that took the exit path: when the poller could
    /// have served it, has the poller watch this VM again (it stopped while the VM was quiet,
    /// or the stub gave up waiting for it).
    func resumePolling(after callNumber: UInt64) {
        guard let mailbox = pollerMailbox, callNumber < 512, Self.pollableSystemCalls.contains(Int(callNumber)) else { return }
        poller?.watch(self, mailbox: mailbox)
    }

    /// The mailbox page as the engine sees it (its frame never moves).
    var mailbox: UnsafeMutableRawPointer? {
        guard let frame = space.tables.translate(SystemArea.mailbox)?.frame else { return nil }
        return memory.pointer(physical: frame, length: GuestMemory.pageSize)
    }

    /// Serves the call this VM's stub posted, if any; true when there was one.
    func servePostedSystemCall() -> Bool {
        // The vCPU thread holds the lock whenever it is outside KVM_RUN (handling an exit, a
        // signal, or leaving); the guest is not running then, and a post waits for later.
        guard machineState.try() else { return false }
        defer { machineState.unlock() }
        guard let mailbox = pollerMailbox else { return false }
        // unsafe: pollerMailbox is this VM's own mailbox page, mapped for its life; the state word at its start is 4-aligned.
        let state = mailbox.assumingMemoryBound(to: UInt32.self)
        guard cshims_atomic_load_u32(state) == SyscallStub.State.posted.rawValue,
              cshims_atomic_cas_u32(state, SyscallStub.State.posted.rawValue, SyscallStub.State.taken.rawValue) != 0 else {
            return false
        }
        func word(_ offset: UInt64) -> UInt64 { mailbox.loadUnaligned(fromByteOffset: Int(offset), as: UInt64.self) }
        func argument(_ index: UInt64) -> UInt64 { word(SyscallStub.Offset.arguments + index * 8) }
        let call = SystemCall(number: Int(truncatingIfNeeded: word(SyscallStub.Offset.number)),
                              arguments: (argument(0), argument(1), argument(2), argument(3), argument(4), argument(5)))
        guard Self.pollableSystemCalls.contains(call.number), !interrupts.hasPending, pendingSignal == nil, Self.isBoundedForPoller(call),
              !Self.descriptorTransfers.contains(call.number) || files.transfersNeverWait(call.int(call.a0)) else {
            cshims_atomic_store_u32(state, SyscallStub.State.handedBack.rawValue)
            return true
        }
        // A warm parent's first read of standard input is its fork point: the exit path stops there.
        if stopsAtFirstStandardInputRead, Self.readsStandardInput(number: call.number, descriptor: call.a0) {
            cshims_atomic_store_u32(state, SyscallStub.State.handedBack.rawValue)
            return true
        }
        guard case .value(let result) = dispatch(call) else {
            preconditionFailure("a pollable system call ended the program or replaced its registers")
        }
        if !space.retiredFrames.isEmpty {
            do throws(SystemError) {
                try space.dropStaleTranslations()
            } catch {
                // The guest could still reach what it unmapped: it must not run on.
                EngineDiagnostics.write("vmfork: \(error); the program is killed\n")
                kill()
            }
        }
        mailbox.storeBytes(of: UInt64(bitPattern: result), toByteOffset: Int(SyscallStub.Offset.result), as: UInt64.self)
        cshims_atomic_store_u32(state, SyscallStub.State.done.rawValue)
        return true
    }
}

/// What the system-call poller has done since the engine started.
public struct SystemCallPollerStatistics: Sendable, Equatable {
    /// Calls served from a VM's mailbox, without a VM exit.
    public let callsServed: Int
    /// Times polling went off because the poller lost its core (every call then exits).
    public let backOffs: Int
    /// VMs watched now.
    public let watchedVMs: Int
    /// Times polling went off because it cost the poller more CPU than its calls saved.
    public var unprofitableBackOffs = 0

    /// A poller that served nothing (or none at all).
    public static let zero = SystemCallPollerStatistics(callsServed: 0, backOffs: 0, watchedVMs: 0)
}
