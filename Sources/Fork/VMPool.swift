import Foundation
import HostSystem
import KVM
import ProcessVM

/// VMs made ready ahead of time for one fork point, so that neither creating nor destroying a
/// VM is on a fork's critical path: a finished child's VM comes back restored to the parent's
/// memory (`giveBack`), and new ones are made in the background when the pool runs low.
///
/// Returns and refills each have a serial queue of the pool's own: a returning VM costs a
/// restore (a few hundred µs), a new one a VM, a vCPU and a memory-slot registration
/// (milliseconds, and every live VM's MMU notifier on the way), made at the lowest priority.
/// On one queue, returns waited behind a refill starved of a core on a busy host, and forks
/// then found the pool empty and built VMs inline at full priority (23 % of runs missed the
/// pool under 4 clients on a loaded 2-core host). Returns on their way count as ready when the
/// pool decides whether to refill, so a refill never fills the place of a VM coming back
/// (which would then be torn down), and a fork that finds the pool empty while a VM is on its
/// way back waits for it a little rather than building one.
///
/// `@unchecked Sendable`: every `var` is read and written under `condition`; the rest are `let`s (the queues,
/// `returnedOne` and the fork point synchronise themselves).
final class VMPool: @unchecked Sendable {
    let system: KVMSystem
    let forkPoint: ForkPoint
    let target: Int
    private let condition = NSCondition()
    private var ready: [PreparedVM] = []
    /// Children's VMs handed back and not yet restored (or let go).
    private var returning = 0
    /// Of those, the ones no thread has begun to restore yet: the return queue takes them in
    /// turn, and a fork finding the pool empty restores one itself rather than waiting.
    private var unrestored: [ProcessVM] = []
    /// Forks that restored a returned VM themselves (the pool was empty, a return waited).
    var restoredByForks: Int { condition.withLock { restoredInline } }
    private var restoredInline = 0
    /// VMs restored by the thread that handed them back (`restoreHereBelow`).
    var restoredByReturners: Int { condition.withLock { restoredHere } }
    private var restoredHere = 0
    private var refilling = false
    /// Ready VMs out of `ready` while they take their write warm-up (`warmUpOneVM`).
    private var warming = 0
    /// Whether the ready VMs made before the fork point learned its children's writes have
    /// been set to take them ahead (VMs made after take them as they are made).
    private var writeWarmUpsScheduled = false
    /// Forks that found the pool empty and made their VM inline.
    var misses: Int { condition.withLock { missCount } }
    private var missCount = 0
    /// VMs the refills made (the first fill's included).
    var madeByRefills: Int { condition.withLock { refillMade } }
    private var refillMade = 0
    /// VMs ready for a fork now.
    var readyCount: Int { condition.withLock { ready.count } }
    /// Refills, one VM at a time, off the forks' path.
    private let queue: BackgroundThread
    /// Restores and teardowns of returned VMs, one at a time, never behind a refill.
    private let returnQueue: BackgroundThread
    /// How long the restore thread gathers returned VMs before it restores them as a batch.
    static let restoreGathering: Duration = .milliseconds(2)
    /// How long a fork waits for a VM on its way back before it makes one itself.
    static let returnWait: TimeInterval = 0.005
    /// Children's VMs count as flowing back while the last came back within this.
    static let flowWindow: Duration = .milliseconds(2)
    /// The longest a fork waits for flowing returns before it makes a VM itself: long, as a
    /// burst queues hundreds of forks behind the returns (each return serves one of them).
    static let flowWait: Duration = .milliseconds(250)
    /// When a child's VM was last handed back.
    private var lastReturn: ContinuousClock.Instant?
    /// Forks waiting for a returned VM sleep here and are woken one per VM (a broadcast on
    /// `condition` would wake every one of hundreds at each return). Taken before `condition`.
    private let returnedOne = NSCondition()

