import Foundation
import FoundationXML
import TestSupport
import Testing
import WorkloadProfiles
@testable import Placement

/// The capacity report's figures agree with what placement really does.
@Suite struct CapacityReportTests {
    static let small = HostFacts.packageRoot.appendingPathComponent("Profiles/small.yaml").path

    func smallFleet() throws -> (PlacementCore, WorkloadProfile) {
        let profile = try WorkloadProfile.load(path: Self.small)
        var core = PlacementCore()
        try FleetPlan(profile: profile).apply(to: &core)
        return (core, profile)
    }

    @Test(arguments: [("test", "python"), ("dev", "nginx"), ("prod", "python")])
    func headroomIsExactlyWhatPlacementThenAdmits(pool: String, image: String) throws {
        var (core, profile) = try smallFleet()
        // Something placed already, so the figure is not just the empty fleet's.
        for _ in 0..<300 { _ = try core.reserve(pool: "prod", image: "nginx") }
        let report = try core.capacityReport(profile: profile, images: [image])
        let predicted = try #require(report.pools.first { $0.name == pool }?.headroom.first).forks
        var placed = 0
        while (try? core.reserve(pool: pool, image: image, allowColdStart: false)) != nil { placed += 1 }
        #expect(placed == predicted)
        #expect(placed > 0)
    }

    @Test func sharingSavingsAndUseAddUp() throws {
        var (core, profile) = try smallFleet()
        for _ in 0..<100 { _ = try core.reserve(pool: "test", image: "python") }
        let report = try core.capacityReport(profile: profile)
        let test = try #require(report.pools.first { $0.name == "test" })
        let python = try core.image("python")
        #expect(test.forks == 100)
        #expect(test.usedByForks.memoryKiB == 100 * python.growthPerChildKiB)
        #expect(test.savedBySharingKiB == 100 * python.parentMemoryKiB)
        #expect(report.totals.savedBySharingKiB == 100 * python.parentMemoryKiB)
        #expect(report.hosts.reduce(0) { $0 + $1.forks } == 100)
        #expect(report.totals.used.memoryKiB == report.hosts.reduce(0) { $0 + $1.usedByForks.memoryKiB + $1.usedByWarmParents.memoryKiB })
        // test reserved 128 GiB; 100 forks of 64 MiB stay inside it: nothing borrowed.
        #expect(test.borrowed == .zero)
        #expect(report.totals.simulatedHosts == 16)
    }

    @Test func runwayFollowsLaunchRateAndLifetimes() {
        // 10 KiB/s into 100 KiB, forever: full after 10 s.
        #expect(PlacementCore.timeToReach(100, [(10, nil)]) == 10)
        // Containers living 5 s hold at most 50 KiB: never full.
        #expect(PlacementCore.timeToReach(100, [(10, 5)]) == nil)
        // 10/s for 5 s (50), then only the endless 4/s flow: 50 + 20 + 4 (t - 5) = 100 at t = 12.5.
        #expect(PlacementCore.timeToReach(100, [(10, 5), (4, nil)]) == 12.5)
        #expect(PlacementCore.timeToReach(0, [(10, nil)]) == 0)
    }

    @Test func runwayReportsThePoolsBindingResource() throws {
        let (core, profile) = try smallFleet()
        let report = try core.capacityReport(profile: profile)
        let dev = try #require(report.pools.first { $0.name == "dev" }?.runway)
        // dev launches nginx forever (no lifetime), so it must run out, and its rate is its
        // share of the profile's launches: weights 4 + 1 of 11 at 20 per second.
        #expect(dev.secondsUntilFull != nil)
        #expect(abs(dev.launchesPerSecond - 20.0 * 5 / 11) < 1e-9)
        #expect(dev.steadyStateKiB == nil)
        let test = try #require(report.pools.first { $0.name == "test" }?.runway)
        #expect(test.secondsUntilFull == nil)
        #expect(test.steadyStateKiB == Int(20.0 * 2 / 11 * 600 * 65536))
    }

    @Test func renderingsCarryTheFigures() throws {
        var (core, profile) = try smallFleet()
        for _ in 0..<50 { _ = try core.reserve(pool: "dev", image: "busybox") }
        let report = try core.capacityReport(profile: profile)
        let text = report.renderText()
        #expect(text.contains("Capacity of profile small: 16 hosts (all simulated, 16 healthy)"))
        #expect(text.contains("Headroom: forks that fit now"))
        let decoded = try JSONDecoder().decode(CapacityReport.self, from: Data(try report.renderJSON().utf8))
        #expect(decoded.pools.map(\.name) == report.pools.map(\.name))
        #expect(decoded.pools.first { $0.name == "dev" }?.forks == 50)
        let svg = report.renderSVG()
        let parser = XMLParser(data: Data(svg.utf8))
        #expect(parser.parse(), "the SVG is not well-formed XML: \(String(describing: parser.parserError))")
        for name in ["dev", "test", "prod", "host-1", "big-4"] { #expect(svg.contains(">\(name)")) }
    }

    @Test func unknownImageIsRefusedByName() throws {
        let (core, _) = try smallFleet()
        #expect(throws: PlacementError.unknownImage("nodejs")) { try core.capacityReport(images: ["nodejs"]) }
    }
}
