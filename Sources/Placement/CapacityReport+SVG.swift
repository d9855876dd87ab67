import Foundation

extension CapacityReport {
    private enum Palette {
        static let forks = "#2563eb"
        static let parents = "#0d9488"
        static let children = "#a78bfa"
        static let reservedIdle = "#bfdbfe"
        static let borrowable = "#dcfce7"
        static let free = "#e5e7eb"
        static let text = "#111827"
        static let muted = "#6b7280"
        static let limit = "#dc2626"
        static let down = "#f87171"
    }

    /// The report as an SVG chart: the fleet's memory in one bar, each pool's memory as a bar
    /// from what its forks use to what it could still take (with its reservation and limit
    /// marked) beside its headroom and runway, and the hosts as columns or, for a large
    /// fleet, a histogram of how full they are.
    public func renderSVG() -> String {
        let width = 1100.0
        var body: [String] = []
        var y = 40.0
        let title = "Capacity" + (profile.map { " — profile \($0)" } ?? "")
        body.append(text(24, y, title, size: 22, weight: "700"))
        y += 24
        let kind = totals.simulatedHosts == totals.hosts ? "simulated hosts" : totals.simulatedHosts == 0 ? "hosts" : "hosts (\(totals.simulatedHosts) simulated)"
        body.append(text(24, y, "\(Self.count(totals.hosts)) \(kind), \(Self.count(totals.healthyHosts)) healthy · \(Self.memory(totals.capacity.memoryKiB)) memory · "
            + "\(Self.cpu(totals.capacity.cpuMHz)) CPU · \(Self.count(totals.forks)) forks · sharing saved \(Self.memory(totals.savedBySharingKiB))",
            size: 13, color: Palette.muted))
        y += 22

        // The fleet: used by forks, by warm parents, reserved by pools but idle, free.
        let fleetUsedForks = pools.reduce(0) { $0 + $1.usedByForks.memoryKiB }
        let fleetParents = pools.reduce(0) { $0 + $1.usedByWarmParents.memoryKiB }
        let reservedIdle = Swift.max(0, totals.reserved.memoryKiB - fleetUsedForks - (fleetParents - (pools.first?.usedByWarmParents.memoryKiB ?? 0)))
        let capacity = Double(Swift.max(1, totals.capacity.memoryKiB))
        body.append(bar(x: 24, y: y, width: width - 48, height: 26, scale: capacity, segments: [
            (Double(fleetUsedForks), Palette.forks), (Double(fleetParents), Palette.parents), (Double(reservedIdle), Palette.reservedIdle),
        ], background: Palette.free))
        y += 44
        body.append(text(24, y, "Fleet memory: \(Self.memory(fleetUsedForks)) forks, \(Self.memory(fleetParents)) warm parents, "
            + "\(Self.memory(totals.reserved.memoryKiB)) reserved by pools, \(Self.memory(totals.free.memoryKiB)) free", size: 13, color: Palette.muted))
        y += 36

        body.append(text(24, y, "Resource pools (memory)", size: 16, weight: "700"))
        y += 18
        body.append(text(24, y, "Each bar runs to the most the pool could hold now. Black mark: reservation; red mark: limit.", size: 12, color: Palette.muted))
        y += 14
        let barX = 250.0
        let barWidth = 360.0
        for pool in pools where pool.parent != nil {
            let ownUse = pool.usedByForks.memoryKiB + pool.usedByWarmParents.memoryKiB
            let childrenHold = Swift.max(0, pool.held.memoryKiB - ownUse)
            let idleReservation = Swift.max(0, pool.reservation.memoryKiB - pool.held.memoryKiB)
            let borrowable = Swift.max(0, pool.free.memoryKiB - idleReservation)
            let ceiling = Double(Swift.max(1, pool.held.memoryKiB + pool.free.memoryKiB, pool.reservation.memoryKiB, pool.memoryLimitKiB ?? 0))
            let indent = Double(pool.depth - 1) * 16
            body.append(text(24 + indent, y + 15, pool.name, size: 14, weight: "700"))
            body.append(text(24 + indent, y + 31, "\(pool.expandable ? "expandable" : "fixed") · \(pool.policy.rawValue) · \(Self.count(pool.shares)) shares",
                             size: 10, color: Palette.muted))
            body.append(bar(x: barX, y: y + 2, width: barWidth, height: 20, scale: ceiling, segments: [
                (Double(pool.usedByForks.memoryKiB), Palette.forks), (Double(pool.usedByWarmParents.memoryKiB), Palette.parents),
                (Double(childrenHold), Palette.children), (Double(idleReservation), Palette.reservedIdle), (Double(borrowable), Palette.borrowable),
            ], background: "#f9fafb"))
            body.append(marker(x: barX + barWidth * Double(pool.reservation.memoryKiB) / ceiling, y: y, height: 24, color: Palette.text))
            if let limit = pool.memoryLimitKiB { body.append(marker(x: barX + barWidth * Double(limit) / ceiling, y: y, height: 24, color: Palette.limit)) }
            body.append(text(barX, y + 38, "held \(Self.memory(pool.held.memoryKiB)) / reserved \(Self.memory(pool.reservation.memoryKiB))"
                + (pool.memoryLimitKiB.map { ", limit \(Self.memory($0))" } ?? "") + ", \(Self.memory(pool.free.memoryKiB)) free", size: 11, color: Palette.muted))
            body.append(text(barX, y + 53, "CPU: held \(Self.cpu(pool.held.cpuMHz)) / reserved \(Self.cpu(pool.reservation.cpuMHz))"
                + (pool.cpuLimitMHz.map { ", limit \(Self.cpu($0))" } ?? "") + ", \(Self.cpu(pool.free.cpuMHz)) free", size: 11, color: Palette.muted))
            let textX = barX + barWidth + 56
            var line = y + 15
            for room in pool.headroom.prefix(2) {
                let headline = "\(Self.count(room.forks)) more \(room.image) forks"
                body.append(text(textX, line, headline, size: 13, weight: "600"))
                body.append(text(textX + Double(headline.count) * 7.8 + 8, line, "limited by \(room.limitedBy)", size: 11, color: Palette.muted))
                line += 17
            }
            if let runway = pool.runway {
                let color = runway.secondsUntilFull.map { $0 < 3600 ? Palette.limit : Palette.text } ?? Palette.parents
                let rate = "at \(String(format: "%.1f", runway.launchesPerSecond)) launches/s: "
                let resource = runway.limitedBy.split(separator: " ").last.map(String.init) ?? runway.limitedBy
                let outcome = runway.secondsUntilFull.map { "\(resource) runs out in \(Self.duration($0))" }
                    ?? "never runs out" + (runway.steadyStateKiB.map { " (steady state \(Self.memory($0)))" } ?? "")
                body.append(text(textX, line + 2, rate + outcome, size: 12, weight: "600", color: color))
            }
            y += 76
        }

        y += 10
        body.append(text(24, y, "Hosts (memory in use: forks, warm parents)", size: 16, weight: "700"))
        y += 28
        if hosts.count <= 48 {
            let slot = (width - 48) / Double(Swift.max(1, hosts.count))
            let columnWidth = Swift.min(36, slot * 0.7)
            let columnHeight = 120.0
            for (k, host) in hosts.enumerated() {
                let x = 24 + Double(k) * slot + (slot - columnWidth) / 2
                let scale = Double(Swift.max(1, host.capacity.memoryKiB))
                var top = y + columnHeight
                body.append("<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(columnWidth))\" height=\"\(f(columnHeight))\" fill=\"\(Palette.free)\" rx=\"3\"\(host.healthy ? "" : " stroke=\"\(Palette.down)\" stroke-width=\"2\"")/>")
                for (amount, color) in [(host.usedByWarmParents.memoryKiB, Palette.parents), (host.usedByForks.memoryKiB, Palette.forks)] {
                    let h = columnHeight * Double(amount) / scale
                    guard h > 0 else { continue }
                    top -= Swift.max(h, 1)
                    body.append("<rect x=\"\(f(x))\" y=\"\(f(top))\" width=\"\(f(columnWidth))\" height=\"\(f(Swift.max(h, 1)))\" fill=\"\(color)\"/>")
                }
                let used = 100 * Double(host.capacity.memoryKiB - host.free.memoryKiB) / scale
                body.append(text(x + columnWidth / 2, y - 4, String(format: "%.0f%%", used), size: 10, color: Palette.muted, anchor: "middle"))
                body.append("<text transform=\"translate(\(f(x + columnWidth / 2)),\(f(y + columnHeight + 10))) rotate(40)\" font-size=\"10\" fill=\"\(host.healthy ? Palette.text : Palette.down)\" font-family=\"\(font)\">\(escape(host.name + (host.healthy ? "" : " (down)")))</text>")
            }
            y += columnHeight + 60
        } else {
            var buckets = [Int](repeating: 0, count: 10)
            var down = 0
            for host in hosts {
                guard host.healthy else { down += 1; continue }
                let used = Double(host.capacity.memoryKiB - host.free.memoryKiB) / Double(Swift.max(1, host.capacity.memoryKiB))
                buckets[Swift.min(9, Int(used * 10))] += 1
            }
            let most = Double(Swift.max(1, buckets.max() ?? 1))
            let columnHeight = 120.0
            let slot = (width - 48) / 10
            for (k, n) in buckets.enumerated() {
                let h = columnHeight * Double(n) / most
                let x = 24 + Double(k) * slot + 8
                body.append("<rect x=\"\(f(x))\" y=\"\(f(y + 16 + columnHeight - h))\" width=\"\(f(slot - 16))\" height=\"\(f(h))\" fill=\"\(Palette.forks)\" rx=\"2\"/>")
                body.append(text(x + (slot - 16) / 2, y + 12 + columnHeight - h, Self.count(n), size: 11, anchor: "middle"))
                body.append(text(x + (slot - 16) / 2, y + columnHeight + 32, "\(k * 10)–\(k * 10 + 10)% used", size: 11, color: Palette.muted, anchor: "middle"))
            }
            y += columnHeight + 50
            body.append(text(24, y, "\(Self.count(hosts.count - down)) healthy hosts by share of memory in use" + (down > 0 ? "; \(Self.count(down)) down" : ""), size: 12, color: Palette.muted))
            y += 20
        }

        var legendX = 24.0
        for (label, color) in [("forks", Palette.forks), ("warm parents", Palette.parents), ("child pools' reservations", Palette.children),
                               ("reserved, idle", Palette.reservedIdle), ("could borrow", Palette.borrowable), ("free", Palette.free)] {
            body.append("<rect x=\"\(f(legendX))\" y=\"\(f(y - 10))\" width=\"12\" height=\"12\" fill=\"\(color)\" rx=\"2\"/>")
            body.append(text(legendX + 17, y, label, size: 12))
            legendX += 34 + Double(label.count) * 6.5
        }
        y += 24
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(f(width))" height="\(f(y))" viewBox="0 0 \(f(width)) \(f(y))">
            <rect width="100%" height="100%" fill="#ffffff"/>
            \(body.joined(separator: "\n"))
            </svg>

            """
    }

    /// CPU in MHz, GHz or THz, short enough for a chart label.
    static func cpu(_ mhz: Int) -> String {
        if mhz >= 1_000_000 { return String(format: "%.1f THz", Double(mhz) / 1_000_000) }
        if mhz >= 10_000 { return String(format: "%.1f GHz", Double(mhz) / 1_000) }
        return "\(mhz) MHz"
    }

    private var font: String { SVGMarkup.font }
    private func f(_ value: Double) -> String { SVGMarkup.number(value) }
    private func escape(_ raw: String) -> String { SVGMarkup.escape(raw) }
    private func text(_ x: Double, _ y: Double, _ content: String, size: Int, weight: String = "400", color: String = "#111827", anchor: String = "start") -> String {
        SVGMarkup.text(x, y, content, size: size, weight: weight, color: color, anchor: anchor)
    }

    /// A bar whose coloured segments follow each other from the left, on a background.
    private func bar(x: Double, y: Double, width: Double, height: Double, scale: Double, segments: [(Double, String)], background: String) -> String {
        var parts = ["<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(width))\" height=\"\(f(height))\" fill=\"\(background)\" rx=\"3\"/>"]
        var left = x
        for (amount, color) in segments where amount > 0 {
            let w = Swift.min(x + width - left, Swift.max(1, width * amount / scale))
            guard w > 0 else { continue }
            parts.append("<rect x=\"\(f(left))\" y=\"\(f(y))\" width=\"\(f(w))\" height=\"\(f(height))\" fill=\"\(color)\"/>")
            left += w
        }
        return parts.joined(separator: "\n")
    }

    private func marker(x: Double, y: Double, height: Double, color: String) -> String {
        "<line x1=\"\(f(x))\" y1=\"\(f(y))\" x2=\"\(f(x))\" y2=\"\(f(y + height))\" stroke=\"\(color)\" stroke-width=\"2\"/>"
    }
}
