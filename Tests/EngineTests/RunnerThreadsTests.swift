@testable import Engine
import Foundation
import TestSupport
import Testing

/// Container threads: made ahead and kept however long idle (the daemon's), the rest ending
/// after their idle time, and all of them once released.
@Suite struct RunnerThreadsTests {
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
        let before = BodiesAtOnce.processThreads()
        threads.prestart(4)
        #expect(threads.count == 4)
        // Made on a thread of their own: they are soon waiting for work, and runs at once take them.
        #expect(Self.eventually { threads.idleCount == 4 })
        let made = BodiesAtOnce.processThreads().subtracting(before)
        let ran = BodiesAtOnce.run(4, on: threads.run).threads
        #expect(ran.count == 4 && ran.isSubset(of: made), "ran on \(ran), made ahead \(made)")
        // (A body's end is signalled before its thread waits again: let them.)
        #expect(Self.eventually { threads.idleCount == 4 })
        // Two more at once than are kept: two are made, and two end once idle past their time.
        let six = BodiesAtOnce.run(6, on: threads.run).threads
        #expect(six.count == 6 && threads.count == 6)
        #expect(Self.eventually { threads.count == 4 })
        usleep(300_000)
        #expect(threads.count == 4, "the kept outlive several idle times")
        #expect(six.intersection(BodiesAtOnce.processThreads()).count == 4)
        // Released: every idle thread ends, none waiting for its idle time.
        threads.release()
        #expect(Self.eventually { threads.count == 0 })
        // A thread leaves the count just before it returns, and the kernel lists it until it has.
        #expect(Self.eventually { six.intersection(BodiesAtOnce.processThreads()).isEmpty })
    }

    @Test func withNoneKeptAnIdleThreadEnds() {
        let threads = RunnerThreads(linger: 0.1)
        let ran = BodiesAtOnce.run(2, on: threads.run).threads
        #expect(ran.count == 2 && threads.count == 2)
        #expect(Self.eventually { threads.count == 0 })
        #expect(ran.intersection(BodiesAtOnce.processThreads()).isEmpty)
    }
}
