import Foundation

/// A load run's report: the vmfork side (with the engine's own memory and CPU accounting)
/// and the peers run on the same schedule. Written as JSON (`--json`), read back by
/// `vmfork capacity --measured`, rendered as a table and as SVG charts.
public struct LoadReport: Codable, Sendable {
    public static let formatVersion = 1

    public var version = LoadReport.formatVersion
    public var profile: String
    /// "open" (arrivals on schedule at `offeredPerSecond`) or "closed" (`concurrency` launches at a time).
    public var mode: String
    public var offeredPerSecond: Double?
    public var concurrency: Int?
    public var arrival: String
    public var rampUpSeconds: Double
    public var durationSeconds: Double
    public var count: Int?
    public var timeScale: Double
    public var seed: UInt64
    /// When the run began (seconds since 1970) and on what machine state.
    public var startedAt: Double
    public var loadAverageBefore: Double?
    public var cores: Int
    public var sides: [Side]

    /// One runner's figures: vmfork through the agent, or a peer (runc, native posix_spawn).
    public struct Side: Codable, Sendable {
        public var name: String
        public var offeredPerSecond: Double?
        public var elapsedSeconds: Double
        /// Finished launches per second over the run.
        public var achievedPerSecond: Double
        /// Every launch is one of finished or failed: launched = finished + failed.
        public var launched: Int
        public var finished: Int
        public var failed: Int
        /// Failed launches by kind (LoadErrorKind's raw values).
        public var errors: [String: Int]
        public var errorSamples: [ErrorSample]
        public var mostInFlight: Int
        /// Arrivals sent late because the in-flight cap was reached (JSON name kept).
        public var schedulerStalls: Int
        /// Microseconds from the launch being due until it ran (vmfork: the start call answered).
        public var running: LatencySummary
        /// ... until its first output was seen.
        public var firstOutput: LatencySummary
        /// ... until it exited (not recorded for one removed at the end of its lifetime).
        public var exit: LatencySummary
        public var windows: [WindowFigures]
        /// The engine's memory over the run (vmfork only).
        public var memory: [MemorySample]
        public var engine: EngineFigures?
        /// The load runner's own CPU time over this side (it shares the machine's cores).
        public var runnerCPUSeconds: Double?
    }

    public struct ErrorSample: Codable, Sendable, Equatable {
        public var kind: LoadErrorKind
        public var message: String
        public var atSeconds: Double
    }

    /// One window of the run: what was offered in it, what finished in it, and the latency of
    /// the launches due in it.
    public struct WindowFigures: Codable, Sendable {
        public var startSeconds: Double
        public var offeredPerSecond: Double
        public var launchedPerSecond: Double
        public var achievedPerSecond: Double
        public var failedPerSecond: Double
        public var exit: LatencySummary
        public var running: LatencySummary
    }

    /// The engine's own accounting of its warm-parent families at one moment (GET /v1/parents).
    public struct MemorySample: Codable, Sendable {
        public var atSeconds: Double
        /// Children the families hold now.
        public var children: Int
        /// Memory the children own privately (copy-on-write copies), all together.
        public var privateBytes: Int
        /// Memory the children share with their parents (median per child × children).
        public var sharedBytes: Int
        public var parentBytes: Int
        public var poolMisses: Int
        public var readyVMs: Int
        /// The engine's CPU time so far (user + system of the daemon), when it could be read.
        public var engineCPUSeconds: Double?
        /// Per image: the median private memory of its children (the largest over its families).
        public var privatePerChildByImage: [String: Int]

        public var privatePerChildBytes: Double? { children > 0 ? Double(privateBytes) / Double(children) : nil }
        public var sharedPerChildBytes: Double? { children > 0 ? Double(sharedBytes) / Double(children) : nil }
    }

    /// What the engine spent on the run, per image where it applies.
    public struct EngineFigures: Codable, Sendable {
        /// The daemon's CPU time over the run (user + system, all its threads); nil when the
        /// daemon's process could not be found (a TCP endpoint).
        public var cpuSeconds: Double?
        public var cpuMicrosPerLaunch: Double?
        /// Forks that found their pool empty and built a VM inline, during the run.
        public var poolMisses: Int
        /// Private memory per live child, the median over the samples that had children.
        public var privatePerChildBytes: Double?
        public var sharedPerChildBytes: Double?
        /// Per image: the figures `vmfork capacity --measured` uses.
        public var images: [String: ImageFigures]
    }

    public struct ImageFigures: Codable, Sendable, Equatable {
        public var privatePerChildKiB: Int?
        public var cpuMicrosPerLaunch: Double?
        public var meanLifetimeSeconds: Double?
    }

    public func renderJSON() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    public static func load(path: String) throws -> LoadReport {
        guard let data = FileManager.default.contents(atPath: path) else { throw LoadError("load report \(path) cannot be read") }
        do {
            let report = try JSONDecoder().decode(LoadReport.self, from: data)
            guard report.version == formatVersion else { throw LoadError("load report \(path): version \(report.version) is not \(formatVersion)") }
            return report
        } catch let error as LoadError {
            throw error
        } catch {
            throw LoadError("load report \(path) is not a load run's JSON (vmfork load --json): \(error)")
        }
    }
}