    init(system: KVMSystem, forkPoint: ForkPoint, target: Int, refillDelay: Duration = VMPool.defaultRefillDelay) {
        self.system = system
        self.forkPoint = forkPoint
        self.target = max(0, target)
        self.refillDelay = refillDelay
        // Restores SCHED_IDLE: a fork restores a returned VM itself when they fall behind. A
        // restore woken with the event loop that has the ended child's answer to write was
        // run first on their shared core, 80 µs, while the other core went idle (traced);
        // SCHED_IDLE is picked after it. Refills stay SCHED_BATCH: a fork that finds no VM
        // makes one, milliseconds, and a pool filling at a busy daemon's start would wait.
        queue = BackgroundThread(name: "vmfork-refill")
        // Restores gathered for 2 ms (see `BackgroundThread`): one wake-up per batch of
        // returns, not per child; a fork that finds no ready VM restores a returned one itself.
        returnQueue = BackgroundThread(name: "vmfork-restore", policy: .idle, gathering: VMPool.restoreGathering)
    }

    private enum Found { case ready(PreparedVM), returned(ProcessVM), none }

    /// A ready VM, else a returned one no thread has begun to restore; under `condition`'s lock.
    private func takeNow() -> Found? {
        if let vm = ready.popLast() { return .ready(vm) }
        if let child = unrestored.popLast() { return .returned(child) }
        return nil
    }

    /// A ready VM (the most recently readied, likely a reused one); when there is none, a
    /// returned VM no thread has begun to restore, restored here (a restore costs a few
    /// hundred µs, a new VM milliseconds: on a busy host the return queue fell behind, and
    /// 23 % of forks under 4 clients built VMs while VMs waited to be restored); else one on
    /// its way back within `returnWait`; else, while children's VMs keep coming back, the next
    /// of them (`waitForFlowingReturns`); else one made now. A refill starts when the pool
    /// (counting returns on their way) falls below half its target: above that, finished
    /// children's VMs coming back are expected to keep it topped up.
    func take() throws(GuestError) -> PreparedVM {
        var found: Found = condition.withLock {
            if let now = takeNow() { return now }
            if returning > 0 {
                let deadline = Date(timeIntervalSinceNow: Self.returnWait)
                while ready.isEmpty && returning > 0 && condition.wait(until: deadline) {}
            }
            return ready.popLast().map { .ready($0) } ?? .none
        }
        if case .none = found { found = waitForFlowingReturns() }
        refill(whenBelow: (target + 1) / 2, deferred: true)
        switch found {
        case .ready(let vm):
            return vm
        case .returned(let child):
            let vm = try? PreparedVM(reusing: child)
            condition.withLock {
                returning -= 1
                if vm != nil { restoredInline += 1 }
                condition.broadcast()
            }
            if let vm { return vm }
        case .none:
            break
        }
        condition.withLock { missCount += 1 }
        return try PreparedVM(system: system, forkPoint: forkPoint, readAhead: false)
    }

    /// With the pool empty while children's VMs keep coming back (the last within
    /// `flowWindow`), waits for one of them — for as long as they keep coming, up to
    /// `flowWait` — rather than making a VM. Why: under a burst beyond what the host runs at
    /// once (launches queued behind a stall), every fork that found the pool empty built its
    /// VM inline, milliseconds of CPU each, where a returning VM costs a restore; the engine's
    /// CPU per launch tripled and the host never caught up (a `busybox echo` load at 2,400/s
    /// fell to 900/s with 712 pool misses, against none in a run that kept up). A fork with
    /// no return flowing (its siblings run on, say) makes its VM at once.
    private func waitForFlowingReturns() -> Found {
        let start = ContinuousClock.now
        return returnedOne.withLock {
            while true {
                let (found, flowing): (Found?, Bool) = condition.withLock {
                    if let now = takeNow() { return (now, true) }
                    let now = ContinuousClock.now
                    return (nil, lastReturn.map { now - $0 < Self.flowWindow } ?? false && now - start < Self.flowWait)
                }
                if let found { return found }
                guard flowing else { return .none }
                // Woken by the next VM made ready or handed back; the timeout looks at the flow again.
                _ = returnedOne.wait(until: Date(timeIntervalSinceNow: 0.001))
            }
        }
    }

    /// Tops the pool up to its target in the background when it holds (or will hold, once
    /// the returns on their way are in) fewer than `threshold` VMs; one refill at a time.
    /// With `deferred` (a fork took the pool low), the first VM is made `refillDelay` later,
    /// and only if the pool is still that low then.
    func refill(whenBelow threshold: Int, deferred: Bool = false) {
        let start: Bool = condition.withLock {
            guard !refilling, ready.count + returning + warming < min(threshold, target) else { return false }
            refilling = true
            return true
        }
        guard start else { return }
        guard deferred else { return queue.async { [self] in refillOne() } }
        queue.async(after: refillDelay) { [self] in
            let low = condition.withLock { ready.count + returning + warming < min(threshold, target) }
            if low { refillOne() } else { finishRefill() }
        }
    }

