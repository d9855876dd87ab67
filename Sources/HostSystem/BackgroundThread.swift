import CShims
import Foundation
import Glibc

/// A serial queue of background work (restoring pooled VMs, refills, teardowns, emptying log
/// folders, state writes) with a thread of its own whose policy (`Policy`: SCHED_BATCH, or
/// SCHED_IDLE) holds from its start to its end. A SCHED_BATCH thread gets its fair share of
/// CPU, but its wake-ups never preempt a running thread: the work waits for a core to come
/// free, or for the next tick.
///
/// Why a thread of its own: on libdispatch's shared threads the policy could only be set for
/// the body of each job (two system calls a job, 1.8 % of the engine's CPU at 1,500 launches
/// a second), and the wake-up that began a job came while the thread was still of normal
/// policy. A scheduler trace of a run through a worker (2026-12-06) caught two such wake-ups,
/// a returned VM's restore and the work it queued, taking the core from the daemon's event
/// loop while it had the run's answer to write: 80 µs of a 730 µs run.
///
/// With a gathering time, the thread is woken by a queued job only when it sleeps with nothing
/// to do: once it has run what was queued, it sleeps that long, unwoken, and runs what came
/// meanwhile as one batch, until a gathering finds nothing. Each wake-up costs a switch to the
/// thread and one away from it, and the queuing thread's futex call; on this kind of machine
/// (a nested VM, where a switch reloads CR4 and MSRs) the restore and folder threads, woken
/// once per container, cost 35 µs of each launch's ~400 µs at 1,400 launches a second
/// (`perf record`, 2026-12-07), against one wake-up per gathering now.
///
/// The thread ends once its queue is let go and the work queued before is done.
public final class BackgroundThread: Sendable {
    /// How its thread is scheduled.
    public enum Policy: Sendable {
        /// SCHED_BATCH: a fair share, never preempting at its wake-ups.
        case batch
        /// SCHED_IDLE: runs when nothing else on its core wants to, and is never picked
        /// before a thread woken beside it. Only for work whose owner does it inline, at little
        /// cost, when it falls behind (a fork restores a returned VM itself): on a core that
        /// is never idle it gets almost nothing.
        case idle
    }

    private let queue: JobQueue

    /// `name`: the thread's name (at most 15 bytes are kept, as `ps -L` shows them);
    /// `gathering`: how long the thread gathers jobs after a batch before it runs the next
    /// (nil: each job wakes it): only for work nobody waits for within that time.
    public init(name: String, policy: Policy = .batch, gathering: Duration? = nil) {
        queue = JobQueue(policy: policy == .idle ? CSHIMS_SCHED_IDLE : CSHIMS_SCHED_BATCH, gathering: gathering)
        let queue = self.queue
        let thread = Thread {
            // The kernel's name (ps -L, perf, /proc/PID/task/TID/comm); Foundation's `name` stays its own.
            _ = name.withCString { cshims_set_thread_name($0) }
            queue.serve()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    deinit { queue.close() }

    /// Runs `job` after the work queued before it.
    public func async(_ job: @escaping @Sendable () -> Void) { queue.add(job, at: nil) }

    /// Runs `job` once `delay` has passed (after the work then queued).
    public func async(after delay: Duration, _ job: @escaping @Sendable () -> Void) { queue.add(job, at: .now + delay) }

    /// Runs `job` after the work queued before it, and returns once it has run.
    public func sync(_ job: @escaping @Sendable () -> Void = {}) {
        let done = DispatchSemaphore(value: 0)
        queue.add({
            job()
            done.signal()
        }, at: nil)
        done.wait()
    }
}

/// The queue a `BackgroundThread` serves; its state is guarded by `condition`.
// @unchecked Sendable: every stored var is read and written only while `condition` is locked (`policy` never changes).
private final class JobQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var next = 0
    /// Jobs waiting for their time, earliest first.
    private var timed: [(due: ContinuousClock.Instant, job: @Sendable () -> Void)] = []
    private var closed = false
    /// Whether the thread waits on `condition` (for a job, or for a timed job's time): only
    /// then does a queued job signal it.
    private var waiting = false
    private let policy: Int32
    private let gathering: timespec?

    init(policy: Int32, gathering: Duration?) {
        self.policy = policy
        self.gathering = gathering.map { duration in
            let parts = duration.components
            return timespec(tv_sec: Int(parts.seconds), tv_nsec: Int(parts.attoseconds / 1_000_000_000))
        }
    }

    func add(_ job: @escaping @Sendable () -> Void, at due: ContinuousClock.Instant?) {
        let wake = condition.withLock {
            if let due {
                let index = timed.firstIndex { $0.due > due } ?? timed.endIndex
                timed.insert((due, job), at: index)
            } else {
                jobs.append(job)
            }
            return waiting
        }
        // Signalled after the lock is let go, so the woken thread does not block on it. Not
        // lost: the thread looks at the queue under the lock before it waits.
        if wake { condition.signal() }
    }

    func close() {
        condition.withLock { closed = true }
        condition.signal()
    }

    /// The thread's life: its policy, then each job in turn until closed and empty.
    func serve() {
        var none = sched_param()
        _ = sched_setscheduler(0, policy, &none)
        while let job = take() { job() }
    }

    /// The next job, waiting for one; nil once closed with nothing left (timed jobs still
    /// waiting are run at once then: a state writer's last batch is not dropped).
    private func take() -> (@Sendable () -> Void)? {
        condition.lock()
        defer { condition.unlock() }
        // Whether the queue was looked at after a gathering since the last job ran.
        var gathered = false
        while true {
            let now = ContinuousClock.now
            while let first = timed.first, closed || first.due <= now {
                jobs.append(first.job)
                timed.removeFirst()
            }
            if next < jobs.count {
                let job = jobs[next]
                next += 1
                if next == jobs.count {
                    jobs.removeAll(keepingCapacity: true)
                    next = 0
                }
                return job
            }
            if closed { return nil }
            if let gathering, !gathered {
                // Unlocked and not `waiting`: jobs queued meanwhile do not wake the thread.
                gathered = true
                condition.unlock()
                var left = gathering, rest = timespec()
                while nanosleep(&left, &rest) != 0 && errno == EINTR { left = rest }
                condition.lock()
                continue
            }
            gathered = false
            waiting = true
            if let due = timed.first?.due {
                let wait = now.duration(to: due).components
                _ = condition.wait(until: Date(timeIntervalSinceNow: Double(wait.seconds) + Double(wait.attoseconds) / 1e18))
            } else {
                condition.wait()
            }
            waiting = false
        }
    }
}
