import Foundation
import Placement

extension LoadReport {
    private enum Palette {
        static let vmfork = "#2563eb"
        static let native = "#0d9488"
        static let runc = "#dc2626"
        static let offered = "#111827"
        static let shared = "#a78bfa"
        static let text = "#111827"
        static let muted = "#6b7280"
        static let grid = "#e5e7eb"

        static func side(_ name: String) -> String {
            switch name {
            case "vmfork": vmfork
            case "native": native
            case "runc": runc
            default: muted
            }
        }
    }

    struct Series {
        var label: String
        var color: String
        var dashed = false
        var points: [(Double, Double)]
    }

    /// The report as SVG charts: latency percentiles over the run (fork → exit p50 and p99 of
    /// the launches due in each window, every side), throughput achieved against offered, and
    /// the engine's memory per container over the run.
    public func renderSVG() -> String {
        let width = 1100.0
        var body: [String] = []
        var y = 40.0
        body.append(text(24, y, "Load run — profile \(profile)", size: 22, weight: "700"))
        y += 24
        let how = mode == "open" ? "open loop, \(Self.number(offeredPerSecond ?? 0)) launches/s offered (\(arrival))" : "closed loop, \(concurrency ?? 0) at a time"
        let load = loadAverageBefore.map { String(format: " · load average %.2f at start", $0) } ?? ""
        body.append(text(24, y, "\(how) · ramp-up \(Self.number(rampUpSeconds)) s · \(Self.number(durationSeconds)) s · \(cores) cores\(load)", size: 13, color: Palette.muted))
        y += 22
        for side in sides {
            body.append(text(24, y, "\(side.name): \(side.launched) launched, \(side.finished) finished, \(side.failed) failed · "
                + "exit p50 \(Self.ms(side.exit.p50)), p99 \(Self.ms(side.exit.p99)) · achieved \(Self.number(side.achievedPerSecond))/s",
                size: 13, weight: "600", color: Palette.side(side.name)))
            y += 18
        }
        y += 20

        // Latency over time, log scale: p99 solid, p50 dashed.
        var latency: [Series] = []
        for side in sides {
            let windows = side.windows.filter { $0.exit.count > 0 }
            latency.append(Series(label: "\(side.name) p99", color: Palette.side(side.name), points: windows.map { ($0.startSeconds, $0.exit.p99 / 1000) }))
            latency.append(Series(label: "\(side.name) p50", color: Palette.side(side.name), dashed: true, points: windows.map { ($0.startSeconds, $0.exit.p50 / 1000) }))
        }
        body.append(chart(x: 24, y: y, width: width - 48, height: 220, title: "Latency from due to exit, by when the launch was due (ms, log scale)",
                          series: latency, logY: true))
        y += 290

        var throughput: [Series] = []
        if let first = sides.first, mode == "open" {
            throughput.append(Series(label: "offered", color: Palette.offered, dashed: true, points: first.windows.map { ($0.startSeconds, $0.offeredPerSecond) }))
        }
        for side in sides {
            throughput.append(Series(label: "\(side.name) achieved", color: Palette.side(side.name), points: side.windows.map { ($0.startSeconds, $0.achievedPerSecond) }))
        }
        body.append(chart(x: 24, y: y, width: width - 48, height: 200, title: "Launches per second: achieved (finished) against offered", series: throughput, logY: false))
        y += 270

        if let side = sides.first(where: { !$0.memory.isEmpty }) {
            let samples = side.memory.filter { $0.children > 0 }
            let memory = [
                Series(label: "private per container", color: Palette.vmfork, points: samples.map { ($0.atSeconds, ($0.privatePerChildBytes ?? 0) / 1024) }),
                Series(label: "shared per container", color: Palette.shared, points: samples.map { ($0.atSeconds, ($0.sharedPerChildBytes ?? 0) / 1024) }),
            ]
            let most = side.memory.map(\.children).max() ?? 0
            body.append(chart(x: 24, y: y, width: width - 48, height: 200,
                              title: "\(side.name) memory per container (KiB, the engine's accounting; up to \(most) containers at a sample)", series: memory, logY: false))
            y += 270
        }
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(f(width))" height="\(f(y))" viewBox="0 0 \(f(width)) \(f(y))">
            <rect width="100%" height="100%" fill="#ffffff"/>
            \(body.joined(separator: "\n"))
            </svg>

            """
    }

    /// A line chart with its title, axes, grid and legend; time in seconds along x.
    private func chart(x: Double, y: Double, width: Double, height: Double, title: String, series: [Series], logY: Bool) -> String {
        var parts = [text(x, y, title, size: 16, weight: "700")]
        let top = y + 16
        let left = x + 56
        let plotWidth = width - 56
        let points = series.flatMap(\.points)
        guard !points.isEmpty else {
            parts.append(text(left, top + 30, "no data", size: 12, color: Palette.muted))
            return parts.joined(separator: "\n")
        }
        let xMax = Swift.max(1, (points.map(\.0).max() ?? 1) + 1)
        let values = points.map(\.1).filter { !logY || $0 > 0 }
        let yMaxRaw = Swift.max(values.max() ?? 1, logY ? 0.01 : 1)
        let (yMin, yMax) = logY ? (pow(10, floor(log10(Swift.max(values.min() ?? 0.01, 0.001)))), pow(10, ceil(log10(yMaxRaw)))) : (0, Self.niceCeiling(yMaxRaw * 1.05))
        func px(_ t: Double) -> Double { left + plotWidth * t / xMax }
        func py(_ v: Double) -> Double {
            let share = logY ? (log10(Swift.max(v, yMin)) - log10(yMin)) / Swift.max(1e-9, log10(yMax) - log10(yMin)) : v / yMax
            return top + height - height * share
        }
        parts.append("<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(height))\" fill=\"#f9fafb\" stroke=\"\(Palette.grid)\"/>")
        let ticks: [Double] = logY
            ? stride(from: log10(yMin), through: log10(yMax), by: 1).map { pow(10, $0) }
            : (0...4).map { yMax * Double($0) / 4 }
        for tick in ticks {
            parts.append("<line x1=\"\(f(left))\" y1=\"\(f(py(tick)))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(py(tick)))\" stroke=\"\(Palette.grid)\"/>")
            parts.append(text(left - 6, py(tick) + 4, Self.tick(tick), size: 10, color: Palette.muted, anchor: "end"))
        }
        let step = Swift.max(1, (xMax / 10).rounded(.up))
        for t in stride(from: 0, through: xMax, by: step) {
            parts.append(text(px(t), top + height + 14, "\(Self.number(t)) s", size: 10, color: Palette.muted, anchor: "middle"))
        }
        for s in series where !s.points.isEmpty {
            let path = s.points.filter { !logY || $0.1 > 0 }.map { "\(f(px($0.0 + 0.5))),\(f(py($0.1)))" }.joined(separator: " ")
            parts.append("<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"\(s.dashed ? " stroke-dasharray=\"6 4\"" : "")/>")
        }
        var legendX = left
        for s in series {
            let ly = top + height + 34
            parts.append("<line x1=\"\(f(legendX))\" y1=\"\(f(ly - 4))\" x2=\"\(f(legendX + 18))\" y2=\"\(f(ly - 4))\" stroke=\"\(s.color)\" stroke-width=\"2\"\(s.dashed ? " stroke-dasharray=\"6 4\"" : "")/>")
            parts.append(text(legendX + 23, ly, s.label, size: 12))
            legendX += 40 + Double(s.label.count) * 6.5
        }
        return parts.joined(separator: "\n")
    }

    /// The next 1, 2, 2.5 or 5 × 10^k at or above `value`, so the axis ticks are round numbers.
    static func niceCeiling(_ value: Double) -> Double {
        let power = pow(10, floor(log10(Swift.max(value, 1e-9))))
        return [1, 2, 2.5, 5, 10].map { $0 * power }.first { $0 >= value } ?? value
    }

    static func ms(_ micros: Double) -> String { micros == 0 ? "-" : String(format: micros < 10_000 ? "%.2f ms" : "%.0f ms", micros / 1000) }

    static func tick(_ value: Double) -> String {
        value >= 10 || value == 0 ? String(Int(value.rounded())) : value >= 1 ? String(format: "%.1f", value) : String(format: "%g", value)
    }

    private var font: String { SVGMarkup.font }
    private func f(_ value: Double) -> String { SVGMarkup.number(value) }
    private func escape(_ raw: String) -> String { SVGMarkup.escape(raw) }
    private func text(_ x: Double, _ y: Double, _ content: String, size: Int, weight: String = "400", color: String = "#111827", anchor: String = "start") -> String {
        SVGMarkup.text(x, y, content, size: size, weight: weight, color: color, anchor: anchor)
    }
}
