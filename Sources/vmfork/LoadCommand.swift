import API
import ArgumentParser
import Foundation
import Load
import WorkloadProfiles

/// `vmfork load`: a workload profile's launch mix against a running host agent, with the peers.
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Drive a running host agent (vmfork serve) with a workload profile's launch mix and report latency, throughput, memory and CPU.",
        discussion: """
            Open loop (the default): launches arrive on the profile's schedule (or --rate) whatever \
            the latency, and each one's latency runs from when it was due. Closed loop: --concurrency \
            launches at a time. Each launch is a real container of the entry's image and command, kept \
            for its lifetime (× --time-scale), then removed. --peer runc / native runs the same \
            schedule with runc (an OCI bundle of the image's rootfs) or posix_spawn, in the same report.
            """
    )

    @Argument(help: "A workload profile (Profiles/*.yaml).") var profile: String
    @Option(help: "The agent's state folder (default: $VMFORK_STATE, else ./state); its socket is vmfork.sock there.") var state: String?
    @Option(help: "The agent's socket (instead of the state folder's).") var socket: String?
    @Option(help: "The agent over TCP instead, HOST:PORT (with --token).") var endpoint: String?
    @Option(help: "The bearer token for --endpoint (a token of the agent's STATE/api-token, its second field).") var token: String?
    @Option(help: "Launches per second offered (open loop; default: the profile's).") var rate: Double?
    @Option(help: "Launches at a time (closed loop), instead of a rate.") var concurrency: Int?
    @Option(help: "Seconds of arrivals (default: the profile's durationSeconds, else 10).") var duration: Double?
    @Option(help: "Seconds over which the rate climbs to its full value (default: the profile's).") var rampUp: Double?
    @Option(help: "Stop after this many launches.") var count: Int?
    @Option(help: "Multiply every lifetime by this.") var timeScale = 1.0
    @Option(help: "The seed of the arrival schedule.") var seed: UInt64 = 1
    @Flag(help: "Charge each launch to its entry's pool in the agent's placement state.") var placement = false
    @Flag(help: "Do not follow each container's output for its first bytes.") var noFirstOutput = false
    @Option(name: .customLong("ready-vms"), help: "Ready VMs per warm parent made for the run.") var readyVMs: Int?
    @Option(help: "Most launches in flight at once.") var maxInFlight = 1024
    @Option(help: "Launch threads and agent connections made before the first arrival (default: the launches due in 10 ms at the rate, at least 8; a closed loop's concurrency).") var warmLaunchers: Int?
    @Option(help: "Run the same schedule with a peer too: runc or native (repeatable).") var peer: [String] = []
    @Flag(help: "Run only the peers (the agent still names the images' root filesystems).") var peersOnly = false
    @Option(help: "Write the report as JSON to this file.") var json: String?
    @Option(help: "Write the report's charts as SVG to this file.") var svg: String?
    @Option(help: "Write a line per launch to this CSV file: its entry, and in seconds from the side's start when it was due, taken by its thread, running, first output, exited and ended, and its outcome.") var trace: String?
    @Flag(help: "No progress line.") var quiet = false

    func run() async throws {
        let loaded = try WorkloadProfile.load(path: profile)
        var settings = try LoadSettings(profile: loaded, rate: rate, concurrency: concurrency, duration: duration, rampUp: rampUp, count: count)
        settings.timeScale = timeScale
        settings.seed = seed
        settings.placement = placement
        settings.firstOutput = !noFirstOutput
        settings.readyVMs = readyVMs
        settings.maxInFlight = maxInFlight
        settings.warmLaunchers = warmLaunchers
        settings.trace = trace != nil
        settings.agent = !peersOnly
        settings.peers = try peer.map { name in
            guard let kind = PeerKind(rawValue: name) else { throw CLIError("--peer \(name) is not runc or native") }
            return kind
        }
        if peersOnly && settings.peers.isEmpty { throw CLIError("--peers-only needs at least one --peer") }
        let client = try endpoint.map { try Self.tcpClient($0, token: token) } ?? DaemonOptions(state: state, socket: socket).client
        let run = try LoadRun(profile: loaded, settings: settings, client: client)
        let showProgress = !quiet && isatty(STDERR_FILENO) != 0
        let report = try await run.run(progress: showProgress ? Self.progressLine : nil)
        if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
        if let json {
            try report.renderJSON().write(toFile: json, atomically: true, encoding: String.Encoding.utf8)
        }
        if let svg {
            try report.renderSVG().write(toFile: svg, atomically: true, encoding: String.Encoding.utf8)
        }
        if let trace {
            try run.traceCSV().write(toFile: trace, atomically: true, encoding: String.Encoding.utf8)
        }
        print(report.renderText())
    }

    /// One line on the terminal, rewritten in place while the run goes.
    @Sendable static func progressLine(_ side: String, _ p: LoadRecorder.Progress) {
        let line = "\r" + side + String(format: " %6.1f s  launched %d  finished %d  failed %d  in flight %d  exit p99 %.1f ms   ",
                                        p.seconds, p.launched, p.finished, p.failed, p.inFlight, p.exitP99Micros / 1000)
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func tcpClient(_ endpoint: String, token: String?) throws -> AgentClient {
        let parts = endpoint.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) else { throw CLIError("--endpoint \(endpoint) is not HOST:PORT") }
        return AgentClient(endpoint: .tcp(host: String(parts[0]), port: port, token: token))
    }
}

extension DaemonOptions {
    init(state: String?, socket: String?) {
        self.init()
        self.state = state
        self.socket = socket
    }
}
