import Foundation
import KVM
import ProcessVM

/// VMs created ahead of time for one fork point, refilled by a background thread so that
/// neither creating nor destroying a VM is on a fork's critical path.
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
    private static let refillQueue = DispatchQueue(label: "vmfork.pool.refill", qos: .utility)

    init(system: KVMSystem, forkPoint: ForkPoint, target: Int) {
        self.system = system
        self.forkPoint = forkPoint
        self.target = max(0, target)
    }

    /// A ready VM, or one made now when the pool is empty; starts a refill either way.
    func take() throws(GuestError) -> PreparedVM {
        let taken: PreparedVM? = condition.withLock { ready.popLast() }
        refill()
        if let taken { return taken }
        condition.withLock { missCount += 1 }
        return try PreparedVM(system: system, forkPoint: forkPoint, readAhead: false)
    }

    /// Tops the pool up to its target in the background (one refill at a time).
    func refill() {
        let start: Bool = condition.withLock {
            guard !refilling, ready.count < target else { return false }
            refilling = true
            return true
        }
        guard start else { return }
        Self.refillQueue.async { [self] in
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

    /// Blocks until the pool holds its target (for benchmarks and tests that measure forks
    /// from a full pool).
    func waitUntilFull() {
        condition.withLock {
            while ready.count < target && refilling { condition.wait() }
        }
    }
}
