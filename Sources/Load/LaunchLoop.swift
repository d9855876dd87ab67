import Foundation
import Synchronization

/// One way of launching a container of the mix: through the agent, or a peer. `launch` runs
/// on a thread of its own, blocks until the launch is over, and reports it to the recorder
/// exactly once as finished or failed (after `launched`).
protocol LaunchDriver: Sendable {
    func launch(_ arrival: LoadSchedule.Arrival, due: ContinuousClock.Instant, recorder: LoadRecorder)
    /// The run is over: end what still runs (containers without a lifetime that never exit).
    func releaseAll()
    /// Before the first arrival: make what `launchers` launches at once need (connections).
    func prepare(launchers: Int) throws
}

extension LaunchDriver {
    func prepare(launchers: Int) throws {}
}

/// Open loop: each arrival is sent when it is due, whatever became of the ones before it,
/// each on a thread of its own, at most `maxInFlight` at once (past that the scheduler waits,
/// and the wait shows in the late launches' latency). Closed loop: `concurrency` threads each
/// launch, wait for the launch to be over, and launch again, until `duration` or the count.
enum LaunchLoop {
    enum Mode: Sendable {
        case open
        case closed(concurrency: Int)
    }

    /// `threads`: the open loop's launch threads, made (and warmed) before the recorder's start.
    static func drive(_ arrivals: [LoadSchedule.Arrival], mode: Mode, duration: Double, maxInFlight: Int, drainSeconds: Double,
                      driver: any LaunchDriver, recorder: LoadRecorder, threads: LaunchThreads = LaunchThreads()) {
        let room = DispatchSemaphore(value: maxInFlight)
        let group = DispatchGroup()
        switch mode {
        case .open:
            recorder.offered(arrivals.map(\.offset))
            for arrival in arrivals {
                let due = recorder.start + .nanoseconds(Int64(arrival.offset * 1e9))
                sleep(until: due)
                if room.wait(timeout: .now()) == .timedOut {
                    recorder.stalled()
                    room.wait()
                }
                group.enter()
                threads.run {
                    driver.launch(arrival, due: due, recorder: recorder)
                    room.signal()
                    group.leave()
                }
            }
        case .closed(let concurrency):
            let next = Atomic<Int>(0)
            let deadline = recorder.start + .nanoseconds(Int64(duration * 1e9))
            for _ in 0..<concurrency {
                group.enter()
                spawn {
                    while ContinuousClock.now < deadline {
                        let index = next.add(1, ordering: .relaxed).oldValue
                        guard index < arrivals.count else { break }
                        driver.launch(arrivals[index], due: .now, recorder: recorder)
                    }
                    group.leave()
                }
            }
        }
        if group.wait(timeout: .now() + drainSeconds) == .timedOut {
            driver.releaseAll()
            group.wait()
        }
    }

    static func sleep(until instant: ContinuousClock.Instant) {
        let left = instant - .now
        guard left > .zero else { return }
        var spec = timespec(tv_sec: Int(left.components.seconds), tv_nsec: Int(left.components.attoseconds / 1_000_000_000))
        var rest = timespec()
        while nanosleep(&spec, &rest) != 0 && errno == EINTR { spec = rest }
    }

    static func spawn(_ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.stackSize = 512 << 10
        thread.start()
    }
}

/// Threads for an open loop's launches, each kept for the next launch once its own is over
/// (up to `idleSeconds` idle): a launch per thread made anew cost the load runner a clone, a
/// stack mapping and an exit per launch, about a tenth of its CPU at 1,000 launches a second,
/// on the cores the agent under test shares.
/// `kept` of them never end for idleness, and `prestart` makes threads before the first launch:
/// threads made while launches run map their stacks under the process's memory-map lock, which
/// the launches' own page faults wait behind, and the threads ended after a lull were made again
/// at the next burst, the moment a runner can least afford it.
final class LaunchThreads: Sendable {
    /// A thread waiting for its next launch: `job` is handed over under the pool's lock.
    private final class Idle: Sendable {
        let wake = DispatchSemaphore(value: 0)
        let job = Mutex<(@Sendable () -> Void)?>(nil)
    }

    private struct State {
        var idle: [Idle] = []
        /// Threads alive, idle or not.
        var alive = 0
    }

    private let state = Mutex(State())
    private let idleSeconds: Double
    private let kept: Int

    init(idleSeconds: Double = 2, kept: Int = 0) {
        self.idleSeconds = idleSeconds
        self.kept = kept
    }

    /// Threads alive now, idle or running a launch.
    var count: Int { state.withLock { $0.alive } }

    /// Makes threads until `count` are alive, and returns once each of them waits for a launch.
    func prestart(_ count: Int) {
        let made = state.withLock { state -> Int in
            let more = max(0, count - state.alive)
            state.alive += more
            return more
        }
        let listed = DispatchGroup()
        for _ in 0..<made {
            listed.enter()
            LaunchLoop.spawn { [self] in loop(first: nil, listed: listed) }
        }
        listed.wait()
    }

    /// Runs `body` on an idle thread, or on a new one when none is idle.
    func run(_ body: @escaping @Sendable () -> Void) {
        let waiting = state.withLock { state -> Idle? in
            if let waiting = state.idle.popLast() { return waiting }
            state.alive += 1
            return nil
        }
        if let waiting {
            waiting.job.withLock { $0 = body }
            waiting.wake.signal()
            return
        }
        LaunchLoop.spawn { [self] in loop(first: body, listed: nil) }
    }

    private func loop(first: (@Sendable () -> Void)?, listed: DispatchGroup?) {
        first?()
        var listed = listed
        while let job = waitForNext(listed: listed) {
            listed = nil
            job()
        }
    }

    /// The next launch for this thread, or nil when none came within `idleSeconds` and more
    /// than `kept` threads are alive (this one then counts as ended). `listed` is left once
    /// this thread is listed idle.
    private func waitForNext(listed: DispatchGroup?) -> (@Sendable () -> Void)? {
        let me = Idle()
        state.withLock { $0.idle.append(me) }
        listed?.leave()
        enum AfterTimeout { case ended, kept, handedOver }
        while me.wake.wait(timeout: .now() + idleSeconds) == .timedOut {
            // Still listed: no one took it, and no one can once it is off the list. Not listed:
            // a launch was handed over just as the wait ended, and its signal is on the way.
            let after = state.withLock { state -> AfterTimeout in
                guard let index = state.idle.firstIndex(where: { $0 === me }) else { return .handedOver }
                guard state.alive > kept else { return .kept }
                state.idle.remove(at: index)
                state.alive -= 1
                return .ended
            }
            switch after {
            case .ended: return nil
            case .kept: continue
            case .handedOver: me.wake.wait()
            }
            break
        }
        return me.job.withLock { job in
            defer { job = nil }
            return job
        }
    }
}

/// A value behind a lock that escaping closures can share (a Mutex itself cannot be captured).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
