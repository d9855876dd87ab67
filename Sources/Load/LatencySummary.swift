import Histogram

/// A latency distribution as the report shows it, in microseconds.
public struct LatencySummary: Codable, Sendable, Equatable {
    public var count: Int
    public var mean: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double

    public init(_ histogram: Histogram<UInt64>) {
        count = Int(histogram.totalCount)
        guard count > 0 else {
            mean = 0; p50 = 0; p90 = 0; p99 = 0; p999 = 0; max = 0
            return
        }
        mean = histogram.mean
        p50 = Double(histogram.valueAtPercentile(50))
        p90 = Double(histogram.valueAtPercentile(90))
        p99 = Double(histogram.valueAtPercentile(99))
        p999 = Double(histogram.valueAtPercentile(99.9))
        max = Double(histogram.max)
    }
}

/// The histograms of one run, microseconds from the moment a launch was due.
struct LatencyHistograms {
    /// Up to an hour, three significant digits.
    static func make() -> Histogram<UInt64> {
        Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    }

    var running = make()
    var firstOutput = make()
    var exit = make()

    static func record(_ histogram: inout Histogram<UInt64>, _ duration: Duration) {
        let micros = Swift.max(1, Swift.min(3_600_000_000, Int64(duration / .microseconds(1))))
        _ = histogram.record(UInt64(micros))
    }
}