    /// How long a refill waits before its first VM, for the children's VMs out to come back
    /// (`defaultRefillDelay`; tests give one of their own).
    /// Why: a burst (launches queued behind a few milliseconds' stall) takes the pool below
    /// half with VMs that come back within tens of milliseconds; a refill started at once built
    /// VMs inside the burst — each a VM, a vCPU and a memory slot, with the daemon's mmap lock
    /// and an SRCU grace period (25 ms) on the way — and once the burst's VMs came back the
    /// pool was full and it tore the new one down (`kvm_destroy_vm`, another grace period).
    /// A 2,200/s step's p99 went to 22 ms in such a burst (2026-12-07). Forks meanwhile take
    /// the returns as they come (`waitForFlowingReturns`), or make a VM when none flow. The
    /// first fill, and a refill for a VM that did not come back, start at once.
    static let defaultRefillDelay: Duration = .milliseconds(100)
    let refillDelay: Duration

    /// Makes one VM and queues the next.
    private func refillOne() {
        let needed = condition.withLock { ready.count + returning + warming < target }
        guard needed else { return finishRefill() }
        // Running containers come first: on 2 cores a refill at normal priority took a
        // core from the vCPU and poller threads (fork → echo 3.7 ms p50 against 1.65 ms
        // niced, 200 forks kept alive back to back). On Linux the nice value is per thread.
        let which = __priority_which_t(PRIO_PROCESS.rawValue)
        let previous = getpriority(which, 0)
        setpriority(which, 0, 19)
        let made = try? PreparedVM(system: system, forkPoint: forkPoint, readAhead: true)
        setpriority(which, 0, previous)
        guard let made else { return finishRefill() }
        // Returns restored meanwhile may have filled the pool: then this one goes (here,
        // off the forks' path).
        let kept = condition.withLock {
            defer { condition.broadcast() }
            refillMade += 1
            guard ready.count < target else { return false }
            ready.append(made)
            return true
        }
        guard kept else { return finishRefill() }
        returnedOne.withLock { returnedOne.signal() }
        queue.async { [self] in refillOne() }
    }

    private func finishRefill() {
        condition.withLock {
            refilling = false
            condition.broadcast()
        }
    }

    /// Takes back the VM of a finished child: restored for its next sibling when the pool has
    /// room for it, otherwise (or when it cannot be reused) torn down. Normally on the pool's
    /// return queue, off the caller's thread; with fewer than `restoreHereBelow` VMs ready,
    /// on the caller's thread (see there).
    func giveBack(_ child: ProcessVM) {
        let here = condition.withLock { () -> Bool in
            returning += 1
            lastReturn = .now
            guard ready.count >= restoreHereBelow else { return true }
            unrestored.append(child)
            return false
        }
        if here, restore(child, here: true) { return }
        returnedOne.withLock { returnedOne.signal() }
        returnQueue.async { [self] in restoreReturned() }
    }

    /// Ready VMs below which a VM handed back is restored by the thread that hands it back
    /// (a container's, after its waiter was woken; a connection's loop, after its answer),
    /// at that thread's priority. Why: the return queue runs SCHED_IDLE, so on a host whose
    /// cores are full it restores nothing, and the pool ran dry in a few milliseconds at
    /// 6,000 launches a second; each fork then waited up to `returnWait` for the one VM that
    /// thread held, the connections' own loops among them. Launches then went to the other
    /// connections, ran on container threads all at once (257 in one trace) and held more
    /// VMs still: the engine ran half as many launches a second as before for hundreds of
    /// milliseconds (2026-12-07).
    var restoreHereBelow: Int { min(target, max(2, target / 4)) }

    /// On the return queue: restores the latest return no fork has taken (none: a fork
    /// restored it itself).
    private func restoreReturned() {
        guard let child = condition.withLock({ unrestored.popLast() }) else { return }
        restore(child, here: false)
    }

