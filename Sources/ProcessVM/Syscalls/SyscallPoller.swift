import CShims
import Foundation
import HostSystem
import Synchronization

/// One engine thread that serves the posted system calls of every VM registered with it,
/// without a VM exit: the guest's stub spins on its mailbox page while the poller runs the
/// call. Only calls that neither block nor touch the vCPU's registers are served here; the
/// rest are handed back to the stub, which then exits as usual.
///
/// Spin briefly, then block: the poller spins while registered VMs post calls, yields its
/// core at each turn once they pause, and parks when none has posted for `parkAfter` — it
/// clears each VM's `pollerActive` word, so their stubs exit straight away, and sleeps. The
/// next call that takes the exit path sets its VM's word again and wakes the poller (see
/// `ProcessVM.resumePolling`). So a container that computes, or waits in a blocking call,
/// costs no spinning core. And when the poller finds it lost its core for a while (a turn of
/// its loop took over 1 ms) while fewer VMs than cores are registered, other work wants the
/// host: guests would spin for a poller that is not running, so polling stays off for 10 ms
/// and every call exits. With no VM registered at all it lingers briefly before it sleeps:
/// forks come in runs, and a child's first call would otherwise wait for the poller to wake.
final class SyscallPoller: @unchecked Sendable {
    static let shared = SyscallPoller()

    /// How long the poller keeps spinning with no VM registered before it sleeps.
    private static let linger: Duration = .milliseconds(2)
    /// How long it spins with nothing posted before it yields its core at each turn.
    private static let yieldAfter: Duration = .microseconds(200)
    /// How long it goes on with nothing posted before it parks.
    private static let parkAfter: Duration = .milliseconds(2)
    /// A turn of the loop that took this long means the poller lost its core to other work.
    private static let preemptedAfter: Duration = .milliseconds(1)
    /// How long polling stays off once the poller has lost its core.
    private static let backOff: Duration = .milliseconds(10)
    private static let cores = ProcessInfo.processInfo.activeProcessorCount

    private let condition = NSCondition()
    private var machines: [ObjectIdentifier: ProcessVM] = [:]
    /// Bumped (under the lock) by each register and unregister, so the loop copies the set
    /// only when it changed.
    private let generation = Atomic<Int>(0)
    private var started = false
    private var parked = false
    /// Until when polling is off because the host has no core to spare for it.
    private var backingOffUntil: ContinuousClock.Instant?

    /// Registers a running VM; false while the poller backs off (the VM's stub should exit).
    func register(_ vm: ProcessVM) -> Bool {
        condition.withLock {
            machines[ObjectIdentifier(vm)] = vm
            generation.add(1, ordering: .releasing)
            if !started {
                started = true
                let thread = Thread { [self] in
                    // Named for ps and top (Foundation's name does not reach the kernel's).
                    _ = cshims_set_thread_name("vmfork-poller")
                    // Guests spin while they wait for it, so it must win a core when it is
                    // runnable: at normal priority 1 % of forks waited a 3 ms time slice for it
                    // (fork → echo p99 3.1 ms against 0.3 ms at nice -10). Raising priority
                    // needs CAP_SYS_NICE; without it the poller runs at normal priority.
                    setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -10)
                    loop()
                }
                thread.start()
            }
            guard !backingOff else { return false }
            parked = false
            condition.broadcast()
            return true
        }
    }

    /// Also ends a park, so that the poller lets go of the VM.
    func unregister(_ vm: ProcessVM) {
        condition.withLock {
            _ = machines.removeValue(forKey: ObjectIdentifier(vm))
            generation.add(1, ordering: .releasing)
            parked = false
            condition.broadcast()
        }
    }

    /// Ends a park, for a VM whose call took the exit path and wants polling again; false
    /// while the poller backs off.
    func resume() -> Bool {
        condition.withLock {
            guard !backingOff else { return false }
            if parked {
                parked = false
                condition.broadcast()
            }
            return true
        }
    }

    private var backingOff: Bool {
        guard let until = backingOffUntil else { return false }
        return ContinuousClock.now < until
    }

    private func loop() {
        var current: [ProcessVM] = []
        var seenGeneration = -1
        var lastServed = ContinuousClock.now
        var lastBusy = ContinuousClock.now
        var lastTurn = ContinuousClock.now
        while true {
            // The set is copied only when it changed: the lock is not taken at each turn,
            // where it would starve a thread registering a VM.
            if generation.load(ordering: .acquiring) != seenGeneration {
                condition.withLock {
                    current = Array(machines.values)
                    seenGeneration = generation.load(ordering: .relaxed)
                }
                // A VM that just registered has not had its chance to post yet.
                lastServed = ContinuousClock.now
            }
            if current.isEmpty {
                if ContinuousClock.now - lastBusy > Self.linger {
                    condition.withLock {
                        while machines.isEmpty { condition.wait() }
                    }
                } else {
                    sched_yield()
                }
                lastTurn = ContinuousClock.now
                continue
            }
            lastBusy = ContinuousClock.now
            var served = false
            for vm in current where vm.servePostedSystemCall() { served = true }
            let now = ContinuousClock.now
            if current.count < Self.cores, now - lastTurn > Self.preemptedAfter {
                // The poller lost its core although its VMs leave one free: other work wants
                // the host, and guests would spin while the poller waits for a core, each
                // call costing more than an exit. Polling stays off for a while. (With as
                // many busy VMs as cores, losing the core is expected, and whichever vCPU
                // runs is still served in microseconds.)
                park(&current, until: now + Self.backOff)
                seenGeneration = -1
            } else if served {
                lastServed = now
            } else if now - lastServed > Self.parkAfter {
                park(&current, until: nil)
                seenGeneration = -1
            } else if now - lastServed > Self.yieldAfter {
                // Nothing posted for a while: let other threads (pool refill, teardown)
                // have the core, but come back at once if none wants it.
                sched_yield()
            }
            lastTurn = ContinuousClock.now
        }
    }

    /// Turns the VMs' stubs to the exit path, serves what they posted meanwhile, and sleeps
    /// (holding none of them): until a VM wants polling again or one registers or leaves,
    /// or, backing off, until `deadline`.
    private func park(_ current: inout [ProcessVM], until deadline: ContinuousClock.Instant?) {
        condition.withLock {
            parked = true
            backingOffUntil = deadline
        }
        for vm in current { vm.suspendPolling() }
        for vm in current { _ = vm.servePostedSystemCall() }
        current = []
        condition.withLock {
            if let deadline {
                let wallDeadline = Date(timeIntervalSinceNow: Double((deadline - ContinuousClock.now).components.attoseconds) / 1e18)
                while ContinuousClock.now < deadline { _ = condition.wait(until: wallDeadline) }
                backingOffUntil = nil
                parked = false
            } else {
                while parked { condition.wait() }
            }
        }
    }
}

