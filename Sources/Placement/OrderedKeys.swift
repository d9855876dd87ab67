/// A sorted set of distinct 64-bit keys kept in short sorted blocks, so an insert or a
/// removal moves at most one block's worth of keys and a search is two binary searches.
/// Placement keeps one per image (the NUMA nodes holding its warm parent, keyed by free
/// memory) and walks it from the best end, touching O(log n) entries per decision.
struct OrderedKeys: Sendable {
    private static let blockLimit = 128

    private var blocks: [[UInt64]] = []
    /// The last (largest) key of each block, for the first binary search.
    private var maxima: [UInt64] = []

    /// The first block whose largest key is at least `key`, or `blocks.count`.
    private func block(for key: UInt64) -> Int {
        var low = 0
        var high = maxima.count
        while low < high {
            let mid = (low + high) / 2
            if maxima[mid] < key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The first position in `block` whose key is at least `key`.
    private static func position(of key: UInt64, in block: [UInt64]) -> Int {
        var low = 0
        var high = block.count
        while low < high {
            let mid = (low + high) / 2
            if block[mid] < key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    mutating func insert(_ key: UInt64) {
        if blocks.isEmpty {
            blocks.append([key])
            maxima.append(key)
            return
        }
        let b = Swift.min(block(for: key), blocks.count - 1)
        let at = Self.position(of: key, in: blocks[b])
        precondition(at == blocks[b].count || blocks[b][at] != key, "key inserted twice")
        blocks[b].insert(key, at: at)
        maxima[b] = blocks[b][blocks[b].count - 1]
        if blocks[b].count > 2 * Self.blockLimit {
            let upper = Array(blocks[b][Self.blockLimit...])
            blocks[b].removeSubrange(Self.blockLimit...)
            maxima[b] = blocks[b][blocks[b].count - 1]
            blocks.insert(upper, at: b + 1)
            maxima.insert(upper[upper.count - 1], at: b + 1)
        }
    }

    mutating func remove(_ key: UInt64) {
        let b = block(for: key)
        precondition(b < blocks.count, "removing a key that is not there")
        let at = Self.position(of: key, in: blocks[b])
        precondition(at < blocks[b].count && blocks[b][at] == key, "removing a key that is not there")
        blocks[b].remove(at: at)
        if blocks[b].isEmpty {
            blocks.remove(at: b)
            maxima.remove(at: b)
        } else {
            maxima[b] = blocks[b][blocks[b].count - 1]
        }
    }

    /// The largest key at least `minimum` that satisfies `accept`, walking down from the top.
    func lastDescending(atLeast minimum: UInt64, where accept: (UInt64) -> Bool) -> UInt64? {
        var b = blocks.count - 1
        while b >= 0 {
            let keys = blocks[b]
            var i = keys.count - 1
            while i >= 0 {
                let key = keys[i]
                if key < minimum { return nil }
                if accept(key) { return key }
                i -= 1
            }
            b -= 1
        }
        return nil
    }

    /// The smallest key at least `minimum` that satisfies `accept`, walking up.
    func firstAscending(from minimum: UInt64, where accept: (UInt64) -> Bool) -> UInt64? {
        var b = block(for: minimum)
        guard b < blocks.count else { return nil }
        var i = Self.position(of: minimum, in: blocks[b])
        while b < blocks.count {
            let keys = blocks[b]
            while i < keys.count {
                if accept(keys[i]) { return keys[i] }
                i += 1
            }
            b += 1
            i = 0
        }
        return nil
    }

    /// Every key in ascending order (for checks and reports, not for decisions).
    var all: [UInt64] { blocks.flatMap { $0 } }
}
