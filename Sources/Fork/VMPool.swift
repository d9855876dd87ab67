import Foundation
import KVM
import ProcessVM

/// VMs made ready ahead of time for one fork point, so that neither creating nor destroying a
/// VM is on a fork's critical path: a removed child's VM comes back restored to the parent's
/// memory (`recycle`), and a background thread creates new ones when the pool runs low.
final class VMPool: @unchecked Sendable {
    let system: KVMSystem
    let forkPoint: ForkPoint
    let target: Int
    private let condition = NSCondition()
    private var ready: [PreparedVM] = []
    private var refilling = false
    /// Forks that found the pool empty and made their VM inline.
    var misses: Int { condition.withLock { missCount } }
    private var missCount = 0
    /// VMs ready for a fork now.
    var readyCount: Int { condition.withLock { ready.count } }
    private static let refillQueue = DispatchQueue(label: "vmfork.pool.refill", qos: .utility)

    init(system: KVMSystem, forkPoint: ForkPoint, target: Int) {
        self.system = system
        self.forkPoint = forkPoint
        self.target = max(0, target)
    }

    /// A ready VM (the most recently readied, likely a reused one), or one made now when the
    /// pool is empty. A refill starts when the pool falls below half its target: above that,
    /// removed children's VMs coming back are expected to keep it topped up.
    func take() throws(GuestError) -> PreparedVM {
        let taken: PreparedVM? = condition.withLock { ready.popLast() }
        refill(whenBelow: (target + 1) / 2)
        if let taken { return taken }
        condition.withLock { missCount += 1 }
        return try PreparedVM(system: system, forkPoint: forkPoint, readAhead: false)
    }

    /// Tops the pool up to its target in the background when it holds fewer than
    /// `threshold` VMs (one refill at a time).
    func refill(whenBelow threshold: Int) {
        let start: Bool = condition.withLock {
            guard !refilling, ready.count < min(threshold, target) else { return false }
            refilling = true
            return true
        }
        guard start else { return }
        Self.refillQueue.async { [self] in
            // Running containers come first: on 2 cores a refill at normal priority took a
            // core from the vCPU and poller threads (fork → echo 3.7 ms p50 against 1.65 ms
            // niced, 200 forks kept alive back to back). On Linux the nice value is per thread.
            let which = __priority_which_t(PRIO_PROCESS.rawValue)
            let previous = getpriority(which, 0)
            setpriority(which, 0, 19)
            defer { setpriority(which, 0, previous) }
            while condition.withLock({ ready.count < target }) {
                guard let vm = try? PreparedVM(system: system, forkPoint: forkPoint, readAhead: true) else { break }
                condition.withLock {
                    ready.append(vm)
                    condition.broadcast()
                }
            }
            condition.withLock {
                refilling = false
                condition.broadcast()
            }
        }
    }

    /// Takes back the VM of a finished child, restored for its next sibling, when the pool
    /// has room for it; otherwise (or when the VM cannot be reused) it is released.
    func recycle(_ child: ProcessVM) {
        guard condition.withLock({ ready.count < target }) else { return }
        guard let vm = try? PreparedVM(reusing: child) else { return }
        condition.withLock {
            guard ready.count < target else { return }
            ready.append(vm)
            condition.broadcast()
        }
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

    /// Blocks until the pool holds its target (for benchmarks and tests that measure forks
    /// from a full pool).
    func waitUntilFull() {
        refill(whenBelow: target)
        condition.withLock {
            while ready.count < target && refilling { condition.wait() }
        }
    }
}
