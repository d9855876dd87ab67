import Foundation
import ProcessVM

/// One container: a forked process VM and its lifecycle. Container actions map to VM
/// actions — stop sends SIGTERM and powers off after a grace period, kill powers off at
/// once, release hands a finished container's VM back to its pool (restored for a sibling, or
/// torn down, in the background), remove kills and releases.
///
/// `@unchecked Sendable`: `vm` and `currentState` are read and written under `condition`; the rest are `let`s.
public final class Container: @unchecked Sendable {
    public enum State: Equatable, Sendable {
        case created
        case running
        case exited(ExitStatus)
    }

    public let name: String
    /// From the fork call until the child was ready to run.
    public let forkLatency: Duration
    /// Whether the child runs in the VM of an earlier, removed sibling.
    public let reusesVM: Bool
    private var vm: ProcessVM?
    /// Where the VM goes back when the container is removed.
    private let pool: VMPool?
    private let condition = NSCondition()
    private var currentState = State.created

    init(vm: ProcessVM, name: String, forkLatency: Duration, reusesVM: Bool = false, pool: VMPool? = nil) {
        self.vm = vm
        self.reusesVM = reusesVM
        self.pool = pool
        self.name = name
        self.forkLatency = forkLatency
    }

    public var state: State { condition.withLock { currentState } }

    /// The child's VM, while it has not been removed (for its memory usage and faults).
    public var processVM: ProcessVM? { condition.withLock { vm } }

    /// Runs the container on the calling thread until it ends.
    @discardableResult
    public func run() throws(GuestError) -> ExitStatus {
        let vm: ProcessVM? = condition.withLock {
            guard currentState == .created else { return nil }
            currentState = .running
            condition.broadcast()
            return self.vm
        }
        guard let vm else { return wait() }
        let status: ExitStatus
        do {
            status = try vm.run()
        } catch {
            finish(.signaled(9))
            throw error
        }
        finish(status)
        return status
    }

    /// Runs the container on a thread of its own.
    public func start() {
        let thread = Thread { [self] in _ = try? run() }
        thread.stackSize = 1 << 20
        thread.start()
        condition.withLock { while currentState == .created { condition.wait() } }
    }

    /// Waits for the container to end.
    public func wait() -> ExitStatus {
        condition.withLock {
            while true {
                if case .exited(let status) = currentState { return status }
                condition.wait()
            }
        }
    }

    /// SIGTERM to the program (its handler runs if it installed one); power off after `grace`.
    @discardableResult
    public func stop(grace: Duration = .seconds(10)) -> ExitStatus {
        guard let vm = processVM, state == .running else { return state == .created ? kill() : wait() }
        vm.sendSignal(15)
        let deadline = Date(timeIntervalSinceNow: Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18)
        let ended = condition.withLock {
            while true {
                if case .exited = currentState { return true }
                if !condition.wait(until: deadline) { return false }
            }
        }
        return ended ? wait() : kill()
    }

    /// Powers the VM off now; the program ends as if by SIGKILL (137).
    @discardableResult
    public func kill() -> ExitStatus {
        let running: Bool = condition.withLock {
            switch currentState {
            case .created:
                currentState = .exited(.signaled(9))
                condition.broadcast()
                return false
            case .running: return true
            case .exited: return false
            }
        }
        if running { processVM?.kill() }
        return wait()
    }

    /// Kills the container if needed and releases its VM (see `release`).
    public func remove() {
        kill()
        release()
    }

    /// Hands a finished container's VM back to its warm parent's pool, which restores it for
    /// a sibling when it has room and otherwise lets its descriptors, memory mapping and KVM
    /// objects go — both on the pool's queue. The container keeps its state and exit status;
    /// its VM's figures (`processVM`) are gone. Does nothing while it runs, or once done.
    public func release() {
        let released: ProcessVM? = condition.withLock {
            guard case .exited = currentState else { return nil }
            defer { vm = nil }
            return vm
        }
        guard let released else { return }
        if let pool { pool.giveBack(released) }
    }

    private func finish(_ status: ExitStatus) {
        condition.withLock {
            currentState = .exited(status)
            condition.broadcast()
        }
    }
}
