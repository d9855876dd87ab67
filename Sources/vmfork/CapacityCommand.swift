import ArgumentParser
import Foundation
import Load
import Placement
import WorkloadProfiles

/// `vmfork capacity`: the capacity-planning report, for a profile's fleet or the state.
struct CapacityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capacity",
        abstract: "Report reserved, used and free capacity per pool and host, headroom, and when each pool runs out.",
        discussion: """
            With --profile alone, the report covers that profile's fleet (its simulated hosts), after \
            --launch forks of its launch mix are placed through the real placement path. With --state \
            as well, or without --profile, it covers the placement state; the profile then gives the \
            launch rate.
            """
    )

    @Option(help: "A workload profile (Profiles/*.yaml).") var profile: String?
    @Option(help: "With a profile alone: place this many forks of its launch mix first.") var launch = 0
    @Option(name: .customLong("image"), help: "Report headroom for this image in every pool (repeatable).") var images: [String] = []
    @Flag(help: "Print JSON instead of tables.") var json = false
    @Option(help: "Also write the report as an SVG chart to this file.") var svg: String?
    @Option(help: "Report on this state folder instead of a fresh copy of the profile's fleet.") var state: String?
    @Option(help: "A load run's JSON (vmfork load --json): use its measured memory and CPU per child instead of the profile's.") var measured: String?

    func run() throws {
        var loaded = try profile.map { try WorkloadProfile.load(path: $0) }
        var figures: MeasuredFigures?
        if let measured {
            guard let original = loaded else { throw CLIError("--measured needs --profile: the run's figures replace that profile's") }
            figures = try MeasuredFigures(report: try LoadReport.load(path: measured), reportPath: measured, profile: original)
            loaded = figures?.profile
        }
        let chosen = images.isEmpty ? nil : images
        let report: CapacityReport
        if let loaded, state == nil {
            var core = PlacementCore()
            try FleetPlan(profile: loaded).apply(to: &core)
            try Self.launch(launch, of: loaded, into: &core)
            report = try core.capacityReport(profile: loaded, images: chosen)
        } else {
            let service = try StateOptions(state: state).openService()
            report = try service.read { core in try core.capacityReport(profile: loaded, images: chosen) }
        }
        if let svg {
            try report.renderSVG().write(toFile: svg, atomically: true, encoding: .utf8)
        }
        if json, let figures {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(MeasuredCapacity(figures: figures.figures, report: report)), as: UTF8.self))
        } else {
            if let figures { print(figures.renderText() + "\n") }
            print(json ? try report.renderJSON() : report.renderText())
        }
    }

    /// Places `count` forks, cycling through the launch mix in proportion to its weights,
    /// and stops at the first refusal, saying so on standard error (the report still runs).
    static func launch(_ count: Int, of profile: WorkloadProfile, into core: inout PlacementCore) throws {
        let entries = profile.launchMix.entries
        guard count > 0, !entries.isEmpty else { return }
        let total = entries.reduce(0) { $0 + $1.weight }
        var credit = [Double](repeating: 0, count: entries.count)
        for placed in 0..<count {
            for (k, entry) in entries.enumerated() { credit[k] += entry.weight / total }
            let k = credit.indices.max { credit[$0] < credit[$1] }!
            credit[k] -= 1
            do {
                _ = try core.commit(try core.reserve(pool: entries[k].pool, image: entries[k].image).id)
            } catch {
                FileHandle.standardError.write(Data("placed \(placed) of \(count) forks; then \(entries[k].image) in \(entries[k].pool): \(error)\n".utf8))
                return
            }
        }
    }
}

extension StateOptions {
    init(state: String?) {
        self.init()
        self.state = state
    }
}

/// `capacity --measured --json`: the figures used, with where each came from, beside the report.
struct MeasuredCapacity: Encodable {
    let figures: [MeasuredFigures.Figure]
    let report: CapacityReport
}
