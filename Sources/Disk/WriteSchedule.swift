/// A reproducible stream of writes for the crash test: `vmfork disk write-loop` writes them,
/// and the test, knowing the seed, recomputes what every acknowledged write put on disk.
/// Requests vary from one sector to several grains and straddle grain boundaries.
public struct WriteSchedule: Sendable {
    public let seed: UInt64
    public let capacityBytes: UInt64
    /// The largest request, in sectors (two and a half 64 KiB grains).
    public static let maximumSectors = 320

    public init(seed: UInt64, capacityBytes: UInt64) {
        self.seed = seed
        self.capacityBytes = capacityBytes
    }

    /// Where write `number` goes: its first sector and its length in sectors.
    public func request(_ number: Int) -> (firstSector: UInt64, sectors: Int) {
        let capacitySectors = capacityBytes / 512
        var state = Self.mix(seed &+ UInt64(number) &* 0x9E37_79B9_7F4A_7C15)
        let sectors = Int(state % UInt64(Self.maximumSectors)) + 1
        state = Self.mix(state)
        let first = state % (capacitySectors - UInt64(sectors) + 1)
        return (first, sectors)
    }

    /// Fills `buffer` (whole sectors) with what write `number` of the schedule seeded `seed`
    /// puts at `firstSector` onwards: every sector's bytes depend on seed, number and sector.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64, number: Int, firstSector: UInt64) {
        // unsafe: callers pass whole sectors (a multiple of 8 bytes) at an 8-aligned base (an IOBuffer's page, an array's storage);
        // the UInt64 binding outlives the call, and later users read the bytes raw.
        let words = buffer.bindMemory(to: UInt64.self)
        for index in words.indices {
            let sector = firstSector + UInt64(index / 64)
            words[index] = mix(seed ^ (UInt64(number) << 32) ^ (sector &* 0x100_0000_01B3) ^ UInt64(index % 64))
        }
    }

    /// SplitMix64's finalizer: a cheap, well-spread hash of one word.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
