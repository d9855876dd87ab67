import Foundation
import TestSupport
import Testing
import WorkloadProfiles

@Suite struct WorkloadProfileTests {
    @Test func shippedProfilesLoad() throws {
        let folder = HostFacts.packageRoot.appendingPathComponent("Profiles")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".yaml") }
        #expect(!files.isEmpty)
        for file in files {
            let profile = try WorkloadProfile.load(path: folder.appendingPathComponent(file).path)
            #expect(!profile.images.isEmpty)
        }
        let small = try WorkloadProfile.load(path: folder.appendingPathComponent("small.yaml").path)
        #expect(small.fleet.simulated)
        #expect(small.fleet.hostGroups.map(\.count).reduce(0, +) == 16)
        #expect(Set(small.pools.map(\.name)) == ["dev", "test", "prod"])
    }

    static let base = """
        version: 1
        name: t
        fleet: {simulated: true, hostGroups: [{namePrefix: h, count: 1, cpuCores: 4, memoryMiB: 1024, numaNodes: 1, warmImages: [a]}]}
        pools: [{name: p, cpuReservationMHz: 0, memoryReservationMiB: 10, memoryLimitMiB: 20, shares: 1, expandableReservation: true}]
        images: [{name: a, parentMemoryMiB: 1, growthPerChildKiB: 64, cpuMHzPerChild: 1}]
        launchMix: {launchesPerSecond: 1, entries: [{image: a, pool: p, weight: 1, command: [x]}]}
        """

    @Test func validProfileParses() throws {
        #expect(try WorkloadProfile.parse(Self.base).pools.first?.memoryLimitMiB == 20)
    }

    @Test func longerPoolCycleIsNamed() {
        let yaml = Self.base.replacingOccurrences(
            of: "pools: [{name: p,",
            with: "pools: [{name: q, parent: r, cpuReservationMHz: 0, memoryReservationMiB: 0, shares: 1, expandableReservation: true}, {name: r, parent: q, cpuReservationMHz: 0, memoryReservationMiB: 0, shares: 1, expandableReservation: true}, {name: p,")
        #expect { try WorkloadProfile.parse(yaml) } throws: { error in
            (error as? WorkloadProfileError)?.problem == "pools form a cycle: q -> r -> q"
        }
    }

    @Test(arguments: [
        ("version: 1", "version: 9", "version 9 is not supported"),
        ("warmImages: [a]", "warmImages: [zz]", "warm image zz is not among images"),
        ("memoryReservationMiB: 10", "memoryReservationMiB: 30", "memory reservation above its limit"),
        ("memoryReservationMiB: 10", "memoryReservationMiB: -1", "a reservation is negative"),
        ("{image: a, pool: p", "{image: a, pool: q", "pool q is not a pool"),
        ("name: t\n", "", "missing field name"),
        ("count: 1", "count: lots", "field fleet.hostGroups"),
        ("shares: 1,", "shares: 1, placement: scatter,", "placement scatter is not spread or pack"),
        ("{name: p,", "{name: p, parent: p,", "pools form a cycle: p -> p"),
        ("{name: p,", "{name: root,", "pool name root is reserved"),
        ("cpuMHzPerChild: 1}", "cpuMHzPerChild: 1, parentPool: nope}", "parentPool nope is not a pool"),
        ("command: [x]}", "command: [x], lifetimeSeconds: 0}", "lifetimeSeconds of a must be positive"),
        ("growthPerChildKiB: 64", "growthPerChildKiB: -64", "image a: a size is negative"),
    ])
    func badProfilesNameTheProblem(original: String, replacement: String, message: String) {
        let yaml = Self.base.replacingOccurrences(of: original, with: replacement)
        do {
            _ = try WorkloadProfile.parse(yaml, file: "bad.yaml")
            Issue.record("expected an error for \(replacement)")
        } catch let error as WorkloadProfileError {
            #expect(error.description.contains(message), "\(error)")
            #expect(error.file == "bad.yaml")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}
