import Foundation
import Yams

/// A declarative workload: the fleet of hosts, the resource-pool tree, the images with their
/// warm-parent footprint, and the launch mix. Benchmarks and the capacity planner read these
/// from `Profiles/*.yaml`, so one file describes a scenario end to end.
public struct WorkloadProfile: Codable, Equatable, Sendable {
    /// Format version; the loader refuses versions it does not know.
    public var version: Int
    public var name: String
    public var fleet: Fleet
    public var pools: [Pool]
    public var images: [Image]
    public var launchMix: LaunchMix

    public struct Fleet: Codable, Equatable, Sendable {
        /// Hosts beyond this machine are simulated; the profile says so explicitly.
        public var simulated: Bool
        public var hostGroups: [HostGroup]
    }

    public struct HostGroup: Codable, Equatable, Sendable {
        public var namePrefix: String
        public var count: Int
        public var cpuCores: Int
        public var memoryMiB: Int
        public var numaNodes: Int
        /// Images with a warm parent on every host of the group; the k-th listed image's
        /// parent sits on NUMA node k modulo `numaNodes`, so parents spread over the nodes.
        public var warmImages: [String]
        /// Clock of one core, so host CPU capacity is comparable with pool MHz figures.
        /// Defaults to `defaultCPUMHzPerCore`.
        public var cpuMHzPerCore: Int?
    }

    public struct Pool: Codable, Equatable, Sendable {
        public var name: String
        /// nil for a child of the root pool.
        public var parent: String?
        public var cpuReservationMHz: Int
        public var cpuLimitMHz: Int?
        public var memoryReservationMiB: Int
        public var memoryLimitMiB: Int?
        public var shares: Int
        public var expandableReservation: Bool
        /// `spread` (most free host first, the default) or `pack` (fullest host that fits).
        public var placement: String?
    }

    public struct Image: Codable, Equatable, Sendable {
        public var name: String
        /// Memory of the warm parent, paid once per host.
        public var parentMemoryMiB: Int
        /// Private memory a child owns after running a while (copy-on-write growth).
        public var growthPerChildKiB: Int
        public var cpuMHzPerChild: Int
        /// The pool that keeps (and is charged for) this image's warm parents; nil charges
        /// them to the fleet's root pool, outside every Virtual Container Host.
        public var parentPool: String?
    }

    public struct LaunchMix: Codable, Equatable, Sendable {
        public var launchesPerSecond: Double
        public var entries: [Entry]
        /// How launches arrive (load runs): `constant` (evenly spaced, the default), `poisson`
        /// (exponential gaps) or `burst` (`burstSize` at once, the bursts at the mean rate).
        public var arrival: String?
        public var burstSize: Int?
        /// The rate climbs linearly from zero to `launchesPerSecond` over this long (load runs).
        public var rampUpSeconds: Double?
        /// How long a load run offers launches (ramp-up included); the command line may bound it further.
        public var durationSeconds: Double?

        public struct Entry: Codable, Equatable, Sendable {
            public var image: String
            public var pool: String
            public var weight: Double
            public var command: [String]
            /// How long a container of this entry runs; nil means it runs until released,
            /// so its pool only fills up.
            public var lifetimeSeconds: Double?
            /// The whole standard input a container of this entry reads (load runs).
            public var stdin: String?
            /// The exit status a container that ends within its lifetime must have (load runs;
            /// nil: 0). One removed at the end of its lifetime while still running is not checked.
            public var expectedExitStatus: Int?
        }
    }
}

/// A profile that cannot be used, naming what is wrong with it.
public struct WorkloadProfileError: Error, CustomStringConvertible, Equatable, Sendable {
    public let file: String
    public let problem: String
    public var description: String { "profile \(file): \(problem)" }
}

extension WorkloadProfile {
    public static let supportedVersion = 1
    public static let defaultCPUMHzPerCore = 2000
    public static let placementPolicies: Set<String> = ["spread", "pack"]
    /// The name of the implicit pool at the top of every tree (the whole fleet).
    public static let rootPoolName = "root"

