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
/// each on a thread of its own (`PacedLaunches`), at most `maxInFlight` at once (past that the
/// next arrival waits for a thread, and the wait shows in the late launches' latency).
/// Closed loop: `concurrency` threads each launch, wait for the launch to be over, and launch
/// again, until `duration` or the count.
enum LaunchLoop {
    enum Mode: Sendable {
        case open
        case closed(concurrency: Int)
    }

    /// `paced`: the open loop's launch threads, made before the recorder's start.
    static func drive(_ arrivals: [LoadSchedule.Arrival], mode: Mode, duration: Double, maxInFlight: Int, drainSeconds: Double,
                      driver: any LaunchDriver, recorder: LoadRecorder, paced: PacedLaunches? = nil) {
        let group = DispatchGroup()
        switch mode {
        case .open:
            recorder.offered(arrivals.map(\.offset))
            let paced = paced ?? PacedLaunches(warm: 1)
            paced.launch(arrivals, maxThreads: maxInFlight, driver: driver, recorder: recorder, inFlight: group)
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

/// The open loop's launch threads, each its own scheduler: a thread takes the next arrival no
/// thread has taken, sleeps until it is due, launches it, and takes the next. Where one
/// scheduler thread slept until each arrival and handed it to an idle launch thread, a launch
/// costs one thread one timer wake-up, not two threads a wake-up each (the hand-off was a
/// futex wake, and when the other core slept an IPI: on this nested machine an exit of the
/// outer hypervisor, on the cores the agent under test shares).
/// `warm` threads are made ahead, before the recorder's start, and wait for `launch`. When a
/// thread begins a launch and none is left to take the next arrival, one more is made (at most
/// `maxThreads` in all: past that the next arrival waits for a thread to be free, counted as a
/// stall, and its latency from when it was due shows the wait). Threads end with the schedule.
final class PacedLaunches: Sendable {
    private struct Plan: Sendable {
        let arrivals: [LoadSchedule.Arrival]
        let maxThreads: Int
        let driver: any LaunchDriver
        let recorder: LoadRecorder
        let inFlight: DispatchGroup
        let lastBegun: DispatchSemaphore
    }

    private struct State {
        var plan: Plan?
        /// Threads alive, and those of them not launching (each holding the arrival it took
        /// next, or waiting for the plan).
        var alive = 0
        var free = 0
    }

    private let state = Mutex(State())
    private let next = Atomic<Int>(0)
    /// Signalled once per thread waiting for the plan.
    private let go = DispatchSemaphore(value: 0)

    /// Makes `warm` threads (at least one), which wait for `launch`.
    init(warm: Int) {
        let count = max(1, warm)
        state.withLock { state in
            state.alive = count
            state.free = count
        }
        for _ in 0..<count { LaunchLoop.spawn { [self] in waitForPlan() } }
    }

    /// Threads alive now.
    var count: Int { state.withLock { $0.alive } }

    /// Launches every arrival when it is due (from `recorder.start`); returns once the last has
    /// begun. Each launch is in `inFlight` from when a thread takes it until it is over.
    func launch(_ arrivals: [LoadSchedule.Arrival], maxThreads: Int, driver: any LaunchDriver, recorder: LoadRecorder, inFlight: DispatchGroup) {
        guard !arrivals.isEmpty else { return }
        let plan = Plan(arrivals: arrivals, maxThreads: max(1, maxThreads), driver: driver, recorder: recorder, inFlight: inFlight,
                        lastBegun: DispatchSemaphore(value: 0))
        let waiting = state.withLock { state -> Int in
            state.plan = plan
            return state.alive
        }
        for _ in 0..<waiting { go.signal() }
        plan.lastBegun.wait()
    }

    private func waitForPlan() {
        go.wait()
        guard let plan = state.withLock({ $0.plan }) else { return }
        run(plan)
    }

    private func run(_ plan: Plan) {
        while true {
            let index = next.add(1, ordering: .relaxed).oldValue
            guard index < plan.arrivals.count else { break }
            plan.inFlight.enter()
            let arrival = plan.arrivals[index]
            let due = plan.recorder.start + .nanoseconds(Int64(arrival.offset * 1e9))
            LaunchLoop.sleep(until: due)
            // Launching now: when no thread is left to take the next arrival, one more is made.
            let more = state.withLock { state -> Bool? in
                state.free -= 1
                guard state.free == 0, index + 1 < plan.arrivals.count else { return false }
                guard state.alive < plan.maxThreads else { return nil }
                state.alive += 1
                state.free += 1
                return true
            }
            switch more {
            case true?: LaunchLoop.spawn { [self] in run(plan) }
            case nil: plan.recorder.stalled()
            case false?: break
            }
            if index == plan.arrivals.count - 1 { plan.lastBegun.signal() }
            plan.driver.launch(arrival, due: due, recorder: plan.recorder)
            plan.inFlight.leave()
            state.withLock { $0.free += 1 }
        }
        state.withLock { state in
            state.alive -= 1
            state.free -= 1
        }
    }
}

/// A value behind a lock that escaping closures can share (a Mutex itself cannot be captured).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
