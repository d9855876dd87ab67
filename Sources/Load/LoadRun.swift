import API
import Engine
import Foundation
import HostSystem
import Logging
import WorkloadProfiles

/// A load run: a profile's launch mix against a running host agent, then (when asked) the
/// same schedule for each peer, all in one report. Launches run on threads of their own with
/// the agent client's blocking calls, so a slow agent shows as latency, never as a launch the
/// runner quietly held back.
public struct LoadRun: Sendable {
    public let profile: WorkloadProfile
    public let settings: LoadSettings
    public let client: AgentClient
    let logger: Logger
    /// Each side's CPU time of this process (the runner), filled as the sides end.
    let runnerCPU = Locked<[String: Double]>([:])
    /// Each side's launch trace, in the order the sides ran (`settings.trace`).
    let traces = Locked<[(side: String, rows: [LaunchTraceRow])]>([])

    public init(profile: WorkloadProfile, settings: LoadSettings, client: AgentClient, logger: Logger = Logger(label: "vmfork.load")) throws {
        try settings.validate()
        self.profile = profile
        self.settings = settings
        self.client = client
        self.logger = logger
    }

    /// The arrivals of the run: the profile's pattern on schedule (open loop), or the mix's
    /// order for a closed loop.
    public var schedule: LoadSchedule {
        switch settings.mode {
        case .open(let rate):
            return LoadSchedule(mix: profile.launchMix, rate: rate, rampUp: settings.rampUpSeconds, duration: settings.durationSeconds,
                                count: settings.count, seed: settings.seed)
        case .closed:
            var mix = profile.launchMix
            mix.arrival = nil
            mix.burstSize = nil
            let most = settings.count ?? 1_000_000
            // One a second from 1 s on: the count, not the duration, bounds it.
            return LoadSchedule(mix: mix, rate: 1, rampUp: 0, duration: Double(most) + 1, count: most, seed: settings.seed)
        }
    }

    /// Runs every side in turn; `progress` gets each side's figures twice a second.
    public func run(progress: (@Sendable (String, LoadRecorder.Progress) -> Void)? = nil) async throws -> LoadReport {
        try await withCheckedThrowingContinuation { continuation in
            LaunchLoop.spawn { continuation.resume(with: Result { try self.runBlocking(progress: progress) }) }
        }
    }

    func runBlocking(progress: (@Sendable (String, LoadRecorder.Progress) -> Void)?) throws -> LoadReport {
        // Grown before the launches, as the engine grows its own: a growth while they run
        // held every launch thread that opened a socket for an RCU grace period (up to 28 ms
        // here). Each launch in flight holds a connection, or a peer's pipes.
        DescriptorTable.reserve(4 * settings.maxInFlight + 256)
        let images = try agentImages()
        let arrivals = schedule.arrivals
        guard !arrivals.isEmpty else { throw LoadError("the schedule is empty: rate, duration and count leave no launch") }
        var loadAverage = [Double](repeating: 0, count: 3)
        let hasLoad = getloadavg(&loadAverage, 3) == 3
        var report = LoadReport(
            profile: profile.name, mode: { if case .open = settings.mode { "open" } else { "closed" } }(),
            offeredPerSecond: { if case .open(let rate) = settings.mode { rate } else { nil } }(),
            concurrency: { if case .closed(let c) = settings.mode { c } else { nil } }(),
            arrival: profile.launchMix.arrivalPattern.rawValue, rampUpSeconds: settings.rampUpSeconds, durationSeconds: settings.durationSeconds,
            count: settings.count, timeScale: settings.timeScale, seed: settings.seed, startedAt: Date().timeIntervalSince1970,
            loadAverageBefore: hasLoad ? loadAverage[0] : nil, cores: ProcessInfo.processInfo.activeProcessorCount, sides: [])
        if settings.agent { report.sides.append(try runAgent(arrivals, images: images, progress: progress)) }
        for peer in settings.peers {
            report.sides.append(try runPeer(peer, arrivals, images: images, progress: progress))
        }
        return report
    }

