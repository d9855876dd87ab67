import Foundation

extension CapacityReport {
    /// The report as aligned text tables: fleet totals, pools, headroom and runway, hosts.
    /// Fleets larger than `hostRows` hosts list the fullest ones and summarize the rest.
    public func renderText(hostRows: Int = 24) -> String {
        [renderSummary(), renderPools(), renderHeadroom(), renderHosts(rows: hostRows)].filter { !$0.isEmpty }.joined(separator: "\n\n")
    }

    public func renderSummary() -> String {
        var out: [String] = []
        let simulated = totals.simulatedHosts == 0 ? "real" : totals.simulatedHosts == totals.hosts ? "all simulated" : "\(totals.simulatedHosts) simulated"
        out.append("Capacity\(profile.map { " of profile \($0)" } ?? ""): \(totals.hosts) hosts (\(simulated), \(totals.healthyHosts) healthy)")
        out.append("fleet: capacity \(Self.memory(totals.capacity.memoryKiB)), \(Self.count(totals.capacity.cpuMHz)) MHz; "
            + "reserved by pools \(Self.memory(totals.reserved.memoryKiB)); used \(Self.memory(totals.used.memoryKiB)); free \(Self.memory(totals.free.memoryKiB)); "
            + "\(Self.count(totals.forks)) forks on \(Self.count(totals.warmParents)) warm parents; sharing saved \(Self.memory(totals.savedBySharingKiB))")
        return out.joined(separator: "\n")
    }

    /// One row per pool, children indented under their parent.
    public func renderPools() -> String {
        Self.table(
            ["POOL", "RESERVED", "LIMIT", "HELD", "FORKS", "PARENTS", "BORROWED", "FREE NOW", "ENTITLED", "CPU RES", "CPU HELD", "CPU FREE", "FORKS#", "SAVED"],
            pools.map { pool in
                [String(repeating: "  ", count: pool.depth) + pool.name + (pool.expandable ? "" : " (fixed)"),
                 Self.memory(pool.reservation.memoryKiB), pool.memoryLimitKiB.map(Self.memory) ?? "-", Self.memory(pool.held.memoryKiB),
                 Self.memory(pool.usedByForks.memoryKiB), Self.memory(pool.usedByWarmParents.memoryKiB), Self.memory(pool.borrowed.memoryKiB),
                 Self.memory(pool.free.memoryKiB), Self.memory(pool.entitlement.memoryKiB),
                 Self.count(pool.reservation.cpuMHz), Self.count(pool.held.cpuMHz), Self.count(pool.free.cpuMHz),
                 Self.count(pool.forks), Self.memory(pool.savedBySharingKiB)]
            })
    }

    public func renderHeadroom() -> String {
        let headroomRows = pools.flatMap { pool in
            pool.headroom.enumerated().map { k, room in
                [k == 0 ? pool.name : "", room.image, Self.count(room.forks), room.limitedBy,
                 k == 0 ? pool.runway.map { String(format: "%.1f", $0.launchesPerSecond) } ?? "-" : "",
                 k == 0 ? pool.runway.map(Self.describe) ?? "-" : ""]
            }
        }
        guard !headroomRows.isEmpty else { return "" }
        return "Headroom: forks that fit now, and when each pool runs out at the profile's launch rate\n"
            + Self.table(["POOL", "IMAGE", "FIT NOW", "LIMITED BY", "LAUNCH/s", "RUNS OUT"], headroomRows)
    }

    /// The hosts; a fleet larger than `rows` shows its fullest hosts only.
    public func renderHosts(rows hostRows: Int) -> String {
        var out: [String] = []
        let shown = hosts.count <= hostRows ? hosts : Array(hosts.sorted { $0.free.memoryKiB * $1.capacity.memoryKiB < $1.free.memoryKiB * $0.capacity.memoryKiB }.prefix(hostRows))
        if shown.count < hosts.count { out.append("Hosts: the \(shown.count) fullest of \(hosts.count)") }
        out.append(Self.table(
            ["HOST", "STATE", "MEMORY", "FORKS", "PARENTS", "FREE", "CPU MHz", "CPU FREE", "FORKS#", "SAVED", "WARM PARENTS"],
            shown.map { host in
                [host.name, (host.healthy ? "healthy" : "down") + (host.simulated ? ", sim" : ", real"), Self.memory(host.capacity.memoryKiB),
                 Self.memory(host.usedByForks.memoryKiB), Self.memory(host.usedByWarmParents.memoryKiB), Self.memory(host.free.memoryKiB),
                 Self.count(host.capacity.cpuMHz), Self.count(host.free.cpuMHz), Self.count(host.forks), Self.memory(host.savedBySharingKiB),
                 host.warmImages.joined(separator: ",")]
            }))
        return out.joined(separator: "\n")
    }

    /// The report as indented JSON with stable key order.
    public func renderJSON() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    static func describe(_ runway: Runway) -> String {
        guard let seconds = runway.secondsUntilFull else {
            return runway.steadyStateKiB.map { "never (steady state \(memory($0)))" } ?? "never"
        }
        return "in \(duration(seconds)) (\(runway.limitedBy))"
    }

    static func memory(_ kib: Int) -> String { Resources.formatKiB(kib) }

    /// A count with thousands separators, or "unlimited" for a count with no bound.
    static func count(_ value: Int) -> String {
        if value == Int.max { return "unlimited" }
        let digits = String(value.magnitude)
        var grouped = ""
        for (k, digit) in digits.enumerated() {
            if k > 0, (digits.count - k) % 3 == 0 { grouped.append(",") }
            grouped.append(digit)
        }
        return (value < 0 ? "-" : "") + grouped
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m \(s % 60)s" }
        if s < 86400 { return "\(s / 3600)h \(s % 3600 / 60)m" }
        if s < 86400 * 365 { return "\(s / 86400)d \(s % 86400 / 3600)h" }
        return String(format: "%.1f years", seconds / (86400 * 365))
    }

    /// Columns padded to their widest cell; the first column left-aligned, the rest right,
    /// except a last column of names.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
        let leftAligned: Set<Int> = [0, header.count - 1]
        return all.map { row in
            row.enumerated().map { c, cell in
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return leftAligned.contains(c) || header[c] == "IMAGE" || header[c] == "LIMITED BY" || header[c] == "STATE" ? cell + pad : pad + cell
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }.joined(separator: "\n")
    }
}
