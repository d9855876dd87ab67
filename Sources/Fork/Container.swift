import Foundation
import ProcessVM

/// One container: a forked process VM and its lifecycle. Container actions map to VM
/// actions — stop sends SIGTERM and powers off after a grace period, kill powers off at
/// once, remove releases the VM (its teardown runs in the background).
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
    private static let reaper = DispatchQueue(label: "vmfork.reaper", qos: .utility)

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
        let notStarted: Bool = condition.withLock {
            if currentState == .created {
                currentState = .exited(.signaled(9))
                condition.broadcast()
                return true
            }
            return false
        }
        if !notStarted { processVM?.kill() }
        return wait()
    }

    /// Kills the container if needed and releases its VM on a background queue: it goes back
    /// to its warm parent's pool, restored, when the pool has room; otherwise its
    /// descriptors, memory mapping and KVM objects go away.
    public func remove() {
        kill()
        let released: ProcessVM? = condition.withLock {
            defer { vm = nil }
            return vm
        }
        if let released { Self.reaper.async { [pool] in pool?.recycle(released) } }
    }

    /// Waits until every VM removed so far has been torn down (tests measuring memory use it).
    public static func waitForTeardown() {
        reaper.sync {}
    }

    private func finish(_ status: ExitStatus) {
        condition.withLock {
            currentState = .exited(status)
            condition.broadcast()
        }
    }
}
