import WorkloadProfiles

/// A load run's measured figures put in place of a profile's assumed ones, for the capacity
/// planner: each image's private memory per child (the engine's accounting) and its CPU per
/// launch spread over the launch's lifetime. Each figure says where it came from.
public struct MeasuredFigures: Sendable {
    public struct Figure: Codable, Sendable, Equatable {
        public var image: String
        /// "growthPerChildKiB" or "cpuMHzPerChild", as the profile names them.
        public var name: String
        public var value: Int
        /// "measured" or "profile".
        public var source: String
        public var note: String
    }

    public let profile: WorkloadProfile
    public let figures: [Figure]

    public init(report: LoadReport, reportPath: String, profile original: WorkloadProfile) throws {
        guard let side = report.sides.first(where: { $0.name == "vmfork" }), let engine = side.engine else {
            throw LoadError("load report \(reportPath) has no vmfork side with the engine's figures")
        }
        var profile = original
        var figures: [Figure] = []
        let run = "\(reportPath), \(report.profile) at \(report.offeredPerSecond.map { LoadReport.number($0) + "/s" } ?? "concurrency \(report.concurrency ?? 0)")"
        for k in profile.images.indices {
            let image = profile.images[k]
            let measured = engine.images[image.name]
            if let kib = measured?.privatePerChildKiB {
                profile.images[k].growthPerChildKiB = kib
                figures.append(Figure(image: image.name, name: "growthPerChildKiB", value: kib, source: "measured",
                                      note: "median private memory per child in the engine's accounting (\(run))"))
            } else {
                figures.append(Figure(image: image.name, name: "growthPerChildKiB", value: image.growthPerChildKiB, source: "profile",
                                      note: measured == nil ? "the run did not launch \(image.name)" : "no sample held a live child of \(image.name)"))
            }
            let clock = profile.fleet.hostGroups.first { $0.warmImages.contains(image.name) }?.cpuMHzPerCore ?? WorkloadProfile.defaultCPUMHzPerCore
            if let micros = measured?.cpuMicrosPerLaunch, let lifetime = measured?.meanLifetimeSeconds, lifetime > 0 {
                let mhz = max(1, Int((micros / 1e6 * Double(clock) / lifetime).rounded(.up)))
                profile.images[k].cpuMHzPerChild = mhz
                figures.append(Figure(image: image.name, name: "cpuMHzPerChild", value: mhz, source: "measured",
                                      note: String(format: "engine CPU %.0f µs per launch over a %.3g s lifetime at %d MHz per core (%@)", micros, lifetime, clock, run)))
            } else {
                figures.append(Figure(image: image.name, name: "cpuMHzPerChild", value: image.cpuMHzPerChild, source: "profile",
                                      note: measured == nil ? "the run did not launch \(image.name)" : "the run could not read the engine's CPU time"))
            }
        }
        self.profile = profile
        self.figures = figures
    }

    public func renderText() -> String {
        (["Figures (measured: from the load run; profile: the profile's own guess):"] + figures.map {
            "  \($0.image) \($0.name) = \($0.value)  [\($0.source)] \($0.note)"
        }).joined(separator: "\n")
    }
}
