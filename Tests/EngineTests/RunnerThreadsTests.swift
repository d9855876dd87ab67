@testable import Engine
import Foundation
import Synchronization
import Testing

/// Container threads: made ahead and kept however long idle (the daemon's), the rest ending
/// after their idle time, and all of them once released.
@Suite struct RunnerThreadsTests {
    /// This process's threads now (its /proc/self/task entries).
    static func taskIDs() -> Set<Int32> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []).compactMap { Int32($0) })
    }

    /// The kernel's id of the calling thread (/proc/thread-self is PID/task/TID).
    static func threadID() -> Int32 {
        Int32((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self"))?.split(separator: "/").last ?? "") ?? -1
    }

    /// Runs `count` bodies at once, each held until all have started; returns their threads.
    static func runTogether(_ threads: RunnerThreads, _ count: Int) -> Set<Int32> {
        let arrived = Atomic<Int>(0)
        let ids = Mutex<Set<Int32>>([])
        let allIn = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for _ in 0..<count {
            group.enter()
            threads.run {
                ids.withLock { _ = $0.insert(Self.threadID()) }
                if arrived.add(1, ordering: .relaxed).newValue == count { allIn.signal() }
                release.wait()
                group.leave()
            }
        }
        _ = allIn.wait(timeout: .now() + 10)
        for _ in 0..<count { release.signal() }
        _ = group.wait(timeout: .now() + 10)
        return ids.withLock { $0 }
    }

    /// Waits up to 5 s for `condition`.
    static func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<500 {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    @Test func keptThreadsAreMadeAheadAndOutliveTheirIdleTimeUntilReleased() {
        let threads = RunnerThreads(linger: 0.1, kept: 4)
        let before = Self.taskIDs()
        threads.prestart(4)
        #expect(threads.count == 4)
        // Made on a thread of their own: they appear shortly, and runs at once take them.
        #expect(Self.eventually { Self.taskIDs().subtracting(before).count >= 4 })
        usleep(50_000)
        let made = Self.taskIDs().subtracting(before)
        let ran = Self.runTogether(threads, 4)
        #expect(ran.count == 4 && ran.isSubset(of: made), "ran on \(ran), made ahead \(made)")
        // Two more at once than are kept: two are made, and two end once idle past their time.
        let six = Self.runTogether(threads, 6)
        #expect(six.count == 6 && threads.count == 6)
        #expect(Self.eventually { threads.count == 4 })
        usleep(300_000)
        #expect(threads.count == 4, "the kept outlive several idle times")
        #expect(six.intersection(Self.taskIDs()).count == 4)
        // Released: every idle thread ends, none waiting for its idle time.
        threads.release()
        #expect(Self.eventually { threads.count == 0 })
        #expect(six.intersection(Self.taskIDs()).isEmpty)
    }

    @Test func withNoneKeptAnIdleThreadEnds() {
        let threads = RunnerThreads(linger: 0.1)
        let ran = Self.runTogether(threads, 2)
        #expect(ran.count == 2 && threads.count == 2)
        #expect(Self.eventually { threads.count == 0 })
        #expect(ran.intersection(Self.taskIDs()).isEmpty)
    }
}
