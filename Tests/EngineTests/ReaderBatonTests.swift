@testable import Engine
import Foundation
import Synchronization
import Testing

/// A worker connection's reading, passed on by the thread that read a create so that it can
/// run the container itself (`ReaderBaton`).
@Suite struct ReaderBatonTests {
    /// Only the thread that read the create may take the container, and only once; passing
    /// starts the next reader exactly once.
    @Test func onlyTheReadersThreadPassesAndOnlyOnce() {
        let started = Atomic<Int>(0)
        let baton = ReaderBaton { started.add(1, ordering: .relaxed) }
        // Another thread (where a task begun on the reader may go on after a wait) cannot.
        let elsewhere = Mutex<Bool?>(nil)
        let thread = Thread { elsewhere.withLock { $0 = baton.pass() } }
        thread.start()
        while elsewhere.withLock({ $0 }) == nil { usleep(1_000) }
        #expect(elsewhere.withLock { $0 } == false)
        #expect(!baton.passed)
        #expect(started.load(ordering: .relaxed) == 0)
        #expect(baton.pass())
        #expect(baton.passed)
        #expect(!baton.pass())
        #expect(started.load(ordering: .relaxed) == 1)
    }
}
