import CShims
import Dispatch
import Foundation
import Synchronization

/// Thread pools under test (the load runner's launch threads, the engine's container
/// threads): `count` bodies handed to `run` at once, each held until all have started, so
/// that only a thread per body lets them all start.
public enum BodiesAtOnce {
    public struct Outcome: Sendable {
        /// The kernel's ids of the threads the bodies ran on.
        public let threads: Set<Int32>
        /// All started within 10 s, and all ended within 10 s of their release.
        public let allStarted: Bool
        public let allEnded: Bool
    }

    public static func run(_ count: Int, on run: (@escaping @Sendable () -> Void) -> Void) -> Outcome {
        let arrived = Atomic<Int>(0)
        let ids = Mutex<Set<Int32>>([])
        let allIn = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for _ in 0..<count {
            group.enter()
            run {
                ids.withLock { _ = $0.insert(Int32(cshims_thread_id())) }
                if arrived.add(1, ordering: .relaxed).newValue == count { allIn.signal() }
                release.wait()
                group.leave()
            }
        }
        let started = allIn.wait(timeout: .now() + 10) == .success
        for _ in 0..<count { release.signal() }
        let ended = group.wait(timeout: .now() + 10) == .success
        return Outcome(threads: ids.withLock { $0 }, allStarted: started, allEnded: ended)
    }

    /// This process's threads now (its /proc/self/task entries).
    public static func processThreads() -> Set<Int32> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []).compactMap { Int32($0) })
    }
}
