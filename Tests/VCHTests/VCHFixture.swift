import API
import Foundation
import TestSupport
import Testing

/// A real host agent (`vmfork serve`) with a busybox image, a simulated host and resource
/// pools in its placement state, and real VCHs (`vmfork vch serve`) in front of it, driven
/// by the real docker CLI with a HOME and DOCKER_CONFIG of its own.
final class VCHFixture: @unchecked Sendable {
    // @unchecked: the processes are only touched by the test that owns the fixture.
    let folder: URL
    let rootfs: URL
    private var daemon: Process?
    private var vchs: [String: Process] = [:]

    static var binary: String { HostFacts.productsFolder.appendingPathComponent("vmfork").path }
    static let docker = "/usr/local/bin/docker"
    static var dockerAvailable: Bool { FileManager.default.isExecutableFile(atPath: docker) }

    var state: URL { folder.appendingPathComponent("state") }
    var agent: AgentClient { AgentClient(socketPath: state.appendingPathComponent(AgentDaemon.socketName).path) }
    var dockerConfig: URL { folder.appendingPathComponent("docker-config") }

    /// Starts the agent with image `busybox`, host h1 (4 GiB, 2 cores) and the given pools
    /// (`agentExtra`: more options of `vmfork serve`).
    init(pools: [String] = ["dev"], agentExtra: [String] = []) throws {
        folder = try HostFacts.makeTemporaryFolder("vch")
        rootfs = try BusyboxRootfs.make()
        try FileManager.default.createDirectory(at: dockerConfig, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        daemon = try launch(["serve", "--state", state.path, "--stop-grace", "2"] + agentExtra, log: "agent.log")
        try waitUntil("the host agent answers") { (try? self.agent.send("GET", "/v1/_ping"))?.status == 200 }
        try post("/v1/images", ["name": "busybox", "rootfs": rootfs.path, "executable": "/bin/busybox", "environment": ["PATH=/bin"]])
        try post("/v1/placement/hosts", ["name": "h1", "cpuCores": 2, "nodeMemoryKiB": [4_194_304]])
        try post("/v1/placement/images", ["name": "busybox", "parentMemoryKiB": 65536, "growthPerChildKiB": 1024, "cpuMHzPerChild": 10])
        // A warm parent of busybox on h1 (charged to the root pool): forks are warm, charged the per-child cost.
        try post("/v1/placement/warm-parents", ["host": "h1", "image": "busybox", "node": 0])
        for pool in pools { try post("/v1/placement/pools", ["name": pool, "memoryReservationKiB": 524_288, "memoryLimitKiB": 1_048_576]) }
    }

    deinit {
        for process in vchs.values { stop(process) }
        if let daemon { stop(daemon) }
        try? FileManager.default.removeItem(at: rootfs)
        try? FileManager.default.removeItem(at: folder)
    }

    func post(_ path: String, _ body: [String: Any]) throws {
        let response = try agent.send("POST", path, body: try JSONSerialization.data(withJSONObject: body))
        guard response.status < 300 else { throw AgentClient.ClientError(description: "POST \(path): \(response.status) \(response.text)") }
    }

    /// Starts VCH `name` for `pool` on a Unix socket (`extra`: more options of `vch serve`); returns the socket's path.
    @discardableResult
    func startVCH(_ name: String, pool: String, extra: [String] = []) throws -> String {
        let socket = folder.appendingPathComponent("\(name).sock").path
        vchs[name] = try launch(["vch", "serve", "--name", name, "--pool", pool, "--listen", "unix://\(socket)", "--state", state.path] + extra,
                                log: "vch-\(name).log")
        try waitUntil("VCH \(name) answers") { (try? AgentClient(socketPath: socket).send("GET", "/_ping"))?.status == 200 }
        return socket
    }

    /// Stops VCH `name` (SIGTERM) and returns its exit status.
    func stopVCH(_ name: String) -> Int32 {
        guard let process = vchs.removeValue(forKey: name) else { return -1 }
        stop(process)
        return process.terminationStatus
    }

    /// Starts VCH `name` on TCP with a token file; returns the port and the token.
    func startTCPVCH(_ name: String, pool: String, extra: [String] = []) throws -> (port: Int, token: String) {
        let port = HostFacts.freeTCPPort()
        let tokenFile = folder.appendingPathComponent("\(name).token").path
        vchs[name] = try launch(["vch", "serve", "--name", name, "--pool", pool, "--listen", "tcp://127.0.0.1:\(port)", "--token-file", tokenFile,
                                 "--state", state.path] + extra, log: "vch-\(name).log")
        try waitUntil("VCH \(name) listens") { FileManager.default.fileExists(atPath: tokenFile) && (try? AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: nil)).send("GET", "/_ping")) != nil }
        let token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return (port, token)
    }

    func log(_ name: String) -> String { (try? String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)) ?? "" }

    /// The docker CLI's environment: nothing from the user's own configuration.
    var dockerEnvironment: [String: String] {
        ["HOME": folder.path, "DOCKER_CONFIG": dockerConfig.path, "PATH": "/usr/local/bin:/usr/bin:/bin"]
    }

    /// Runs `docker -H unix://SOCKET ARGS` and returns its status and output.
    func docker(_ socket: String, _ arguments: [String], stdin: Data? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        try dockerHost("unix://\(socket)", arguments, stdin: stdin)
    }

    func dockerHost(_ host: String, _ arguments: [String], stdin: Data? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        try HostFacts.run(Self.docker, ["-H", host] + arguments, stdin: stdin ?? Data(), environment: dockerEnvironment)
    }

    /// `docker ARGS` with its stdout and stderr on one pipe, as a terminal shows them: the
    /// order in which the CLI wrote the two.
    func dockerCombined(_ socket: String, _ arguments: [String]) throws -> String {
        try HostFacts.run(Self.docker, ["-H", "unix://\(socket)"] + arguments, environment: dockerEnvironment, combined: true).stdout
    }

    /// Starts `docker ARGS` in the background, its output to a file; `finish` stops it (SIGTERM
    /// unless it ended) and returns what it printed.
    func dockerInBackground(_ socket: String, _ arguments: [String]) throws -> BackgroundCLI {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.docker)
        process.arguments = ["-H", "unix://\(socket)"] + arguments
        process.environment = dockerEnvironment
        let output = folder.appendingPathComponent("bg-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return BackgroundCLI(process: process, output: output)
    }

    private func launch(_ arguments: [String], log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = arguments
        let path = folder.appendingPathComponent(log)
        _ = FileManager.default.createFile(atPath: path.path, contents: nil)
        let handle = try FileHandle(forWritingTo: path)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    private func stop(_ process: Process) {
        if !HostFacts.terminate(process) {
            Issue.record("\(process.arguments?.prefix(2).joined(separator: " ") ?? "a process") did not exit within 30 s of SIGTERM; killed")
        }
    }

    func waitUntil(_ what: String, timeout: TimeInterval = 20, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return }
            usleep(20_000)
        }
        throw AgentClient.ClientError(description: "timed out waiting until \(what): agent log \(log("agent.log")) VCH logs \(vchs.keys.map { log("vch-\($0).log") })")
    }
}

final class DataBox: @unchecked Sendable {
    // @unchecked: written once by the reader before it signals the semaphore; read after the wait.
    var data = Data()
}

struct BackgroundCLI {
    let process: Process
    let output: URL

    var text: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

    /// Waits up to `grace` seconds for the command to end by itself, then stops it.
    func finish(grace: TimeInterval = 0) -> String {
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
        return text
    }
}
