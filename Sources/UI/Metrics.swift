import Foundation

/// The agent's Prometheus text (`GET /metrics`), read for the overview: plain values by name
/// (series with labels summed), and a histogram's quantiles from its cumulative buckets.
struct MetricsText {
    private var values: [String: Double] = [:]
    private var buckets: [String: [(bound: Double, count: Double)]] = [:]

    init(_ text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            let name = String(series.prefix { $0 != "{" })
            if name.hasSuffix("_bucket"), let le = series.range(of: "le=\"") {
                let boundText = series[le.upperBound...].prefix { $0 != "\"" }
                let bound = boundText == "+Inf" ? Double.infinity : Double(boundText) ?? .nan
                buckets[String(name.dropLast("_bucket".count)), default: []].append((bound, value))
            } else {
                values[name, default: 0] += value
            }
        }
    }

    func value(_ name: String) -> Double? { values[name] }

    /// The upper bound of the bucket the q-th share of observations falls in (nil: none yet).
    func quantile(_ name: String, _ q: Double) -> Double? {
        guard let series = buckets[name]?.sorted(by: { $0.bound < $1.bound }), let total = series.last?.count, total > 0 else { return nil }
        return series.first { $0.count >= q * total }?.bound
    }
}
