import Synchronization

/// Keeps requests from reading the agent's state ahead of runs whose answers a worker wrote
/// (`RunAnswerHandOff`). A worker writes a run's answer to the caller, then tells the daemon,
/// which records the run's end and removal; a caller that got the answer and at once asks on
/// another connection (is the container gone?) could reach the daemon in between. So each
/// hand-off holds a ticket from its offer until the daemon has recorded its run (or heard that
/// the worker did not answer), and a request waits for the tickets taken before it came.
///
/// The wait is short: a ticket is held at most until the worker's reply, which comes by its
/// wait limit (`WorkerServer.heldAnswerLimit`, 10 ms) when the worker does not answer, and
/// until the run's records when it does. Runs themselves do not wait (they read nothing a
/// run before them changed, and a load of runs would otherwise go one after another).
final class AnswerFence: Sendable {
    private struct State {
        var next: UInt64 = 1
        var held: Set<UInt64> = []
        /// Waiting requests, each with the last ticket it waits for.
        var waiters: [(upTo: UInt64, resume: CheckedContinuation<Void, Never>)] = []
    }
    private let state = Mutex(State())
    /// Tickets held now (read without the lock on every request).
    private let holding = Atomic<Int>(0)

    /// A ticket for a hand-off offered now.
    func take() -> UInt64 {
        state.withLock { state in
            defer { state.next += 1 }
            state.held.insert(state.next)
            holding.add(1, ordering: .releasing)
            return state.next
        }
    }

    /// Gives a ticket back (once; a second call does nothing): requests that waited for it
    /// and nothing older go on.
    func giveBack(_ ticket: UInt64) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.held.remove(ticket) != nil else { return [] }
            holding.subtract(1, ordering: .releasing)
            let oldest = state.held.min() ?? .max
            var ready: [CheckedContinuation<Void, Never>] = []
            state.waiters.removeAll { waiter in
                guard waiter.upTo < oldest else { return false }
                ready.append(waiter.resume)
                return true
            }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    /// Returns once every ticket taken before this call is given back.
    func passed() async {
        guard holding.load(ordering: .acquiring) > 0 else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                let upTo = state.next - 1
                guard let oldest = state.held.min(), oldest <= upTo else { return true }
                state.waiters.append((upTo, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }
}
