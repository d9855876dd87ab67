import API
import Engine
import Foundation
import Hummingbird
import Placement

extension Pages {
    struct PoolView {
        let name: String
        let indent: String
        let parent: String
        let reservation: String
        let limit: String
        let shares: Int
        let expandable: String
        let held: String
        let usedByForks: String
        let usedByParents: String
        let free: String
        let forks: Int
        let headroom: String
        let runway: String
        /// The bar: reserved / used / free, each as a share of the pool's size in percent.
        let usedPercent: Int
        let reservedPercent: Int
        let freePercent: Int
        let barText: String
    }

    struct HostView {
        let name: String
        let kind: String
        let health: String
        let capacity: String
        let used: String
        let free: String
        let forks: Int
        let warmImages: String
    }

    static func poolViews(_ report: CapacityReport) -> [PoolView] {
        report.pools.map { pool in
            let used = pool.usedByForks.memoryKiB + pool.usedByWarmParents.memoryKiB
            let size = max(pool.memoryLimitKiB ?? (used + pool.free.memoryKiB), pool.reservation.memoryKiB, used + pool.free.memoryKiB, 1)
            let reservedBeyondUse = max(0, pool.reservation.memoryKiB - used)
            let runway = pool.runway.map { runway in
                let full = runway.secondsUntilFull.map { "full in \(Format.duration($0))" } ?? "never full"
                return String(format: "%.1f launches/s: ", runway.launchesPerSecond) + full + " (\(runway.limitedBy))"
                    + (runway.steadyStateKiB.map { ", steady state \(Format.mib(kib: $0))" } ?? "")
            } ?? ""
            return PoolView(
                name: pool.name, indent: String(repeating: "· ", count: max(0, pool.depth)), parent: pool.parent ?? "",
                reservation: "\(Format.mib(kib: pool.reservation.memoryKiB)), \(pool.reservation.cpuMHz) MHz",
                limit: pool.memoryLimitKiB.map { Format.mib(kib: $0) } ?? "none",
                shares: pool.shares, expandable: pool.expandable ? "yes" : "no",
                held: "\(Format.mib(kib: pool.held.memoryKiB)), \(pool.held.cpuMHz) MHz",
                usedByForks: Format.mib(kib: pool.usedByForks.memoryKiB), usedByParents: Format.mib(kib: pool.usedByWarmParents.memoryKiB),
                free: "\(Format.mib(kib: pool.free.memoryKiB)), \(pool.free.cpuMHz) MHz", forks: pool.forks,
                headroom: pool.headroom.map { "\($0.image): \($0.forks) more (\($0.limitedBy))" }.joined(separator: "; "),
                runway: runway,
                usedPercent: Format.percent(used, of: size), reservedPercent: Format.percent(reservedBeyondUse, of: size),
                freePercent: Format.percent(max(0, pool.free.memoryKiB - reservedBeyondUse), of: size),
                barText: "memory: used \(Format.mib(kib: used)), reserved \(Format.mib(kib: pool.reservation.memoryKiB)), free \(Format.mib(kib: pool.free.memoryKiB))")
        }
    }

    static func hostViews(_ report: CapacityReport) -> [HostView] {
        report.hosts.map { host in
            HostView(name: host.name, kind: host.simulated ? "simulated" : "this machine", health: host.healthy ? "healthy" : "unhealthy",
                     capacity: "\(Format.mib(kib: host.capacity.memoryKiB)), \(host.capacity.cpuMHz) MHz",
                     used: Format.mib(kib: host.usedByForks.memoryKiB + host.usedByWarmParents.memoryKiB),
                     free: "\(Format.mib(kib: host.free.memoryKiB)), \(host.free.cpuMHz) MHz", forks: host.forks,
                     warmImages: host.warmImages.joined(separator: ", "))
        }
    }

    struct CapacityView {
        let pools: [PoolView]
        let hosts: [HostView]
        let totals: [Option]
        let svg: String
        let error: String?
        let whatIfError: String?
        let whatIfPools: [Option]
        let whatIfImages: [Option]
        let rate: String
        let lifetime: String
        let whatIf: [PoolView]
        let hasWhatIf: Bool
    }

