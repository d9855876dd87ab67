import CShims
import Foundation
import Glibc
import HostSystem
import Synchronization
import Testing

/// The engine's background queues (`BackgroundThread`): one thread each, SCHED_BATCH for its
/// life, jobs in the order queued, timed ones once due, and the thread gone with its queue.
@Suite struct BackgroundThreadTests {
    /// The kernel ids of this process's threads named `name`.
    static func threads(named name: String) -> [String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter { task in
            // A thread may end between the listing and the read.
            (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines) == name
        }
    }

    @Test func jobsRunInOrderOnOneBatchThreadThatEndsWithItsQueue() throws {
        let name = "bg-test-\(getpid() % 1000)"
        var queue: BackgroundThread? = BackgroundThread(name: name)
        let seen = Mutex<[(index: Int, thread: pid_t, policy: Int32)]>([])
        for index in 0..<200 {
            queue!.async { seen.withLock { $0.append((index, pid_t(cshims_thread_id()), sched_getscheduler(0))) } }
        }
        queue!.sync()
        let jobs = seen.withLock { $0 }
        #expect(jobs.map(\.index) == Array(0..<200))
        #expect(Set(jobs.map(\.thread)).count == 1 && jobs[0].thread != pid_t(cshims_thread_id()))
        #expect(jobs.allSatisfy { $0.policy == CSHIMS_SCHED_BATCH }, "policies \(Set(jobs.map(\.policy)))")
        #expect(Self.threads(named: name) == ["\(jobs[0].thread)"])

        // A timed job runs once due, after untimed ones queued later; the last timed job of a
        // queue let go still runs.
        let order = Mutex<[String]>([])
        let started = ContinuousClock.now
        let waited = Mutex<Duration?>(nil)
        queue!.async(after: .milliseconds(30)) {
            waited.withLock { $0 = ContinuousClock.now - started }
            order.withLock { $0.append("timed") }
        }
        queue!.async { order.withLock { $0.append("now") } }
        queue!.async(after: .seconds(3_600)) { order.withLock { $0.append("last") } }
        // (Plain sleeps: the test's own thread, not the cooperative pool other tests keep busy.)
        for _ in 0..<2_000 where order.withLock({ $0.count }) < 2 { usleep(5_000) }
        #expect(order.withLock { $0 } == ["now", "timed"])
        #expect(try #require(waited.withLock { $0 }) >= .milliseconds(30))
        // Used here, so that it lives until here (Swift may end a variable's object's life
        // after its last use, and its closing would run "last" early).
        queue!.sync()
        queue = nil
        for _ in 0..<2_000 where !Self.threads(named: name).isEmpty { usleep(5_000) }
        #expect(Self.threads(named: name).isEmpty, "the thread outlived its queue")
        #expect(order.withLock { $0 } == ["now", "timed", "last"])
    }
}
