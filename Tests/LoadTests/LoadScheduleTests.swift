import API
import Foundation
import Load
import Testing
import WorkloadProfiles

/// The parts of a load run that need no agent: the schedule, error kinds, measured figures
/// for the planner, and the profile's new fields.
@Suite struct LoadScheduleTests {
    static func profile(_ mix: String) throws -> WorkloadProfile {
        try WorkloadProfile.parse("""
            version: 1
            name: t
            fleet: {simulated: true, hostGroups: [{namePrefix: h, count: 1, cpuCores: 4, memoryMiB: 1024, numaNodes: 1, warmImages: [a], cpuMHzPerCore: 3000}]}
            pools: [{name: p, cpuReservationMHz: 0, memoryReservationMiB: 0, shares: 1, expandableReservation: true}]
            images: [{name: a, parentMemoryMiB: 1, growthPerChildKiB: 64, cpuMHzPerChild: 1}, {name: b, parentMemoryMiB: 1, growthPerChildKiB: 32, cpuMHzPerChild: 2}]
            launchMix: {launchesPerSecond: 100, \(mix)entries: [{image: a, pool: p, weight: 3, command: [x]}, {image: b, pool: p, weight: 1, command: [x], lifetimeSeconds: 2}]}
            """)
    }

    @Test func constantArrivalsAreEvenlySpacedAndFollowTheWeights() throws {
        let mix = try Self.profile("").launchMix
        let schedule = LoadSchedule(mix: mix, rate: 100, rampUp: 0, duration: 1, count: nil, seed: 1)
        #expect(schedule.arrivals.count == 99, "arrivals at 10, 20, ... 990 ms: the one due at 1 s is past the end")
        let gaps = zip(schedule.arrivals.dropFirst(), schedule.arrivals).map { $0.offset - $1.offset }
        #expect(gaps.allSatisfy { abs($0 - 0.01) < 1e-9 })
        let first80 = schedule.arrivals.prefix(80)
        #expect(first80.filter { $0.entry == 0 }.count == 60 && first80.filter { $0.entry == 1 }.count == 20)
    }

    @Test func rampUpOffersHalfAsManyLaunchesOverTheRamp() throws {
        let mix = try Self.profile("").launchMix
        let schedule = LoadSchedule(mix: mix, rate: 100, rampUp: 2, duration: 4, count: nil, seed: 1)
        let inRamp = schedule.arrivals.filter { $0.offset < 2 }.count
        let after = schedule.arrivals.filter { $0.offset >= 2 }.count
        // Λ(2 s) = 100 expected launches over the ramp (half of 2 s at the full rate); the 100th is
        // due at exactly 2 s, so 99 fall inside it, and 200 in the two seconds at the full rate.
        #expect(inRamp == 99 && after == 200, "ramp \(inRamp), after \(after)")
        #expect(LoadSchedule.offeredRate(at: 1, rate: 100, rampUp: 2) == 50)
    }

    @Test func poissonIsSeededAndBurstsArriveTogether() throws {
        let poisson = try Self.profile("arrival: poisson, ").launchMix
        let one = LoadSchedule(mix: poisson, rate: 100, rampUp: 0, duration: 20, count: nil, seed: 7)
        let again = LoadSchedule(mix: poisson, rate: 100, rampUp: 0, duration: 20, count: nil, seed: 7)
        let other = LoadSchedule(mix: poisson, rate: 100, rampUp: 0, duration: 20, count: nil, seed: 8)
        #expect(one.arrivals == again.arrivals && one.arrivals != other.arrivals)
        // 2000 expected; a Poisson count's standard deviation is about 45.
        #expect(abs(one.arrivals.count - 2000) < 250, "\(one.arrivals.count)")
        let gaps = zip(one.arrivals.dropFirst(), one.arrivals).map { $0.offset - $1.offset }
        #expect(Set(gaps.map { ($0 * 1e6).rounded() }).count > gaps.count / 2, "gaps vary")
        let burst = try Self.profile("arrival: burst, burstSize: 10, ").launchMix
        let bursts = LoadSchedule(mix: burst, rate: 100, rampUp: 0, duration: 1, count: 30, seed: 1)
        #expect(bursts.arrivals.count == 30)
        #expect(Set(bursts.arrivals.map(\.offset)).count == 3, "three bursts of ten")
    }

