import Foundation
import Synchronization

/// The threads containers run on (each container's vCPU runs on one for its whole life), and
/// a worker's connection readers, which become the thread of a container they start
/// (`ReaderBaton`).
/// A thread that finishes a container waits a while for the next one instead of exiting, so
/// a short container costs no thread creation; there are as many threads as containers run
/// at once. Each has a 1 MiB stack, as Fork's own container threads do.
final class RunnerThreads: Sendable {
    private struct State {
        var work: [@Sendable () -> Void] = []
        var idle = 0
    }

    private let state = Mutex(State())
    private let condition = NSCondition()
    /// How long an idle thread waits for work before it exits.
    private let linger: TimeInterval

    init(linger: TimeInterval = 10) {
        self.linger = linger
    }

    /// Runs `body` on an idle runner thread, or a new one when none is idle.
    func run(_ body: @escaping @Sendable () -> Void) {
        let handOff = condition.withLock { () -> Bool in
            state.withLock { state -> Bool in
                guard state.idle > state.work.count else { return false }
                state.work.append(body)
                return true
            }
        }
        if handOff {
            // Signalled after the lock is let go: a thread woken while it is held wakes only to
            // block on it, and is woken a second time (two switches per container, traced).
            // Not lost: the waiter checks the work list under the lock before it waits.
            condition.signal()
            return
        }
        let thread = Thread { [self] in
            body()
            loop()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    private func loop() {
        while let next = nextWork() { next() }
    }

    private func nextWork() -> (@Sendable () -> Void)? {
        condition.withLock {
            state.withLock { $0.idle += 1 }
            defer { state.withLock { $0.idle -= 1 } }
            let deadline = Date(timeIntervalSinceNow: linger)
            while true {
                if let work = state.withLock({ $0.work.isEmpty ? nil : $0.work.removeFirst() }) { return work }
                if !condition.wait(until: deadline) {
                    // Timed out: take work that arrived at the last moment, else exit.
                    return state.withLock { $0.work.isEmpty ? nil : $0.work.removeFirst() }
                }
            }
        }
    }
}
