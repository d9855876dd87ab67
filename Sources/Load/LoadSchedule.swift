import Foundation
import WorkloadProfiles

/// When each launch of a run is due and which entry of the mix it is: arrivals follow the
/// profile's pattern at a rate that climbs linearly over the ramp-up, then holds. Built up
/// front from a seed, so a run and its peers are offered the very same launches.
public struct LoadSchedule: Sendable {
    public struct Arrival: Sendable, Equatable {
        /// Seconds from the start of the run.
        public var offset: Double
        /// Index into the mix's entries.
        public var entry: Int
    }

    public let arrivals: [Arrival]

    /// Arrivals at `rate` per second (after `rampUp` seconds of climbing from zero) until
    /// `duration` seconds or `count` launches, whichever comes first.
    public init(mix: WorkloadProfile.LaunchMix, rate: Double, rampUp: Double, duration: Double, count: Int?, seed: UInt64) {
        var generator = SplitMix(seed: seed)
        var offsets: [Double] = []
        let limit = count ?? Int.max
        guard rate > 0, duration > 0, !mix.entries.isEmpty else {
            arrivals = []
            return
        }
        // Arrivals are points of a unit-rate process in "expected launches so far" (Λ),
        // mapped back to time through Λ(t): the same pattern whatever the ramp.
        var position = 0.0
        var due: [Double] = []
        while offsets.count < limit {
            if due.isEmpty {
                switch mix.arrivalPattern {
                case .constant:
                    position += 1
                    due = [position]
                case .poisson:
                    position += -Foundation.log(1 - generator.nextUnit())
                    due = [position]
                case .burst:
                    let size = Double(mix.burstSize ?? 1)
                    position += size
                    due = Array(repeating: position - size + 1, count: Int(size))
                }
            }
            let time = Self.time(forExpected: due.removeFirst(), rate: rate, rampUp: rampUp)
            guard time < duration else { break }
            offsets.append(time)
        }
        let weights = mix.entries.map(\.weight)
        let total = weights.reduce(0, +)
        var credit = [Double](repeating: 0, count: weights.count)
        arrivals = offsets.map { offset in
            // Smooth weighted round robin: every entry gets its share in every stretch of launches.
            for k in credit.indices { credit[k] += weights[k] / total }
            let k = credit.indices.max { credit[$0] < credit[$1] }!
            credit[k] -= 1
            return Arrival(offset: offset, entry: k)
        }
    }

    /// The time t at which Λ(t) = expected, for λ(t) = rate · min(1, t / rampUp).
    static func time(forExpected expected: Double, rate: Double, rampUp: Double) -> Double {
        let rampLaunches = rate * rampUp / 2
        if rampUp > 0, expected <= rampLaunches { return (2 * expected * rampUp / rate).squareRoot() }
        return rampUp + (expected - rampLaunches) / rate
    }

    /// The rate offered at `time` seconds into the run.
    public static func offeredRate(at time: Double, rate: Double, rampUp: Double) -> Double {
        rampUp > 0 ? rate * Swift.min(1, Swift.max(0, time) / rampUp) : rate
    }
}

/// A small seeded generator (SplitMix64), so a schedule is the same for the same seed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    mutating func nextUnit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
