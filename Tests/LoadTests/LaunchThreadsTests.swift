@testable import Load
import CShims
import Foundation
import TestSupport
import Synchronization
import Testing

/// The open loop's threads: a launch runs on a thread left idle by an earlier one, a new
/// thread is made only when none is idle, and an idle thread ends after its idle time unless
/// it is one of the kept.
@Suite struct LaunchThreadsTests {
    /// Runs `body` on `threads` and waits for it; returns the kernel's id of the thread it ran on.
    static func runAndWait(_ threads: LaunchThreads) -> pid_t {
        let done = DispatchSemaphore(value: 0)
        let tid = Atomic<Int32>(0)
        threads.run {
            tid.store(pid_t(cshims_thread_id()), ordering: .relaxed)
            done.signal()
        }
        done.wait()
        return tid.load(ordering: .relaxed)
    }

    @Test func aLaunchAfterAnotherRunsOnTheSameThread() {
        let threads = LaunchThreads(idleSeconds: 5)
        let first = Self.runAndWait(threads)
        // The first thread signals before it lists itself idle: give it the moment to do so.
        Thread.sleep(forTimeInterval: 0.05)
        #expect(Self.runAndWait(threads) == first)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(Self.runAndWait(threads) == first)
        #expect(first != pid_t(cshims_thread_id()))
    }

    @Test func launchesAtOnceEachGetAThread() {
        let threads = LaunchThreads(idleSeconds: 5)
        // Each launch blocks until all have started: only one thread per launch lets them.
        let outcome = BodiesAtOnce.run(8, on: threads.run)
        #expect(outcome.allStarted && outcome.allEnded)
        #expect(outcome.threads.count == 8)
    }

    @Test func prestartedThreadsTakeTheFirstLaunchesAndKeptOnesOutliveTheirIdleTime() {
        let threads = LaunchThreads(idleSeconds: 0.1, kept: 3)
        let before = BodiesAtOnce.processThreads()
        threads.prestart(3)
        #expect(threads.count == 3)
        let made = BodiesAtOnce.processThreads().subtracting(before)
        // Launches at once, as many as the threads made ahead: they run on those, and none is made.
        let ran = BodiesAtOnce.run(3, on: threads.run).threads
        #expect(ran.count == 3 && ran.isSubset(of: made), "ran on \(ran), made ahead \(made)")
        #expect(threads.count == 3)
        // Two more at once than are kept: two threads are made, and two end once idle past their time.
        let five = BodiesAtOnce.run(5, on: threads.run).threads
        #expect(five.count == 5 && made.isSubset(of: five))
        #expect(threads.count == 5)
        Thread.sleep(forTimeInterval: 0.6)
        #expect(threads.count == 3)
        // Three are still alive, past several idle times, and take the next launches.
        let alive = five.intersection(BodiesAtOnce.processThreads())
        #expect(alive.count == 3)
        #expect(BodiesAtOnce.run(3, on: threads.run).threads == alive)
        threads.prestart(2)
        #expect(threads.count == 3, "prestart makes threads only up to the count asked")
    }

    @Test func anIdleThreadEndsAfterItsIdleTime() throws {
        let threads = LaunchThreads(idleSeconds: 0.1)
        let first = Self.runAndWait(threads)
        Thread.sleep(forTimeInterval: 0.5)
        // Gone from the process (its /proc/self/task entry), and the next launch has a new thread.
        #expect(!FileManager.default.fileExists(atPath: "/proc/self/task/\(first)"))
        #expect(Self.runAndWait(threads) != first)
    }
}
