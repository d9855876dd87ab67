import Foundation

extension LoadReport {
    /// The report as tables: one row per side (launches, throughput, latency percentiles),
    /// errors by kind, and the engine's memory and CPU.
    public func renderText() -> String {
        var lines: [String] = []
        let load = loadAverageBefore.map { String(format: ", load average %.2f at start", $0) } ?? ""
        let how = mode == "open" ? "open loop at \(Self.number(offeredPerSecond ?? 0)) launches/s offered (\(arrival))" : "closed loop, \(concurrency ?? 0) at a time"
        lines.append("Load run of profile \(profile): \(how), ramp-up \(Self.number(rampUpSeconds)) s, duration \(Self.number(durationSeconds)) s"
            + (count.map { ", at most \($0) launches" } ?? "") + (timeScale != 1 ? ", lifetimes × \(Self.number(timeScale))" : "") + "; \(cores) cores\(load)")
        lines.append("Latency from when each launch was due (coordinated omission corrected), microseconds.")
        lines.append("")
        let header = ["side", "launched", "finished", "failed", "achieved/s", "run p50", "run p99", "1st out p99", "exit p50", "exit p99", "exit p99.9", "exit max"]
        let rows = sides.map { side in
            [side.name, "\(side.launched)", "\(side.finished)", "\(side.failed)", Self.number(side.achievedPerSecond),
             Self.micros(side.running.p50), Self.micros(side.running.p99), Self.micros(side.firstOutput.p99),
             Self.micros(side.exit.p50), Self.micros(side.exit.p99), Self.micros(side.exit.p999), Self.micros(side.exit.max)]
        }
        lines.append(Self.table(header, rows))
        for side in sides where !side.errors.isEmpty {
            lines.append("")
            lines.append("\(side.name) errors: " + side.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            var seen = Set<LoadErrorKind>()
            for sample in side.errorSamples where seen.insert(sample.kind).inserted {
                lines.append("  \(sample.kind.rawValue) at \(Self.number(sample.atSeconds)) s: \(sample.message)")
            }
        }
        for side in sides where side.schedulerStalls > 0 {
            lines.append("\(side.name): the in-flight cap held back \(side.schedulerStalls) arrivals (their latency includes the wait)")
        }
        let runner = sides.compactMap { side in side.runnerCPUSeconds.map { (side.name, $0 * 1e6 / Double(max(1, side.launched))) } }
        if !runner.isEmpty {
            lines.append("")
            lines.append("runner CPU per launch (this process, on the same cores): " + runner.map { "\($0.0) \(Int($0.1)) µs" }.joined(separator: ", "))
        }
        for side in sides {
            guard let engine = side.engine else { continue }
            lines.append("")
            var parts: [String] = []
            if let bytes = engine.privatePerChildBytes { parts.append("private \(Self.bytes(bytes)) per container") }
            if let bytes = engine.sharedPerChildBytes { parts.append("shared \(Self.bytes(bytes)) per container") }
            let most = side.memory.map(\.children).max() ?? 0
            parts.append("at most \(most) containers at a sample")
            parts.append("\(engine.poolMisses) pool misses")
            if let cpu = engine.cpuSeconds {
                parts.append(String(format: "engine CPU %.2f s", cpu) + (engine.cpuMicrosPerLaunch.map { String(format: " (%.0f µs per launch)", $0) } ?? ""))
            } else {
                parts.append("engine CPU not known (the agent's process is not on this end of a Unix socket)")
            }
            lines.append("\(side.name) engine: " + parts.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e9 ? String(Int(value)) : String(format: value < 10 ? "%.2f" : "%.1f", value)
    }

    static func micros(_ value: Double) -> String { value == 0 ? "-" : String(Int(value.rounded())) }

    static func bytes(_ value: Double) -> String {
        value >= 1_048_576 ? String(format: "%.1f MiB", value / 1048576) : String(format: "%.0f KiB", value / 1024)
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in index == 0 ? cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                : String(repeating: " ", count: widths[index] - cell.count) + cell }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
