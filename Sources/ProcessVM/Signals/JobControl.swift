import Foundation

/// Job-control stops of one process (SIGSTOP, and SIGTSTP, SIGTTIN and SIGTTOU by default):
/// the thread that takes the stop signal stops the process — every thread waits here before
/// it runs guest code again — until a SIGCONT is sent to it or it is killed. A SIGCONT sent
/// after a stop signal but before the stop is taken cancels it, as Linux discards a pending
/// stop when SIGCONT is sent.
///
/// `@unchecked Sendable`: every field is read and written under `condition`.
final class JobControl: @unchecked Sendable {
    private let condition = NSCondition()
    private var stopped = false
    /// A SIGCONT came since the last stop signal was sent.
    private var resumeSent = false
    private var killed = false

    static let continueSignal: Int32 = 18
    static let stopSignal: Int32 = 19
    /// Signals whose default action stops the process (SIGSTOP's always does).
    static let stoppingByDefault: Set<Int32> = [19, 20, 21, 22]

    /// A stop signal was sent: an earlier SIGCONT no longer cancels it.
    func stopSent() { locked { resumeSent = false } }

    /// A SIGCONT was sent: the process goes on (true when it was stopped).
    @discardableResult
    func resume() -> Bool {
        locked {
            resumeSent = true
            let was = stopped
            stopped = false
            condition.broadcast()
            return was
        }
    }

    /// A kill: a stop ends.
    func kill() {
        locked {
            killed = true
            condition.broadcast()
        }
    }

    var isStopped: Bool { locked { stopped } }

    /// Takes a stop signal: true when the process is now stopped, false when a SIGCONT sent
    /// after it cancelled it (or the process is being killed).
    func enter() -> Bool {
        locked {
            if resumeSent || killed { return false }
            stopped = true
            return true
        }
    }

    /// Waits while the process is stopped; true when it goes on, false when it was killed.
    func waitWhileStopped() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while stopped && !killed { _ = condition.wait(until: Date(timeIntervalSinceNow: 1)) }
        return !killed
    }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }
}

extension ProcessVM {
    /// The process stops (a job-control stop by `signal`) until a SIGCONT or a kill: its
    /// parent hears of it (wait4 with WUNTRACED, SIGCHLD unless SA_NOCLDSTOP), every other
    /// thread is kicked to wait too, and when it goes on its parent hears that (WCONTINUED).
    /// Returns a status when it was killed while stopped.
    func stopProcess(by signal: Int32) -> ExitStatus? {
        guard jobControl.enter() else { return endRequest }
        tree.jobStateChanged(identity.pid, .stopped(signal))
        for thread in [mainThread] + threads.all where thread !== current {
            thread.vcpu.requestImmediateExit()
            thread.slot.kick()
        }
        let resumed = releasingMachineState { jobControl.waitWhileStopped() }
        guard resumed else { return endRequest ?? .signaled(9) }
        tree.jobStateChanged(identity.pid, .continued)
        return nil
    }

    /// A thread about to run guest code waits while its process is stopped.
    func waitIfStopped() {
        guard jobControl.isStopped else { return }
        _ = releasingMachineState { jobControl.waitWhileStopped() }
    }

    /// A child of this process stopped or went on: SIGCHLD when the process handles it
    /// (and did not ask SA_NOCLDSTOP), and a wake-up for a wait in progress either way.
    func childChangedJobState() {
        if handlesChildSignal.load(ordering: .relaxed), !ignoresChildStops.load(ordering: .relaxed) {
            sendSignal(17)
        } else {
            for thread in [mainThread] + threads.all { thread.interrupts.wakeup.notify() }
        }
    }
}