extension ProcessVM {
    /// System calls the poller may serve: none blocks (file I/O only on regular files, see
    /// `servePostedSystemCall`), none needs the vCPU's registers or ends the program. The
    /// memory calls change page tables while the guest spins in its stub, which is safe: a
    /// new mapping needs nothing from KVM, and the poller drops KVM's translations of removed
    /// or changed ones before it answers.
    static let pollableSystemCalls: Set<Int> = [
        0, 1, 2, 3, 4, 5, 6, 8, 16, 17, 18, 19, 20, 21, 32, 33, 72, 79, 80, 81, 89, 217, 257, 262, 267, 269, 292, 332, 439,
        24, 39, 63, 95, 97, 98, 99, 102, 104, 107, 108, 109, 110, 111, 112, 115, 121, 157, 186, 204, 218, 273, 302, 318, 334,
        96, 201, 228, 229,
        13, 14, 131,
        9, 10, 11, 12, 25, 28,
    ]
    /// Of those, the calls that transfer data through a descriptor and could block on a pipe
    /// or terminal.
    static let descriptorTransfers: Set<Int> = [0, 1, 17, 18, 19, 20]

    /// Makes the stub take the exit path until `resumePolling` (the poller is parking). A VM
    /// whose vCPU thread is busy outside the guest is left alone: its next exit resumes anyway.
    func suspendPolling() {
        guard machineState.try() else { return }
        defer { machineState.unlock() }
        guard let mailbox = pollerMailbox else { return }
        cshims_atomic_store_u32(mailbox.advanced(by: Int(SyscallStub.Offset.pollerActive)).assumingMemoryBound(to: UInt32.self), 0)
    }

    /// Called on the vCPU thread for each call that took the exit path: when the poller could
    /// have served it, turns polling back on for this VM and wakes the poller if it parked
    /// (the stub may also have given up waiting on a poller that parked meanwhile).
    func resumePolling(after callNumber: UInt64) {
        guard let mailbox = pollerMailbox, callNumber < 512, Self.pollableSystemCalls.contains(Int(callNumber)),
              SyscallPoller.shared.resume() else { return }
        cshims_atomic_store_u32(mailbox.advanced(by: Int(SyscallStub.Offset.pollerActive)).assumingMemoryBound(to: UInt32.self), 1)
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
        let state = mailbox.assumingMemoryBound(to: UInt32.self)
        guard cshims_atomic_load_u32(state) == SyscallStub.State.posted.rawValue,
              cshims_atomic_cas_u32(state, SyscallStub.State.posted.rawValue, SyscallStub.State.taken.rawValue) != 0 else {
            return false
        }
        func word(_ offset: UInt64) -> UInt64 { mailbox.loadUnaligned(fromByteOffset: Int(offset), as: UInt64.self) }
        func argument(_ index: UInt64) -> UInt64 { word(SyscallStub.Offset.arguments + index * 8) }
        let call = SystemCall(number: Int(truncatingIfNeeded: word(SyscallStub.Offset.number)),
                              arguments: (argument(0), argument(1), argument(2), argument(3), argument(4), argument(5)))
        guard Self.pollableSystemCalls.contains(call.number), !interrupts.hasPending, pendingSignal == nil,
              !Self.descriptorTransfers.contains(call.number) || files.isRegularFile(call.int(call.a0)) else {
            cshims_atomic_store_u32(state, SyscallStub.State.handedBack.rawValue)
            return true
        }
        guard case .value(let result) = dispatch(call) else {
            preconditionFailure("a pollable system call ended the program or replaced its registers")
        }
        if !space.retiredFrames.isEmpty {
            do throws(SystemError) {
                try memory.invalidateTranslations(ofFrames: space.retiredFrames)
                space.retiredFrames.removeAll(keepingCapacity: true)
            } catch {
                // The guest could still reach what it unmapped: it must not run on.
                FileHandle.standardError.write(Data("vmfork: \(error); the program is killed\n".utf8))
                kill()
            }
        }
        mailbox.storeBytes(of: UInt64(bitPattern: result), toByteOffset: Int(SyscallStub.Offset.result), as: UInt64.self)
        cshims_atomic_store_u32(state, SyscallStub.State.done.rawValue)
        return true
    }
}
