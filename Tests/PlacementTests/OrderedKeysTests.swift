import TestSupport
import Testing
@testable import Placement

/// The sorted-block key set behind the host index, against a plain sorted array.
@Suite struct OrderedKeysTests {
    @Test func matchesASortedArrayThroughInsertsRemovalsAndSplits() {
        var keys = OrderedKeys()
        var reference: [UInt64] = []
        var generator = SplitMix64(seed: 3)
        for step in 0..<20_000 {
            if reference.isEmpty || generator.next() % 3 != 0 {
                let key = generator.next() % 5_000
                guard !reference.contains(key) else { continue }
                keys.insert(key)
                reference.append(key)
            } else {
                let key = reference.remove(at: Int(generator.next() % UInt64(reference.count)))
                keys.remove(key)
            }
            if step % 1_000 == 0 { #expect(keys.all == reference.sorted()) }
        }
        reference.sort()
        #expect(keys.all == reference)
        // The searches: largest at least a bound, smallest from a bound, with a filter.
        let even = { (key: UInt64) in key % 2 == 0 }
        for bound in stride(from: UInt64(0), through: 5_000, by: 97) {
            #expect(keys.lastDescending(atLeast: bound, where: even) == reference.last { $0 >= bound && even($0) })
            #expect(keys.firstAscending(from: bound, where: even) == reference.first { $0 >= bound && even($0) })
        }
    }
}
