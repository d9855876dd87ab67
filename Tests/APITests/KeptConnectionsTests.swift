@testable import API
import Testing

/// The blocking client's idle connections: the earliest opened is taken first, whatever
/// order they came back in.
@Suite struct KeptConnectionsTests {
    @Test func theEarliestOpenedIsTakenFirst() {
        var kept = KeptConnections()
        let connections = (0..<6).map { kept.opened(Int32(100 + $0)) }
        #expect(connections.map(\.opened) == [1, 2, 3, 4, 5, 6])
        for index in [3, 0, 5, 1, 4, 2] { kept.put(connections[index]) }
        #expect(kept.count == 6)
        #expect(Set(kept.descriptors) == Set(100...105))
        // Taken, the earliest two go out; one comes back and is the next taken again.
        let first = kept.take(), second = kept.take()
        #expect(first?.fd == 100 && second?.fd == 101)
        kept.put(connections[1])
        #expect(kept.take()?.fd == 101)
        #expect((0..<4).compactMap { _ in kept.take()?.fd } == [102, 103, 104, 105])
        #expect(kept.take() == nil && kept.count == 0)
    }
}
