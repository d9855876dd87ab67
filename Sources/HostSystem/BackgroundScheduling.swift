import CShims
import Glibc

/// Background work (restoring pooled VMs, refills, teardowns, state writes) on a thread that
/// also serves other work: `run` makes the calling thread SCHED_BATCH for the body, then
/// normal again. A SCHED_BATCH thread gets its fair share of CPU, but its wake-ups within
/// the body (from locks, from the kernel) never preempt a running thread. Traced on this
/// 2-core machine: a pooled VM's restore, woken as a container ended, took the core from the
/// event loop writing that container's answer for 110 µs. (The wake-up that starts the body
/// still can: the thread was normal then.) Costs two system calls; the body runs either way.
public enum BackgroundScheduling {
    public static func run<T>(_ body: () throws -> T) rethrows -> T {
        var none = sched_param()
        let lowered = sched_setscheduler(0, CSHIMS_SCHED_BATCH, &none) == 0
        defer { if lowered { _ = sched_setscheduler(0, SCHED_OTHER, &none) } }
        return try body()
    }
}
