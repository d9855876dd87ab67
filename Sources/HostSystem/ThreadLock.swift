#if canImport(Glibc)
import Glibc
#endif

/// A value behind a pthread mutex of the default kind, whose waiter sleeps in the kernel at
/// once: for locks that many more threads than cores take. Synchronization's Mutex on Linux
/// spins before it sleeps and then sleeps on a priority-inheritance futex; with hundreds of
/// threads on two cores the holder is often preempted, and the spinning took over half of a
/// load runner's CPU with 600 launches in flight, all on its recorder's lock (2026-12-07).
/// Uncontended, the two cost about the same.
public final class ThreadLock<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is read and written only inside `withLock`, under `mutex`.
    private var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
