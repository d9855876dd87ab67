import Foundation
import Synchronization

/// One way of launching a container of the mix: through the agent, or a peer. `launch` runs
/// on a thread of its own, blocks until the launch is over, and reports it to the recorder
/// exactly once as finished or failed (after `launched`).
protocol LaunchDriver: Sendable {
    func launch(_ arrival: LoadSchedule.Arrival, due: ContinuousClock.Instant, recorder: LoadRecorder)
    /// The run is over: end what still runs (containers without a lifetime that never exit).
    func releaseAll()
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

    static func drive(_ arrivals: [LoadSchedule.Arrival], mode: Mode, duration: Double, maxInFlight: Int, drainSeconds: Double,
                      driver: any LaunchDriver, recorder: LoadRecorder) {
        let room = DispatchSemaphore(value: maxInFlight)
        let group = DispatchGroup()
        switch mode {
        case .open:
            let threads = LaunchThreads()
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
final class LaunchThreads: Sendable {
    /// A thread waiting for its next launch: `job` is handed over under the pool's lock.
    private final class Idle: Sendable {
        let wake = DispatchSemaphore(value: 0)
        let job = Mutex<(@Sendable () -> Void)?>(nil)
    }

    private let idle = Mutex<[Idle]>([])
    private let idleSeconds: Double

    init(idleSeconds: Double = 2) { self.idleSeconds = idleSeconds }

    /// Runs `body` on an idle thread, or on a new one when none is idle.
    func run(_ body: @escaping @Sendable () -> Void) {
        if let waiting = idle.withLock({ $0.popLast() }) {
            waiting.job.withLock { $0 = body }
            waiting.wake.signal()
            return
        }
        LaunchLoop.spawn { [self] in
            var next: (@Sendable () -> Void)? = body
            while let job = next {
                job()
                next = waitForNext()
            }
        }
    }

    /// The next launch for this thread, or nil when none came within `idleSeconds`.
    private func waitForNext() -> (@Sendable () -> Void)? {
        let me = Idle()
        idle.withLock { $0.append(me) }
        if me.wake.wait(timeout: .now() + idleSeconds) == .timedOut {
            // Still listed: no one took it, and no one can now. Not listed: a launch was
            // handed over just as the wait ended, and its signal is on the way.
            let stillIdle = idle.withLock { list in
                guard let index = list.firstIndex(where: { $0 === me }) else { return false }
                list.remove(at: index)
                return true
            }
            if stillIdle { return nil }
            me.wake.wait()
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