    func capacity(_ request: Request, actor: String) async -> Response {
        let base = await get("/v1/placement/capacity", as: CapacityReport.self, actor: actor)
        let report = try? base.get()
        let rate = Self.query(request, "rate")
        let pool = Self.query(request, "pool")
        let image = Self.query(request, "image")
        let lifetime = Self.query(request, "lifetime")
        var whatIf: [PoolView] = []
        var whatIfError: String?
        if !rate.isEmpty {
            var path = "/v1/placement/capacity?whatIfRate=\(Form.escapeComponent(rate))&whatIfPool=\(Form.escapeComponent(pool))&whatIfImage=\(Form.escapeComponent(image))"
            if !lifetime.isEmpty { path += "&whatIfLifetime=\(Form.escapeComponent(lifetime))" }
            let answer = await api.call(.get, path, actor: actor)
            if answer.ok, let planned = try? answer.decode(CapacityReport.self) {
                whatIf = Self.poolViews(planned).filter { $0.name == pool }
            } else {
                whatIfError = answer.error?.message ?? "the report does not decode"
            }
        }
        // The placement images the report names: in headroom, or warm on a host.
        let images = Set((report?.pools.flatMap { $0.headroom.map(\.image) } ?? []) + (report?.hosts.flatMap(\.warmImages) ?? [])).sorted()
        let totals: [Option] = report.map { report in
            let totals = report.totals
            return [
                Option(value: "\(totals.hosts) (\(totals.healthyHosts) healthy, \(totals.simulatedHosts) simulated)", label: "Hosts", selected: false),
                Option(value: "\(Format.mib(kib: totals.capacity.memoryKiB)), \(totals.capacity.cpuMHz) MHz", label: "Capacity", selected: false),
                Option(value: "\(Format.mib(kib: totals.reserved.memoryKiB)), \(totals.reserved.cpuMHz) MHz", label: "Reserved", selected: false),
                Option(value: "\(Format.mib(kib: totals.used.memoryKiB)), \(totals.used.cpuMHz) MHz", label: "Used", selected: false),
                Option(value: "\(Format.mib(kib: totals.free.memoryKiB)), \(totals.free.cpuMHz) MHz", label: "Free", selected: false),
                Option(value: "\(totals.forks)", label: "Forks placed", selected: false),
                Option(value: "\(totals.warmParents)", label: "Warm parents placed", selected: false),
                Option(value: Format.mib(kib: totals.savedBySharingKiB), label: "Saved by sharing", selected: false),
            ]
        } ?? []
        let view = CapacityView(
            pools: report.map(Self.poolViews) ?? [], hosts: report.map(Self.hostViews) ?? [], totals: totals,
            svg: await text("/v1/placement/capacity.svg", actor: actor).map(Self.inlineSVG) ?? "", error: base.failureMessage,
            whatIfError: whatIfError,
            whatIfPools: (report?.pools ?? []).map { Option(value: $0.name, label: $0.name, selected: $0.name == pool) },
            whatIfImages: images.map { Option(value: $0, label: $0, selected: $0 == image) },
            rate: rate, lifetime: lifetime, whatIf: whatIf, hasWhatIf: !whatIf.isEmpty)
        return ui.render("capacity", view, title: "Capacity", section: "capacity")
    }

    /// The report's SVG (made by the agent's own renderer, its labels escaped) for inline use:
    /// without its XML declaration, with an accessible name.
    static func inlineSVG(_ text: String) -> String {
        var svg = text
        if svg.hasPrefix("<?xml"), let end = svg.range(of: "?>") { svg = String(svg[end.upperBound...]) }
        if let open = svg.range(of: "<svg") {
            svg.replaceSubrange(open, with: "<svg role=\"img\" aria-label=\"Capacity chart: memory and CPU per pool and host\"")
        }
        return svg
    }

    // MARK: Overview

    struct MinuteView {
        let minute: String
        let forks: Int
        let medianLatency: String
        let percent: Int
    }

    struct OverviewView {
        let hosts: [HostView]
        let pools: [PoolView]
        let running: Int
        let exited: Int
        let created: Int
        let vchs: Int
        let parents: Int
        let saved: String
        let minutes: [MinuteView]
        let forksPerSecond: String
        let medianLatency: String
        let error: String?
        let liveSource: String
        /// From the agent's own metrics (GET /metrics).
        let metrics: [Option]
    }

