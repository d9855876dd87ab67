import Foundation
import HostSystem
import KVM

/// One thread of a guest process: a vCPU of the process's VM (same page tables and memory,
/// its own registers and fs base) run by a host thread of its own. The first thread is the
/// process itself (its tid is the pid); clone with CLONE_THREAD makes the others.
///
/// `@unchecked Sendable`: the constants are set once; every `var` is read and written only
/// by the thread holding its process's `machineState` (kill and signals from other threads
/// go through `interrupts` and `slot`, which lock for themselves).
final class GuestThread: @unchecked Sendable {
    let tid: Int32
    let vcpu: VCPU
    /// Kill and signal requests for this thread, and the futex wake.
    let interrupts = Interrupts()
    /// The host thread inside KVM_RUN for this vCPU, for the kick.
    let slot = ThreadSlot()
    /// A signal for this thread's handler, delivered when it next returns to user code.
    var pendingSignal: Int32?
    /// This thread's signal mask.
    var blockedSignals: UInt64 = 0
    /// sigaltstack's stack_t: ss_sp, ss_flags, ss_size (SS_DISABLE at first).
    var alternateStack: (base: UInt64, flags: Int32, size: UInt64) = (0, 2, 0)
    /// set_tid_address's (or CLONE_CHILD_CLEARTID's) address: zeroed and woken at exit.
    var clearChildTID: UInt64?
    /// set_robust_list's head and length, kept for get_robust_list.
    var robustList: (head: UInt64, length: UInt64) = (0, 0)
    /// The futex address this thread waits on, while it is queued there (see `FutexTable`).
    var futexKey: UInt64?
    /// Set by exit(2): the thread ends once the call is served.
    var hasExited = false

    init(tid: Int32, vcpu: VCPU) {
        self.tid = tid
        self.vcpu = vcpu
    }
}

/// A process's threads beyond its first, the vCPUs of ended threads kept for new ones (KVM
/// never frees a vCPU before its VM, nor gives its id again), the status an exit_group or
/// a fatal signal in a thread gave the process, and the futex waiters.
///
/// `@unchecked Sendable`: `running`, `groupExit`, `everHadThreads` and `endedCPU` are under `condition`
/// (kill reads the list from other threads); `idleVCPUs`, `nextVCPUID` and `futexes` are
/// used only under the process's `machineState`.
final class ThreadGroup: @unchecked Sendable {
    private let condition = NSCondition()
    private var running: [GuestThread] = []
    private var groupExitStatus: ExitStatus?
    private var started = false
    var idleVCPUs: [VCPU] = []
    var nextVCPUID: UInt32 = 1
    var futexes = FutexTable()

    /// CPU seconds of the threads that ended (`remove`).
    private var endedCPU = 0.0
    var all: [GuestThread] { condition.withLock { running } }
    var endedCPUSeconds: Double { condition.withLock { endedCPU } }
    var isEmpty: Bool { condition.withLock { running.isEmpty } }
    /// True once a thread was ever made: the VM then has vCPUs a reused VM must not keep.
    var everHadThreads: Bool { condition.withLock { started } }
    var groupExit: ExitStatus? { condition.withLock { groupExitStatus } }

    func add(_ thread: GuestThread) {
        condition.withLock {
            running.append(thread)
            started = true
        }
    }

    func remove(_ thread: GuestThread) {
        let cpu = thread.slot.cpuSeconds
        condition.withLock {
            endedCPU += cpu
            running.removeAll { $0 === thread }
            condition.broadcast()
        }
    }

    func thread(_ tid: Int32) -> GuestThread? { condition.withLock { running.first { $0.tid == tid } } }

    /// Records the process's status from a thread; the first one stands.
    func setGroupExit(_ status: ExitStatus) {
        condition.withLock { if groupExitStatus == nil { groupExitStatus = status } }
    }

    func waitUntilEmpty() {
        condition.withLock { while !running.isEmpty { condition.wait() } }
    }
}

extension ProcessVM {
    /// What ends the whole process now: a thread's exit_group or fatal signal, or a kill.
    var endRequest: ExitStatus? {
        threads.groupExit ?? interrupts.pendingKill.map { .signaled($0) }
    }

    /// Runs `body` (a wait) without `machineState` when other threads may need it meanwhile,
    /// and takes it back as the calling thread; with one thread it simply runs `body`.
    func releasingMachineState<T>(_ body: () -> T) -> T {
        guard threads.everHadThreads else { return body() }
        let caller = current
        // Frames unmapped before the wait must not outlive it in another vCPU's translations.
        try? space.dropStaleTranslations()
        machineState.unlock()
        let result = body()
        machineState.lock()
        current = caller
        return result
    }

