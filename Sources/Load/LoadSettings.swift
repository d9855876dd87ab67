import Foundation
import WorkloadProfiles

/// How a load run goes: the profile's figures, with the command line's overrides.
public struct LoadSettings: Sendable {
    public enum Mode: Sendable, Equatable {
        /// Arrivals on schedule at this many launches per second, whatever the latency.
        case open(rate: Double)
        /// This many launches at a time, each sent when one before it is over.
        case closed(concurrency: Int)
    }

    public var mode: Mode
    public var durationSeconds: Double
    public var rampUpSeconds: Double
    public var count: Int?
    /// Lifetimes are multiplied by this (0.01: a 60 s container lives 0.6 s; 0: lifetimes are
    /// ignored, each container is removed once it has ended, as `docker run --rm` does).
    public var timeScale = 1.0
    public var seed: UInt64 = 1
    /// Charge each launch to its entry's pool in the agent's placement state.
    public var placement = false
    /// Follow each container's output for its first bytes (one more stream per launch).
    public var firstOutput = true
    public var maxInFlight = 1024
    /// Launch threads (and the agent's connections) made before the first arrival; nil: as
    /// `launchers` picks.
    public var warmLaunchers: Int?
    /// Keep each launch's moments for a trace (`LoadRun.traceCSV`, `vmfork load --trace`).
    public var trace = false
    public var sampleInterval = 1.0
    public var windowSeconds = 1.0
    /// Ready VMs per warm parent made for the run (the agent's default when nil).
    public var readyVMs: Int?
    public var peers: [PeerKind] = []
    /// Run the vmfork side (through the agent); false runs the peers alone (the agent still names the images).
    public var agent = true
    /// How long launches still in flight may take after the last arrival before they are ended.
    public var drainSeconds = 30.0
    public var runcPath = "/usr/sbin/runc"
    /// Where the runc peer's bundles go (removed afterwards).
    public var workFolder = FileManager.default.temporaryDirectory

    /// The profile's rate, duration and ramp-up unless given; bad values are named.
    public init(profile: WorkloadProfile, rate: Double? = nil, concurrency: Int? = nil, duration: Double? = nil, rampUp: Double? = nil,
                count: Int? = nil) throws {
        let mix = profile.launchMix
        if let concurrency {
            guard rate == nil else { throw LoadError("give --rate (open loop) or --concurrency (closed loop), not both") }
            guard concurrency >= 1 else { throw LoadError("--concurrency \(concurrency) must be at least 1") }
            mode = .closed(concurrency: concurrency)
        } else {
            let chosen = rate ?? mix.launchesPerSecond
            guard chosen > 0, chosen.isFinite else { throw LoadError("launch rate \(chosen) must be positive (the profile's launchesPerSecond or --rate)") }
            mode = .open(rate: chosen)
        }
        durationSeconds = duration ?? mix.durationSeconds ?? 10
        guard durationSeconds > 0, durationSeconds.isFinite else { throw LoadError("duration \(durationSeconds) must be positive") }
        rampUpSeconds = min(rampUp ?? mix.rampUpSeconds ?? 0, durationSeconds)
        guard rampUpSeconds >= 0 else { throw LoadError("ramp-up \(rampUpSeconds) must not be negative") }
        if let count, count < 1 { throw LoadError("--count \(count) must be at least 1") }
        self.count = count
        guard !mix.entries.isEmpty else { throw LoadError("profile \(profile.name) has no launch mix entries") }
    }

    /// Launches that are due in 10 ms at the full rate (the launches in flight when each takes
    /// 10 ms), at least 8; a closed loop's concurrency. At most `maxInFlight`.
    public var launchers: Int {
        if let warmLaunchers { return min(warmLaunchers, maxInFlight) }
        return switch mode {
        case .open(let rate): min(maxInFlight, max(8, Int((rate * 0.010).rounded(.up))))
        case .closed(let concurrency): min(maxInFlight, concurrency)
        }
    }

    public func validate() throws {
        guard timeScale >= 0, timeScale.isFinite else { throw LoadError("--time-scale \(timeScale) must be zero or positive") }
        guard maxInFlight >= 1 else { throw LoadError("--max-in-flight \(maxInFlight) must be at least 1") }
        if let warmLaunchers, warmLaunchers < 0 { throw LoadError("--warm-launchers \(warmLaunchers) must not be negative") }
        guard sampleInterval > 0 else { throw LoadError("sample interval \(sampleInterval) must be positive") }
        if let readyVMs, !(0...256).contains(readyVMs) { throw LoadError("--ready-vms \(readyVMs) is not 0-256") }
    }
}
