import Benchmark
import Foundation
import Placement
import WorkloadProfiles

/// Placement decisions on a simulated fleet (Profiles/fleet-10k.yaml, cut down to 100 and
/// 1,000 hosts) under steady load: each measured iteration places one fork of the launch
/// mix through pool admission and host selection, and releases the oldest live fork, so
/// occupancy stays constant. The indexed placer runs next to the naive one that scans every
/// host, on the same fleet and the same requests.
let benchmarks: @Sendable () -> Void = {
    for hosts in [100, 1_000, 10_000] {
        for selection in PlacementCore.Selection.allCases {
            let slot = FleetSlot()
            Benchmark(
                "Placement \(hosts) hosts, \(selection.rawValue)",
                configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], warmupIterations: 1_000,
                                     maxDuration: .seconds(3), maxIterations: 1_000_000)
            ) { benchmark in
                guard let fleet = slot.fleet else { return }
                for _ in benchmark.scaledIterations { fleet.placeOneReleaseOldest() }
            } setup: {
                slot.fleet = try SteadyFleet(hosts: hosts, selection: selection)
            } teardown: {
                slot.fleet = nil
            }
        }
    }
    // The same decision made durable: the service writes the reservation and its release to
    // SQLite (WAL), one transaction each.
    let service = ServiceSlot()
    Benchmark(
        "Placement 1000 hosts, durable (SQLite reserve + release)",
        configuration: .init(metrics: [.wallClock, .throughput], warmupIterations: 100, maxDuration: .seconds(3), maxIterations: 100_000)
    ) { benchmark in
        guard let placer = service.placer else { return }
        for _ in benchmark.scaledIterations {
            do {
                try placer.release(try placer.reserve(pool: "prod-web", image: "nginx").id)
            } catch {
                fatalError("the benchmark fleet refused a fork: \(error)")
            }
        }
    } setup: {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vmfork-bench-\(UUID().uuidString)")
        let placer = try PlacementService(folder: folder)
        let profile = try WorkloadProfile.load(path: SteadyFleet.profile)
        try placer.load(FleetPlan(profile: SteadyFleet.scale(profile, toHosts: 1_000)))
        service.folder = folder
        service.placer = placer
    } teardown: {
        service.placer = nil
        if let folder = service.folder { try? FileManager.default.removeItem(at: folder) }
    }
}

/// Carries the durable benchmark's service and its temporary state folder.
final class ServiceSlot: @unchecked Sendable {
    var placer: PlacementService?
    var folder: URL?
}

/// Carries a benchmark's fleet from its setup to its runs; the harness runs them in turn.
final class FleetSlot: @unchecked Sendable {
    var fleet: SteadyFleet?
}

/// A fleet holding `livePerHost` forks per host, placed by the indexed placer before the
/// measured placer takes over (the state is the same either way).
final class SteadyFleet {
    static let livePerHost = 20
    static let profile = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Profiles/fleet-10k.yaml").path

    var core = PlacementCore(selection: .indexed)
    private var live: [Int]
    private var oldest = 0
    private let requests: [(pool: String, image: String)]
    private var nextRequest = 0

    init(hosts: Int, selection: PlacementCore.Selection) throws {
        let profile = try WorkloadProfile.load(path: Self.profile)
        try FleetPlan(profile: Self.scale(profile, toHosts: hosts)).apply(to: &core)
        // The launch mix as a fixed, interleaved request sequence in proportion to weights.
        var sequence: [(pool: String, image: String)] = []
        var credit = [Double](repeating: 0, count: profile.launchMix.entries.count)
        let total = profile.launchMix.entries.reduce(0) { $0 + $1.weight }
        for _ in 0..<1024 {
            for (k, entry) in profile.launchMix.entries.enumerated() { credit[k] += entry.weight / total }
            let k = credit.indices.max { credit[$0] < credit[$1] }!
            credit[k] -= 1
            sequence.append((profile.launchMix.entries[k].pool, profile.launchMix.entries[k].image))
        }
        requests = sequence
        live = []
        live.reserveCapacity(hosts * Self.livePerHost)
        for _ in 0..<hosts * Self.livePerHost { live.append(try place().id) }
        core.selection = selection
    }

    private func place() throws -> Placement {
        let request = requests[nextRequest]
        nextRequest = (nextRequest + 1) & (requests.count - 1)
        return try core.reserve(pool: request.pool, image: request.image)
    }

    func placeOneReleaseOldest() {
        do {
            let placement = try place()
            try core.release(live[oldest])
            live[oldest] = placement.id
            oldest = oldest + 1 == live.count ? 0 : oldest + 1
        } catch {
            fatalError("the benchmark fleet refused a fork: \(error)")
        }
    }

    /// The profile's first `hosts` hosts in proportion across its host groups, with pool
    /// reservations and limits scaled by the same factor so admission behaves alike.
    static func scale(_ profile: WorkloadProfile, toHosts hosts: Int) -> WorkloadProfile {
        var scaled = profile
        let full = profile.fleet.hostGroups.reduce(0) { $0 + $1.count }
        let factor = Double(hosts) / Double(full)
        for g in scaled.fleet.hostGroups.indices { scaled.fleet.hostGroups[g].count = Int((Double(profile.fleet.hostGroups[g].count) * factor).rounded()) }
        func shrink(_ value: Int) -> Int { Int(Double(value) * factor) }
        for p in scaled.pools.indices {
            scaled.pools[p].memoryReservationMiB = shrink(profile.pools[p].memoryReservationMiB)
            scaled.pools[p].cpuReservationMHz = shrink(profile.pools[p].cpuReservationMHz)
            scaled.pools[p].memoryLimitMiB = profile.pools[p].memoryLimitMiB.map(shrink)
            scaled.pools[p].cpuLimitMHz = profile.pools[p].cpuLimitMHz.map(shrink)
        }
        return scaled
    }
}