    /// Ends every other thread (kill) and waits until their host threads let go. Called by
    /// the main thread with `machineState` held, as the process ends or execs.
    func endOtherThreads() {
        let others = threads.all
        guard !others.isEmpty else { return }
        for thread in others {
            thread.interrupts.raiseKill(9)
            thread.vcpu.requestImmediateExit()
            thread.slot.kick()
        }
        machineState.unlock()
        threads.waitUntilEmpty()
        machineState.lock()
        current = mainThread
    }

    /// Ends the process with `status` from a thread other than the first: the first thread
    /// returns it from `run`, after ending the others.
    func endProcess(from thread: GuestThread, status: ExitStatus) {
        threads.setGroupExit(status)
        mainThread.interrupts.raiseKill(9)
        mainThread.vcpu.requestImmediateExit()
        mainThread.slot.kick()
    }

    /// The loop of a thread other than the first, on its own host thread: the same as the
    /// first thread's, without fork points, polling or counters.
    func runThread(_ thread: GuestThread) {
        thread.slot.enter()
        machineState.lock()
        current = thread
        defer {
            threadEnded(thread)
            machineState.unlock()
            thread.slot.leave()
            threads.remove(thread)
        }
        while true {
            waitIfStopped()
            current = thread
            if thread.interrupts.pendingKill != nil || threads.groupExit != nil { return }
            if thread.pendingSignal == nil, let signal = thread.interrupts.takeSignal() { thread.pendingSignal = signal }
            if thread.pendingSignal != nil, thread.vcpu.syncRegisters.pointee.sregs.cs.selector == X86.Selector.userCode,
               let status = deliverPendingSignal(interrupted: thread.vcpu.syncRegisters.pointee.regs) {
                return endProcess(from: thread, status: status)
            }
            do throws(SystemError) {
                try space.dropStaleTranslations()
            } catch {
                return endProcess(from: thread, status: .signaled(9))
            }
            machineState.unlock()
            let result = Result { () throws(KVMError) in try thread.vcpu.run() }
            machineState.lock()
            current = thread
            guard let exit = try? result.get() else { return endProcess(from: thread, status: .signaled(9)) }
            switch exit {
            case .io(let port, true, _, _, _) where port == SystemArea.syscallPort:
                if let status = serveSystemCall() { return endProcess(from: thread, status: status) }
                if thread.hasExited { return }
            case .io(let port, true, _, _, _) where port == SystemArea.signalCheckPort:
                // Only a guest that set the word itself comes here: threads are never polled.
                if let status = serveSignalCheck() { return endProcess(from: thread, status: status) }
            case .io(let port, true, _, _, let offset) where port == SystemArea.exceptionPort:
                let vector = UInt8(truncatingIfNeeded: UnsafeRawPointer(thread.vcpu.runState).load(fromByteOffset: offset, as: UInt8.self))
                if answerFaultInGuestRoutine(vector: vector) { continue }
                return endProcess(from: thread, status: terminate(with: recordFault(vector: vector)))
            case .interrupted:
                thread.vcpu.requestImmediateExit(false)
            case .shutdown:
                // A triple fault, as the first thread reports it.
                return endProcess(from: thread, status: .signaled(11))
            default:
                EngineDiagnostics.write("vmfork: unexpected VM exit \(exit) in thread \(thread.tid)\n")
                return endProcess(from: thread, status: .signaled(9))
            }
        }
    }

    /// A thread other than the first ended: its robust list is walked (when it exited by
    /// itself), CLONE_CHILD_CLEARTID's word is zeroed and its
    /// waiters woken (what pthread_join waits for), its tid goes back, its vCPU is kept for
    /// the next thread.
    private func threadEnded(_ thread: GuestThread) {
        // Its own exit (not the process's end): its robust mutexes are released as dead.
        if thread.hasExited, threads.groupExit == nil { releaseRobustFutexes(of: thread) }
        if let address = thread.clearChildTID, address % 4 == 0, space.write(address, [0, 0, 0, 0]) {
            _ = threads.futexes.wake(address, count: 1, bitset: FutexTable.anyBitset)
        }
        if let key = thread.futexKey { threads.futexes.remove(thread, from: key) }
        thread.vcpu.requestImmediateExit(false)
        threads.idleVCPUs.append(thread.vcpu)
        tree.releaseThreadID(thread.tid)
        current = mainThread
    }
}
