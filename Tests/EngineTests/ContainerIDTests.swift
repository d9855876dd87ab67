@testable import Engine
import Testing

/// Container ids: 32 lowercase hex digits, each position taking every digit (no bits lost in
/// the writing), none made twice.
@Suite struct ContainerIDTests {
    @Test func idsAreThirtyTwoRandomLowercaseHexDigits() {
        let ids = (0..<2000).map { _ in ContainerID.make() }
        #expect(Set(ids).count == ids.count)
        let hex = Set("0123456789abcdef".utf8)
        #expect(ids.allSatisfy { $0.utf8.count == 32 && $0.utf8.allSatisfy(hex.contains) })
        // 2,000 ids: each of the 16 digits at each position ~125 times; one missing anywhere is a bug.
        for position in 0..<32 {
            let seen = Set(ids.map { Array($0.utf8)[position] })
            #expect(seen == hex, "position \(position) took only \(seen.count) digits")
        }
    }
}
