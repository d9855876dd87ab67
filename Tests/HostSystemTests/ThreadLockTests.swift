import Foundation
import HostSystem
import Testing

/// ThreadLock keeps its value whole under many more threads than cores.
struct ThreadLockTests {
    @Test func incrementsFromManyThreadsAllCount() {
        let lock = ThreadLock((count: 0, pairs: 0))
        let threads = 64, rounds = 2_000
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            for _ in 0..<rounds {
                lock.withLock { value in
                    // Two fields changed together: a torn update would leave them apart.
                    value.count += 1
                    value.pairs = value.count * 2
                }
            }
        }
        let (count, pairs) = lock.withLock { $0 }
        #expect(count == threads * rounds)
        #expect(pairs == 2 * count)
    }

    @Test func aThrowingBodyLeavesTheLockFree() throws {
        struct Refused: Error {}
        let lock = ThreadLock(1)
        #expect(throws: Refused.self) { try lock.withLock { _ in throw Refused() } }
        #expect(lock.withLock { $0 } == 1)
    }
}