    @Test func badArrivalFieldsAreNamed() {
        for (mix, problem) in [
            ("arrival: wave, ", "launch mix: arrival wave is not constant, poisson or burst"),
            ("arrival: burst, ", "launch mix: arrival burst needs burstSize"),
            ("burstSize: 3, ", "launch mix: burstSize is given but arrival is not burst"),
            ("rampUpSeconds: 5, durationSeconds: 2, ", "launch mix: rampUpSeconds 5.0 is longer than durationSeconds 2.0"),
        ] {
            #expect { try Self.profile(mix) } throws: { ($0 as? WorkloadProfileError)?.problem == problem }
        }
        let badStatus = """
            version: 1
            name: t
            fleet: {simulated: true, hostGroups: []}
            pools: [{name: p, cpuReservationMHz: 0, memoryReservationMiB: 0, shares: 1, expandableReservation: true}]
            images: [{name: a, parentMemoryMiB: 1, growthPerChildKiB: 64, cpuMHzPerChild: 1}]
            launchMix: {launchesPerSecond: 1, entries: [{image: a, pool: p, weight: 1, command: [x], expectedExitStatus: 300}]}
            """
        #expect { try WorkloadProfile.parse(badStatus) } throws: { ($0 as? WorkloadProfileError)?.problem == "launch mix: expectedExitStatus 300 of a is not 0-255" }
    }

    @Test func settingsRefuseBadValuesByName() throws {
        let profile = try Self.profile("")
        #expect { try LoadSettings(profile: profile, rate: 10, concurrency: 2) } throws: { "\($0)".contains("not both") }
        #expect { try LoadSettings(profile: profile, rate: -1) } throws: { "\($0)".contains("launch rate -1.0 must be positive") }
        #expect { try LoadSettings(profile: profile, concurrency: 0) } throws: { "\($0)".contains("--concurrency 0") }
        var settings = try LoadSettings(profile: profile)
        settings.timeScale = -1
        #expect { try settings.validate() } throws: { "\($0)".contains("--time-scale -1.0 must be zero or positive") }
    }

    @Test func closedLoopLaunchesExactlyTheCountInTheMixsProportions() throws {
        let profile = try Self.profile("arrival: poisson, ")
        let settings = try LoadSettings(profile: profile, concurrency: 4, count: 60)
        // No agent is reached: the schedule is made up front.
        let run = try LoadRun(profile: profile, settings: settings, client: AgentClient(socketPath: "/nonexistent/vmfork.sock"))
        let arrivals = run.schedule.arrivals
        #expect(arrivals.count == 60)
        #expect(arrivals.filter { $0.entry == 0 }.count == 45 && arrivals.filter { $0.entry == 1 }.count == 15)
    }

    @Test func placementRefusalsAreTheirOwnKind() {
        #expect(LoadErrorKind.of(status: 409, field: "pool", message: "placement refused: pool p is at its memory limit") == .placementRefused)
        #expect(LoadErrorKind.of(status: 409, field: "name", message: "container name x is taken") == .conflict)
        #expect(LoadErrorKind.of(status: 404, field: "pool", message: "unknown pool") == .notFound)
        #expect(LoadErrorKind.of(status: 500, field: nil, message: "KVM") == .engineFailed)
        #expect(LoadErrorKind.of(status: 429, field: nil, message: "over 1024 connections open at once") == .tooManyConnections)
    }

    @Test func measuredFiguresReplaceTheProfilesAndSayFromWhere() throws {
        let profile = try Self.profile("")
        let json = """
            {"version":1,"profile":"t","mode":"open","offeredPerSecond":100,"arrival":"constant","rampUpSeconds":0,"durationSeconds":1,
             "timeScale":1,"seed":1,"startedAt":0,"cores":2,"sides":[{"name":"vmfork","offeredPerSecond":100,"elapsedSeconds":1,"achievedPerSecond":100,
             "launched":100,"finished":100,"failed":0,"errors":{},"errorSamples":[],"mostInFlight":3,"schedulerStalls":0,
             "running":{"count":0,"mean":0,"p50":0,"p90":0,"p99":0,"p999":0,"max":0},"firstOutput":{"count":0,"mean":0,"p50":0,"p90":0,"p99":0,"p999":0,"max":0},
             "exit":{"count":0,"mean":0,"p50":0,"p90":0,"p99":0,"p999":0,"max":0},"windows":[],"memory":[],
             "engine":{"cpuSeconds":0.05,"cpuMicrosPerLaunch":500,"poolMisses":0,"images":{"a":{"privatePerChildKiB":40,"cpuMicrosPerLaunch":500,"meanLifetimeSeconds":0.5}}}}]}
            """
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("measured-\(UUID().uuidString).json")
        try json.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let figures = try MeasuredFigures(report: try LoadReport.load(path: file.path), reportPath: file.path, profile: profile)
        let a = try #require(figures.profile.images.first { $0.name == "a" })
        #expect(a.growthPerChildKiB == 40)
        // 500 µs of CPU per launch over a 0.5 s lifetime at 3000 MHz per core: 3 MHz.
        #expect(a.cpuMHzPerChild == 3)
        let b = try #require(figures.profile.images.first { $0.name == "b" })
        #expect(b.growthPerChildKiB == 32 && b.cpuMHzPerChild == 2, "b was not launched: the profile's figures stay")
        #expect(figures.figures.filter { $0.source == "measured" }.map(\.image) == ["a", "a"])
        #expect(figures.figures.filter { $0.image == "b" }.allSatisfy { $0.source == "profile" && $0.note.contains("did not launch b") })
        #expect(figures.renderText().contains("[measured]"))
    }
}