    /// Parses YAML text and checks that every reference resolves.
    public static func parse(_ yaml: String, file: String = "<string>") throws -> WorkloadProfile {
        let profile: WorkloadProfile
        do {
            profile = try YAMLDecoder().decode(WorkloadProfile.self, from: yaml)
        } catch let error as DecodingError {
            throw WorkloadProfileError(file: file, problem: Self.describe(error))
        } catch {
            throw WorkloadProfileError(file: file, problem: "not valid YAML: \(error)")
        }
        try profile.validate(file: file)
        return profile
    }

    public static func load(path: String) throws -> WorkloadProfile {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw WorkloadProfileError(file: path, problem: "cannot be read as UTF-8 text")
        }
        return try parse(text, file: path)
    }

    func validate(file: String) throws {
        func fail(_ problem: String) -> WorkloadProfileError { WorkloadProfileError(file: file, problem: problem) }
        guard version == Self.supportedVersion else { throw fail("version \(version) is not supported (expected \(Self.supportedVersion))") }
        let imageNames = Set(images.map(\.name))
        let poolNames = Set(pools.map(\.name))
        guard imageNames.count == images.count else { throw fail("two images share a name") }
        guard poolNames.count == pools.count else { throw fail("two pools share a name") }
        for group in fleet.hostGroups {
            guard group.count >= 0, group.cpuCores > 0, group.memoryMiB > 0, group.numaNodes > 0, (group.cpuMHzPerCore ?? 1) > 0 else {
                throw fail("host group \(group.namePrefix): count, cpuCores, memoryMiB, numaNodes and cpuMHzPerCore must be positive")
            }
            for image in group.warmImages where !imageNames.contains(image) {
                throw fail("host group \(group.namePrefix): warm image \(image) is not among images")
            }
        }
        for pool in pools {
            if let parent = pool.parent, !poolNames.contains(parent) { throw fail("pool \(pool.name): parent \(parent) is not a pool") }
            guard pool.cpuReservationMHz >= 0, pool.memoryReservationMiB >= 0 else { throw fail("pool \(pool.name): a reservation is negative") }
            if let limit = pool.memoryLimitMiB, limit < pool.memoryReservationMiB { throw fail("pool \(pool.name): memory reservation above its limit") }
            if let limit = pool.cpuLimitMHz, limit < pool.cpuReservationMHz { throw fail("pool \(pool.name): CPU reservation above its limit") }
            guard pool.shares > 0 else { throw fail("pool \(pool.name): shares must be positive") }
            guard pool.name != Self.rootPoolName else { throw fail("pool name \(Self.rootPoolName) is reserved for the fleet's root pool") }
            if let policy = pool.placement, !Self.placementPolicies.contains(policy) {
                throw fail("pool \(pool.name): placement \(policy) is not spread or pack")
            }
        }
        if let cycle = poolCycle() { throw fail("pools form a cycle: \(cycle.joined(separator: " -> "))") }
        for image in images {
            guard image.parentMemoryMiB >= 0, image.growthPerChildKiB >= 0, image.cpuMHzPerChild >= 0 else {
                throw fail("image \(image.name): a size is negative")
            }
            if let pool = image.parentPool, !poolNames.contains(pool) { throw fail("image \(image.name): parentPool \(pool) is not a pool") }
        }
        for entry in launchMix.entries {
            guard imageNames.contains(entry.image) else { throw fail("launch mix: image \(entry.image) is not among images") }
            guard poolNames.contains(entry.pool) else { throw fail("launch mix: pool \(entry.pool) is not a pool") }
            guard entry.weight > 0 else { throw fail("launch mix: weight of \(entry.image) must be positive") }
            if let lifetime = entry.lifetimeSeconds, !(lifetime > 0) { throw fail("launch mix: lifetimeSeconds of \(entry.image) must be positive") }
        }
        guard launchMix.launchesPerSecond >= 0 else { throw fail("launch mix: launchesPerSecond is negative") }
        try validateArrival(launchMix, fail)

    }

    /// The first chain of parents that leads back to where it started, if any.
    func poolCycle() -> [String]? {
        let parentOf = Dictionary(pools.map { ($0.name, $0.parent) }, uniquingKeysWith: { first, _ in first })
        for start in pools {
            var path = [start.name]
            var next = start.parent
            while let name = next, path.count <= pools.count {
                path.append(name)
                if name == start.name { return path }
                next = parentOf[name] ?? nil
            }
        }
        return nil
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let at = path(context)
            return "missing field \(at.isEmpty ? "" : at + ".")\(key.stringValue)"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "field \(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
