import Foundation
import Synchronization

/// The threads containers run on (each container's vCPU runs on one for its whole life), and
/// a worker's connection readers, which become the thread of a container they start
/// (`ReaderBaton`).
/// A thread that finishes a container waits a while for the next one instead of exiting, so
/// a short container costs no thread creation; there are as many threads as containers run
/// at once. Each has a 1 MiB stack, as Fork's own container threads do.
/// `kept` of them are made ahead (`prestart`) and never end for idleness, until `release`:
/// threads made on demand were made in storms just when the host was busiest (a moment of
/// more launches in flight than ever before), each on the event loop that handed a run over,
/// mapping its stack under the memory-map lock the running containers' page faults take;
/// traced at 3,500 launches a second, ten in 10 ms while launches queued behind them.
final class RunnerThreads: Sendable {
    private struct State {
        var work: [@Sendable () -> Void] = []
        var idle = 0
        /// Threads alive, idle or running.
        var alive = 0
        var kept: Int
        var released = false
    }

    private let state: Mutex<State>
    private let condition = NSCondition()
    /// How long an idle thread beyond the kept waits for work before it exits.
    private let linger: TimeInterval

    init(linger: TimeInterval = 10, kept: Int = 0) {
        self.linger = linger
        state = Mutex(State(kept: max(0, kept)))
    }

    /// Threads alive now, and those of them waiting for work.
    var count: Int { state.withLock { $0.alive } }
    var idleCount: Int { condition.withLock { state.withLock { $0.idle } } }

    /// Makes threads until `count` are alive, on a thread of its own (the caller does not wait).
    func prestart(_ count: Int) {
        let more = state.withLock { state -> Int in
            let more = max(0, count - state.alive)
            state.alive += more
            return more
        }
        guard more > 0 else { return }
        let maker = Thread { [self] in
            for _ in 0..<more { start(first: nil) }
        }
        maker.stackSize = 256 << 10
        maker.start()
    }

    /// No thread is kept any more: idle ones end now, the others after their container.
    func release() {
        condition.withLock {
            state.withLock { state in
                state.kept = 0
                state.released = true
            }
            condition.broadcast()
        }
    }

    /// Runs `body` on an idle runner thread, or a new one when none is idle.
    func run(_ body: @escaping @Sendable () -> Void) {
        let handOff = condition.withLock { () -> Bool in
            state.withLock { state -> Bool in
                guard state.idle > state.work.count else {
                    state.alive += 1
                    return false
                }
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
        start(first: body)
    }

    /// A new thread (already counted in `alive`) that runs `first`, then what comes.
    private func start(first: (@Sendable () -> Void)?) {
        let thread = Thread { [self] in
            first?()
            while let next = nextWork() { next() }
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// The next work for this thread, or nil when it is to end (it then no longer counts).
    private func nextWork() -> (@Sendable () -> Void)? {
        condition.withLock {
            state.withLock { $0.idle += 1 }
            defer { state.withLock { $0.idle -= 1 } }
            func take() -> (@Sendable () -> Void)? { state.withLock { $0.work.isEmpty ? nil : $0.work.removeFirst() } }
            var deadline = Date(timeIntervalSinceNow: linger)
            while true {
                if let work = take() { return work }
                let timedOut = !condition.wait(until: deadline)
                // Work that arrived at the last moment goes first.
                if let work = take() { return work }
                guard timedOut || state.withLock({ $0.released }) else { continue }
                // Idle past its time, or released: it ends unless it is one of the kept.
                let ends = state.withLock { state -> Bool in
                    guard state.alive > state.kept else { return false }
                    state.alive -= 1
                    return true
                }
                if ends { return nil }
                deadline = Date(timeIntervalSinceNow: linger)
            }
        }
    }
}