    // MARK: The agent

    /// The mix's images as the agent knows them; each entry's command must run its image's program.
    func agentImages() throws -> [String: ImageRecord] {
        var images: [String: ImageRecord] = [:]
        for entry in profile.launchMix.entries where images[entry.image] == nil {
            let response = try client.send("GET", "/v1/images/\(entry.image)")
            if response.status == 404 {
                throw LoadError("image \(entry.image) of the launch mix is not on the agent (\(response.errorMessage)); "
                    + "add it with vmfork image add \(entry.image) --rootfs ROOTFS --executable PROGRAM")
            }
            guard response.status == 200 else {
                throw LoadError("the agent refused to name image \(entry.image): \(response.status) \(response.errorMessage)")
            }
            images[entry.image] = try response.decode(ImageRecord.self)
        }
        for entry in profile.launchMix.entries {
            let program = images[entry.image]!.executable
            guard let first = entry.command.first, (first as NSString).lastPathComponent == (program as NSString).lastPathComponent else {
                throw LoadError("launch mix entry \(entry.image): command \(entry.command.first ?? "(none)") is not the image's program \(program)")
            }
        }
        return images
    }

    func lifetime(_ entry: WorkloadProfile.LaunchMix.Entry) -> Duration? {
        // Scaled to nothing, a lifetime is no lifetime: the container goes once it has ended.
        settings.timeScale == 0 ? nil : entry.lifetimeSeconds.map { .nanoseconds(Int64($0 * settings.timeScale * 1e9)) }
    }

    func runAgent(_ arrivals: [LoadSchedule.Arrival], images: [String: ImageRecord],
                  progress: (@Sendable (String, LoadRecorder.Progress) -> Void)?) throws -> LoadReport.Side {
        for image in Set(profile.launchMix.entries.map(\.image)).sorted() {
            var body: [String: AnyCodable] = ["image": .string(image)]
            if let ready = settings.readyVMs { body["readyVMs"] = .int(ready) }
            let response = try client.send("POST", "/v1/parents", json: body)
            guard response.status == 201 || response.status == 409 else {
                throw LoadError("warm parent of \(image) could not be made: \(response.status) \(response.errorMessage)")
            }
        }
        waitForFullPools()
        let runLabel = "\(getpid())-\(Int(Date().timeIntervalSince1970))"
        let launches = profile.launchMix.entries.map { entry in
            AgentDriver.Launch(
                spec: ContainerSpec(image: entry.image, arguments: Array(entry.command.dropFirst()), labels: ["vmfork.load.run": runLabel],
                                    stdin: entry.stdin, pool: settings.placement ? entry.pool : nil),
                lifetime: lifetime(entry), expectedExitStatus: entry.expectedExitStatus ?? 0)
        }
        let driver = AgentDriver(client: client, launches: launches, firstOutput: settings.firstOutput, runLabel: runLabel)
        let paced = try warm(driver)
        let pid: pid_t? = if case .unixSocket(let path) = client.endpoint { EngineSampler.peerPID(socketPath: path) } else { nil }
        let recorder = LoadRecorder(windowSeconds: settings.windowSeconds, tracing: settings.trace)
        let sampler = EngineSampler(client: client, daemonPID: pid, recorder: recorder)
        let first = sampler.sample()
        sampler.start(interval: settings.sampleInterval)
        let elapsed = drive(arrivals, driver: driver, paced: paced, recorder: recorder, name: "vmfork", progress: progress)
        let samples = sampler.stop()
        keepTrace(of: recorder, side: "vmfork")
        var side = recorder.side(name: "vmfork", offeredRate: offeredRate, elapsed: elapsed)
        side.runnerCPUSeconds = runnerCPU.withLock { $0["vmfork"] }
        side.memory = [first].compactMap { $0 } + samples
        side.engine = engineFigures(samples: side.memory, finished: side.finished, meanExitSeconds: side.exit.mean / 1e6)
        return side
    }