    /// The agent's metrics as the overview prints them.
    static func metricFigures(_ text: String?) -> [Option] {
        guard let text else { return [] }
        let metrics = MetricsText(text)
        func figure(_ label: String, _ value: String?) -> Option? { value.map { Option(value: $0, label: label, selected: false) } }
        func latency(_ q: Double) -> String? {
            metrics.quantile("vmfork_fork_duration_seconds", q).map { $0.isFinite ? "≤ " + Format.microseconds($0 * 1e6) : "above the last bucket" }
        }
        return [
            figure("Forks since the daemon started", metrics.value("vmfork_forks_total").map { String(Int($0)) }),
            figure("Forks per second (the agent's figure)", metrics.value("vmfork_forks_per_second").map { String(format: "%.2f", $0) }),
            figure("Fork latency p50 (histogram bucket)", latency(0.5)),
            figure("Fork latency p99 (histogram bucket)", latency(0.99)),
            figure("Live containers", metrics.value("vmfork_containers_live").map { String(Int($0)) }),
            figure("Ready VMs in parents' pools", metrics.value("vmfork_pool_ready_vms").map { String(Int($0)) }),
            figure("Memory: parents", metrics.value("vmfork_memory_parent_bytes").map { Format.mib(bytes: $0) }),
            figure("Memory: children private", metrics.value("vmfork_memory_private_bytes").map { Format.mib(bytes: $0) }),
            figure("Memory: children shared", metrics.value("vmfork_memory_shared_bytes").map { Format.mib(bytes: $0) }),
        ].compactMap { $0 }
    }

    func overview(_ request: Request, actor: String) async -> Response {
        let report = await get("/v1/placement/capacity", as: CapacityReport.self, actor: actor)
        let containers = await get("/v1/containers", as: [ContainerInfo].self, actor: actor)
        let parents = (try? await get("/v1/parents?sharing=true", as: [ParentInfo].self, actor: actor).get()) ?? []
        let vchs = (try? await get("/v1/vchs", as: [VCHInfo].self, actor: actor).get()) ?? []
        let list = (try? containers.get()) ?? []
        // Forks of the last ten minutes, per minute, from the containers' own creation times
        // and fork latencies (the containers still listed).
        let now = Date().timeIntervalSince1970
        var minutes: [MinuteView] = []
        let buckets = (0..<10).map { index -> [ContainerInfo] in
            let end = now - Double(index) * 60
            return list.filter { $0.createdAt > end - 60 && $0.createdAt <= end }
        }
        let most = max(1, buckets.map(\.count).max() ?? 1)
        for (index, bucket) in buckets.enumerated() {
            minutes.append(MinuteView(minute: index == 0 ? "last minute" : "\(index)-\(index + 1) min ago", forks: bucket.count,
                                      medianLatency: Self.median(bucket.compactMap(\.forkMicroseconds)).map { Format.microseconds($0) } ?? "",
                                      percent: Format.percent(bucket.count, of: most)))
        }
        let recent = list.filter { $0.createdAt > now - 600 }
        let saved = parents.compactMap(\.sharing).reduce(0) { $0 + $1.savedBytes }
        let view = OverviewView(
            hosts: (try? report.get()).map(Self.hostViews) ?? [], pools: (try? report.get()).map(Self.poolViews) ?? [],
            running: list.filter { $0.state == .running }.count, exited: list.filter { $0.state == .exited }.count,
            created: list.filter { $0.state == .created }.count, vchs: vchs.count, parents: parents.count, saved: Format.mib(bytes: saved),
            minutes: minutes, forksPerSecond: String(format: "%.2f", Double(recent.count) / 600),
            medianLatency: Self.median(recent.compactMap(\.forkMicroseconds)).map { Format.microseconds($0) } ?? "no forks yet",
            error: report.failureMessage ?? containers.failureMessage, liveSource: "/ui/?fragment=1",
            metrics: Self.metricFigures(await text("/metrics", actor: actor)))
        if Self.wantsFragment(request) { return ui.fragment("overview-live", view) }
        return ui.render("overview", view, title: "Overview", section: "overview")
    }

    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted[sorted.count / 2]
    }
}