    /// Restores `child` (counted in `returning`) into the pool when it has room, else lets it
    /// go. `here` (the thread that handed it back): false, having done nothing, when the pool
    /// has filled meanwhile (the child is queued for the return queue to let go, as tearing a
    /// VM down waits for a grace period); true once restored (or handed to the return queue
    /// to let go, when it could not be reused).
    @discardableResult
    private func restore(_ child: ProcessVM, here: Bool) -> Bool {
        let room: Bool = condition.withLock {
            let room = ready.count < target
            if here && !room { unrestored.append(child) }
            return room
        }
        if here && !room { return false }
        let vm = room ? try? PreparedVM(reusing: child) : nil
        // One that cannot be reused is torn down on the return queue all the same: its last
        // reference goes there, not on the caller's thread.
        if here && vm == nil { returnQueue.async { withExtendedLifetime(child) {} } }
        let readied = condition.withLock {
            returning -= 1
            if here { restoredHere += 1 }
            defer { condition.broadcast() }
            guard let vm, ready.count < target else { return false }
            ready.append(vm)
            return true
        }
        if readied { returnedOne.withLock { returnedOne.signal() } }
        // A VM that did not come back (the child owned too much, or ended uncleanly)
        // leaves a place a refill fills.
        if room && vm == nil { refill(whenBelow: (target + 1) / 2) }
        scheduleWriteWarmUps()
        return true
    }

    /// Once the fork point has learned what its children write, gives every ready VM made
    /// before then those writes' costs ahead (`PreparedVM.warmUpWrites`), on the refill queue
    /// at its priority: a burst that reaches deep into the pool otherwise finds VMs whose
    /// children each pay ~15 more exits (17 against 2 for a `busybox echo`). Each VM is out of
    /// `ready` while it warms up, then back on top.
    private func scheduleWriteWarmUps() {
        let start: Bool = condition.withLock {
            guard !writeWarmUpsScheduled, forkPoint.knowsChildWrites else { return false }
            writeWarmUpsScheduled = true
            return true
        }
        guard start else { return }
        queue.async { [self] in
            let which = __priority_which_t(PRIO_PROCESS.rawValue)
            let previous = getpriority(which, 0)
            setpriority(which, 0, 19)
            defer { setpriority(which, 0, previous) }
            while warmUpOneVM() {}
        }
    }

    /// Warms one ready VM up (see `scheduleWriteWarmUps`); false when none is left to.
    private func warmUpOneVM() -> Bool {
        let found: PreparedVM? = condition.withLock {
            guard let index = ready.lastIndex(where: { !$0.writesWarmed }) else { return nil }
            warming += 1
            return ready.remove(at: index)
        }
        guard let vm = found else { return false }
        let warmed = (try? vm.warmUpWrites()) != nil
        let kept = condition.withLock {
            warming -= 1
            defer { condition.broadcast() }
            guard warmed, ready.count < target else { return false }
            ready.append(vm)
            return true
        }
        if kept { returnedOne.withLock { returnedOne.signal() } }
        return true
    }

    /// Lets go of the ready VMs beyond `count` (their memory and KVM objects are freed); the
    /// pool refills again as forks take from it. Returns how many went.
    func shrink(to count: Int) -> Int {
        let dropped: [PreparedVM] = condition.withLock {
            guard ready.count > count else { return [] }
            defer { ready.removeLast(ready.count - count) }
            return Array(ready[count...])
        }
        return dropped.count
    }

    /// Blocks until every VM handed back so far is restored or torn down.
    func waitForReturns() {
        returnQueue.sync {}
        condition.withLock { while returning > 0 { condition.wait() } }
    }

    /// Blocks until the pool holds its target, its VMs' write warm-ups done (for benchmarks
    /// and tests that measure forks from a full pool).
    func waitUntilFull() {
        waitForReturns()
        // Twice: a deferred refill pending (a fork took the pool low) may end without filling
        // it. Until the refill has ended, not only until the pool is full: a refill still
        // going would make VMs for the forks that follow (the caller's measurements).
        for _ in 0..<2 {
            refill(whenBelow: target)
            let full = condition.withLock {
                while refilling { condition.wait() }
                return ready.count >= target
            }
            if full { break }
        }
        // Write warm-ups run on the refill queue, each VM out of `ready` meanwhile.
        queue.sync {}
        condition.withLock {
            while warming > 0 { condition.wait() }
        }
    }
}