    /// Waits (up to 20 s) until every warm parent's pool holds its ready VMs, so the run does
    /// not start while the refill still competes for the cores.
    func waitForFullPools() {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            guard let response = try? client.send("GET", "/v1/parents?sharing=false"), response.status == 200,
                  let parents = try? response.decode([ParentInfo].self) else { return }
            if parents.allSatisfy({ $0.state != "ready" || $0.readyVMsNow >= $0.policy.readyVMs * $0.parentsReady }) { return }
            LaunchLoop.sleep(until: .now + .milliseconds(50))
        }
        logger.warning("warm parents' pools were not full after 20 s; the run starts anyway")
    }

    var offeredRate: Double? { if case .open(let rate) = settings.mode { rate } else { nil } }

    func keepTrace(of recorder: LoadRecorder, side: String) {
        guard recorder.tracing else { return }
        let rows = recorder.trace()
        traces.withLock { $0.append((side, rows)) }
    }

    /// The run's launch trace as CSV (`LaunchTraceRow.csvHeader`), a line per launch of every
    /// side run so far; just the header unless `settings.trace`.
    public func traceCSV() -> String {
        var text = LaunchTraceRow.csvHeader + "\n"
        for (side, rows) in traces.withLock({ $0 }) {
            for row in rows { text += row.csvLine(side: side) + "\n" }
        }
        return text
    }

    /// A side's launch threads and the driver's connections, made before its recorder starts
    /// (`LoadSettings.launchers` of each): a launch that finds neither made waits for them.
    /// The open loop's threads (`PacedLaunches`) last the run; a closed loop makes its own.
    func warm(_ driver: any LaunchDriver) throws -> PacedLaunches? {
        let launchers = settings.launchers
        try driver.prepare(launchers: launchers)
        guard case .open = settings.mode else { return nil }
        return PacedLaunches(warm: launchers)
    }

    /// Drives one side with a progress ticker; returns the seconds it took.
    func drive(_ arrivals: [LoadSchedule.Arrival], driver: any LaunchDriver, paced: PacedLaunches?, recorder: LoadRecorder, name: String,
               progress: (@Sendable (String, LoadRecorder.Progress) -> Void)?) -> Double {
        let ticking = Locked(true)
        if let progress {
            LaunchLoop.spawn {
                while ticking.withLock({ $0 }) {
                    progress(name, recorder.progress())
                    LaunchLoop.sleep(until: .now + .milliseconds(500))
                }
            }
        }
        let cpuBefore = Self.ownCPUSeconds()
        let mode: LaunchLoop.Mode = if case .closed(let c) = settings.mode { .closed(concurrency: c) } else { .open }
        LaunchLoop.drive(arrivals, mode: mode, duration: settings.durationSeconds, maxInFlight: settings.maxInFlight,
                         drainSeconds: settings.drainSeconds, driver: driver, recorder: recorder, paced: paced)
        ticking.withLock { $0 = false }
        let elapsed = recorder.seconds(.now)
        runnerCPU.withLock { $0[name] = Self.ownCPUSeconds() - cpuBefore }
        progress?(name, recorder.progress())
        logger.debug("load side done", metadata: ["side": "\(name)", "seconds": "\(elapsed)"])
        return elapsed
    }

    func engineFigures(samples: [LoadReport.MemorySample], finished: Int, meanExitSeconds: Double) -> LoadReport.EngineFigures {
        let cpu: Double? = if let a = samples.first?.engineCPUSeconds, let b = samples.last?.engineCPUSeconds { b - a } else { nil }
        let cpuPerLaunch = cpu.flatMap { finished > 0 ? $0 * 1e6 / Double(finished) : nil }
        func median(_ values: [Double]) -> Double? { values.isEmpty ? nil : values.sorted()[values.count / 2] }
        var images: [String: LoadReport.ImageFigures] = [:]
        for image in Set(profile.launchMix.entries.map(\.image)) {
            let entries = profile.launchMix.entries.filter { $0.image == image }
            let weight = entries.reduce(0) { $0 + $1.weight }
            // A launch's lifetime: its entry's, or (for one that runs to its end) the measured time to exit.
            let lifetime = entries.reduce(0) { $0 + $1.weight * ($1.lifetimeSeconds ?? meanExitSeconds) } / max(weight, 1e-9)
            let privateBytes = median(samples.compactMap { $0.privatePerChildByImage[image].map(Double.init) })
            images[image] = LoadReport.ImageFigures(privatePerChildKiB: privateBytes.map { Int(($0 / 1024).rounded(.up)) },
                                                    cpuMicrosPerLaunch: cpuPerLaunch, meanLifetimeSeconds: lifetime > 0 ? lifetime : nil)
        }
        return LoadReport.EngineFigures(
            cpuSeconds: cpu, cpuMicrosPerLaunch: cpuPerLaunch,
            poolMisses: max(0, (samples.last?.poolMisses ?? 0) - (samples.first?.poolMisses ?? 0)),
            privatePerChildBytes: median(samples.compactMap(\.privatePerChildBytes)), sharedPerChildBytes: median(samples.compactMap(\.sharedPerChildBytes)),
            images: images)
    }

    /// User + system CPU of this process so far.
    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    // MARK: Peers

    func runPeer(_ kind: PeerKind, _ arrivals: [LoadSchedule.Arrival], images: [String: ImageRecord],
                 progress: (@Sendable (String, LoadRecorder.Progress) -> Void)?) throws -> LoadReport.Side {
        let folder = settings.workFolder.appendingPathComponent("vmfork-load-\(kind.rawValue)-\(getpid())", isDirectory: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        if kind == .runc, !FileManager.default.isExecutableFile(atPath: settings.runcPath) {
            throw LoadError("runc is not at \(settings.runcPath) (Debian's package runc; scripts/setup.sh installs it)")
        }
        var launches: [PeerDriver.Launch] = []
        for (k, entry) in profile.launchMix.entries.enumerated() {
            let image = images[entry.image]!
            let arguments = Array(entry.command.dropFirst())
            switch kind {
            case .native:
                // The image's program from its root filesystem, run as a plain process.
                launches.append(PeerDriver.Launch(path: image.rootfs + image.executable, arguments: arguments, environment: image.environment,
                                                  stdin: entry.stdin, lifetime: lifetime(entry), expectedExitStatus: entry.expectedExitStatus ?? 0))
            case .runc:
                let bundle = try OCIBundle(copying: image.rootfs, into: folder, name: "entry-\(k)", arguments: [image.executable] + arguments,
                                           environment: image.environment)
                launches.append(PeerDriver.Launch(path: settings.runcPath, arguments: ["run", "--bundle", bundle.folder.path],
                                                  environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], stdin: entry.stdin, lifetime: lifetime(entry),
                                                  expectedExitStatus: entry.expectedExitStatus ?? 0))
            }
        }
        let driver = PeerDriver(kind: kind, launches: launches, runcPath: settings.runcPath)
        let paced = try warm(driver)
        let recorder = LoadRecorder(windowSeconds: settings.windowSeconds, tracing: settings.trace)
        let elapsed = drive(arrivals, driver: driver, paced: paced, recorder: recorder, name: kind.rawValue, progress: progress)
        keepTrace(of: recorder, side: kind.rawValue)
        var side = recorder.side(name: kind.rawValue, offeredRate: offeredRate, elapsed: elapsed)
        side.runnerCPUSeconds = runnerCPU.withLock { $0[kind.rawValue] }
        return side
    }
}

/// A JSON value of a request body built in code (a string or an integer).
enum AnyCodable: Encodable, Sendable {
    case string(String)
    case int(Int)

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        }
    }
}
