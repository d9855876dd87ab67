import API
import Foundation
import Load
import TestSupport
import Testing
import WorkloadProfiles

/// Load runs against a real daemon (real KVM guests): every launch accounted for, overload
/// visible as latency, placement refusals a kind of their own. Relations only, no speeds.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct LoadRunTests {
    static func profile(rate: Double, entries: String) throws -> WorkloadProfile {
        try WorkloadProfile.parse("""
            version: 1
            name: load-test
            fleet: {simulated: false, hostGroups: [{namePrefix: local-, count: 1, cpuCores: 2, memoryMiB: 8192, numaNodes: 1, warmImages: [busybox]}]}
            pools: [{name: tiny, cpuReservationMHz: 0, memoryReservationMiB: 0, shares: 1000, expandableReservation: true}]
            images: [{name: busybox, parentMemoryMiB: 8, growthPerChildKiB: 1024, cpuMHzPerChild: 1}]
            launchMix:
              launchesPerSecond: \(rate)
              entries:
            \(entries)
            """)
    }

    @Test func shortRunAccountsForEveryLaunch() async throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        let profile = try Self.profile(rate: 40, entries: """
                - {image: busybox, pool: tiny, weight: 4, command: [/bin/busybox, echo, hello]}
                - {image: busybox, pool: tiny, weight: 1, command: [/bin/busybox, wc, -c], stdin: "twelve bytes"}
                - {image: busybox, pool: tiny, weight: 1, command: [/bin/busybox, sh, -c, "exit 3"], expectedExitStatus: 3}
                - {image: busybox, pool: tiny, weight: 1, command: [/bin/busybox, sh, -c, "exit 1"]}
                - {image: busybox, pool: tiny, weight: 1, command: [/bin/busybox, sleep, "60"], lifetimeSeconds: 20}
            """)
        var settings = try LoadSettings(profile: profile, duration: 1.6)
        settings.timeScale = 0.01
        settings.sampleInterval = 0.2
        settings.trace = true
        let run = try LoadRun(profile: profile, settings: settings, client: client)
        let arrivals = run.schedule.arrivals
        let report = try await run.run()
        let side = try #require(report.sides.first)
        #expect(side.launched == arrivals.count)
        #expect(side.launched == side.finished + side.failed, "every launch is finished or failed")
        // The one entry whose exit status differs from the expected 0 fails, as its own kind; nothing else does.
        let wrongExit = arrivals.filter { $0.entry == 3 }.count
        #expect(side.errors == ["unexpected_exit": wrongExit], "\(side.errorSamples)")
        // Every launch ran; all but the sleepers (removed at the end of their 200 ms lifetime) exited by themselves.
        let sleepers = arrivals.filter { $0.entry == 4 }.count
        #expect(side.running.count == side.launched)
        #expect(side.exit.count == side.launched - sleepers)
        #expect(side.firstOutput.count > 0 && side.firstOutput.count <= side.launched)
        #expect(side.exit.p50 >= side.running.p50, "a launch exits after it runs")
        // Nothing of the run is left on the agent.
        let left = try await client.send("GET", "/v1/containers").decode([ContainerInfoLite].self)
        #expect(left.isEmpty, "\(left.count) containers left")
        #expect(side.memory.count >= 2)
        // The report goes through its JSON unchanged in what it counts.
        let file = daemon.state.appendingPathComponent("run.json")
        try report.renderJSON().write(to: file, atomically: true, encoding: .utf8)
        let read = try LoadReport.load(path: file.path)
        #expect(read.sides.first?.launched == side.launched && read.sides.first?.errors == side.errors)
        #expect(report.renderSVG().contains("<polyline"))

        // The trace: a line per launch, its outcome as the counts have it, its moments in order.
        let lines = run.traceCSV().split(separator: "\n").map(String.init)
        #expect(lines.first == LaunchTraceRow.csvHeader)
        let rows = lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        #expect(rows.count == side.launched)
        #expect(rows.allSatisfy { $0.count == 9 && $0[0] == "vmfork" })
        #expect(rows.filter { $0[8] == "finished" }.count == side.finished)
        #expect(rows.filter { $0[8] == "unexpected_exit" }.count == wrongExit)
        #expect(rows.filter { $0[6].isEmpty }.count == sleepers, "only the sleepers have no exit")
        for row in rows {
            let due = try #require(Double(row[2])), taken = try #require(Double(row[3])), running = try #require(Double(row[4]))
            let ended = try #require(Double(row[7]))
            #expect(due <= taken && taken <= running && running <= ended, "\(row)")
            if let exit = Double(row[6]) { #expect(running <= exit && exit <= ended, "\(row)") }
        }
    }

    @Test func overloadShowsAsGrowingLatencyAndAchievedBelowOffered() async throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        // 20,000 launches a second offered: far beyond any host through its API. All 240 are
        // due within 12 ms; at most 4 in flight, so the rest wait, and their latency says so.
        let profile = try Self.profile(rate: 20000, entries: "    - {image: busybox, pool: tiny, weight: 1, command: [/bin/busybox, echo, hi]}")
        var settings = try LoadSettings(profile: profile, duration: 1, count: 240)
        settings.maxInFlight = 4
        settings.windowSeconds = 0.002
        settings.firstOutput = false
        let report = try await LoadRun(profile: profile, settings: settings, client: client).run()
        let side = try #require(report.sides.first)
        #expect(side.launched == 240 && side.finished == 240 && side.failed == 0, "\(side.errorSamples)")
        #expect(side.achievedPerSecond < 20000 / 4, "achieved \(side.achievedPerSecond)/s against 20000/s offered")
        #expect(side.mostInFlight <= 4)
        // One call each (no lifetime, no first-output timing): the agent's start times still
        // place every launch's running moment, before its exit.
        #expect(side.running.count == 240 && side.exit.count == 240 && side.running.p50 <= side.exit.p50, "running \(side.running), exit \(side.exit)")
        #expect(side.schedulerStalls > 0, "the backlog is counted, not hidden")
        let windows = side.windows.filter { $0.exit.count > 0 }
        let first = try #require(windows.first)
        let last = try #require(windows.last)
        #expect(last.exit.p50 > 2 * first.exit.p50, "latency grows over the backlog: first window p50 \(first.exit.p50) µs, last \(last.exit.p50) µs")
        // Coordinated omission corrected: the slowest launch waited about as long as the whole backlog took.
        #expect(side.exit.max > 0.5 * (side.elapsedSeconds - 0.012) * 1e6)
    }

    @Test func placementRefusalsAreTheirOwnErrorKind() async throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        // Placement state: one host, busybox at 1 MiB per child, and a pool that holds three.
        for (path, body) in [
            ("/v1/placement/hosts", #"{"name":"local","cpuCores":2,"nodeMemoryKiB":[8388608],"simulated":false}"#),
            ("/v1/placement/images", #"{"name":"busybox","parentMemoryKiB":8192,"growthPerChildKiB":1024,"cpuMHzPerChild":1}"#),
            ("/v1/placement/warm-parents", #"{"host":"local","image":"busybox","node":0}"#),
            ("/v1/placement/pools", #"{"name":"tiny","memoryLimitKiB":3072}"#),
        ] {
            let response = try await client.send("POST", path, body: Data(body.utf8))
            #expect(response.status == 201, "\(path): \(response.text)")
        }
        // Each container holds its placement for its 10 s lifetime: the fourth and later are refused.
        let profile = try Self.profile(rate: 20, entries: "    - {image: busybox, pool: tiny, weight: 1, command: [/bin/busybox, sleep, \"60\"], lifetimeSeconds: 10}")
        var settings = try LoadSettings(profile: profile, duration: 1, count: 8)
        settings.placement = true
        settings.firstOutput = false
        let report = try await LoadRun(profile: profile, settings: settings, client: client).run()
        let side = try #require(report.sides.first)
        #expect(side.launched == 8)
        #expect(side.launched == side.finished + side.failed)
        #expect(side.finished >= 1 && side.finished <= 3, "at most three fit the pool")
        #expect(side.errors == ["placement_refused": side.failed], "\(side.errorSamples)")
        #expect(side.errorSamples.first?.message.contains("tiny") == true, "\(side.errorSamples)")
    }
}

/// The fields of a listed container this suite reads.
private struct ContainerInfoLite: Decodable {
    let id: String
}
