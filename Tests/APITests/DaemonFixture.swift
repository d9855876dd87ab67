import API
import Engine
import Foundation
import TestSupport
import Testing

/// A real `vmfork serve` on a temporary state folder, started as its own process, with a
/// busybox rootfs to register as an image. `stop()` sends SIGTERM and returns the exit status.
final class DaemonFixture: @unchecked Sendable {
    // @unchecked: the process handle is only touched by the test that owns the fixture.
    let state: URL
    let rootfs: URL
    /// The TCP port it listens on with `tcp` (another is tried when a start finds it taken).
    private(set) var tcpPort: Int?
    private(set) var process: Process?
    let log: URL

    static var binary: String { HostFacts.productsFolder.appendingPathComponent("vmfork").path }

    init(tcp: Bool = false, state: URL? = nil, rootfs: URL? = nil) throws {
        self.state = try state ?? HostFacts.makeTemporaryFolder("agent-state")
        self.rootfs = try rootfs ?? BusyboxRootfs.make()
        tcpPort = tcp ? Self.freePort() : nil
        log = self.state.appendingPathComponent("daemon-\(UUID().uuidString).log")
    }

    var socketPath: String { state.appendingPathComponent(AgentDaemon.socketName).path }
    var client: AgentClient { AgentClient(socketPath: socketPath) }

    /// Starts the daemon and waits until it answers on its socket.
    func start(extra: [String] = []) throws {
        // A TCP port free when picked may be taken before the daemon binds it (tests run in
        // parallel): a daemon that exits at once is started again on another.
        for attempt in 0..<3 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.binary)
            process.arguments = ["serve", "--state", state.path, "--stop-grace", "2"] + (tcpPort.map { ["--listen", "127.0.0.1:\($0)"] } ?? []) + extra
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            self.process = process
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline {
                if let response = try? client.send("GET", "/v1/_ping"), response.status == 200 { return }
                if !process.isRunning { break }
                usleep(20_000)
            }
            guard !process.isRunning, tcpPort != nil, attempt < 2, daemonLog.lowercased().contains("in use") else { break }
            tcpPort = Self.freePort()
        }
        throw AgentClient.ClientError(description: "the daemon did not start: \(daemonLog)")
    }

    static func freePort() -> Int { HostFacts.freeTCPPort() }

    var daemonLog: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// SIGTERM; waits for the daemon to exit and returns its status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM) -> Int32 {
        guard let process else { return -1 }
        let ended = HostFacts.terminate(process, signal: signal)
        if !ended { Issue.record("the daemon did not exit within 30 s of signal \(signal); killed") }
        self.process = nil
        return process.terminationStatus
    }

    deinit {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // Workers outlive their daemon by design: the test's own go with its state folder.
        for pid in Self.workers(of: state.path) { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(at: rootfs)
        try? FileManager.default.removeItem(at: state)
    }

    /// Worker processes serving the state folder at `path` (their command line names it).
    static func workers(of path: String) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry),
                  let line = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/cmdline")) else { return nil }
            let words = line.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return words.contains("worker") && words.contains(where: { $0.hasPrefix(path) }) ? pid : nil
        }
    }

    /// Registers the busybox rootfs as image `busybox`.
    func addBusybox(_ client: AgentClient) throws {
        let response = try client.send("POST", "/v1/images", json: ImageBody(name: "busybox", rootfs: rootfs.path, executable: "/bin/busybox",
                                                                             environment: ["PATH=/bin"]))
        guard response.status == 201 else { throw AgentClient.ClientError(description: "image add: \(response.status) \(response.text)") }
    }

    /// A placement host for busybox (a child costs 1 MiB) and a pool `name` with room for one.
    func addPoolWithRoomForOne(_ client: AgentClient, name: String) throws {
        for (path, body) in [("/v1/placement/hosts", #"{"name":"h1","cpuCores":2,"nodeMemoryKiB":[4194304]}"#),
                             ("/v1/placement/images", #"{"name":"busybox","parentMemoryKiB":65536,"growthPerChildKiB":1024,"cpuMHzPerChild":10}"#),
                             ("/v1/placement/warm-parents", #"{"host":"h1","image":"busybox","node":0}"#),
                             ("/v1/placement/pools", "{\"name\":\"\(name)\",\"memoryLimitKiB\":1536}")] {
            let made = try client.send("POST", path, body: Data(body.utf8))
            guard made.status == 201 else { throw AgentClient.ClientError(description: "\(path): \(made.status) \(made.text)") }
        }
    }

    struct ImageBody: Codable, Sendable {
        var name: String
        var rootfs: String
        var executable: String
        var environment: [String]
    }

    func events(_ client: AgentClient, type: String? = nil) throws -> [[String: Any]] {
        let response = try client.send("GET", "/v1/events" + (type.map { "?type=\($0)" } ?? ""))
        return (try JSONSerialization.jsonObject(with: response.body) as? [[String: Any]]) ?? []
    }
}

extension AgentClient {
    /// One figure of the agent's `/metrics` now (a metric without labels; 0 when absent).
    func metric(_ name: String) throws -> Double {
        let text = try send("GET", "/metrics").text
        return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
    }
}
