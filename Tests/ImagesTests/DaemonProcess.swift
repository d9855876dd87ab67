import API
import Foundation
import TestSupport
import Testing

/// `vmfork serve` on a temporary state folder, as a separate process (the image tests' daemon),
/// with a client on its socket once it answers. `stop` sends SIGTERM and waits.
final class DaemonProcess {
    let state: URL
    let binary = HostFacts.productsFolder.appendingPathComponent("vmfork").path
    let client: AgentClient
    private let process = Process()

    init(_ name: String) async throws {
        state = try HostFacts.makeTemporaryFolder(name)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--state", state.path, "--stop-grace", "1"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        client = AgentClient(socketPath: state.appendingPathComponent(AgentDaemon.socketName).path)
        for _ in 0..<200 where (try? await client.send("GET", "/v1/_ping"))?.status != 200 { try await Task.sleep(for: .milliseconds(20)) }
    }

    /// The command-line tool on this daemon's state: `arguments` then `--state STATE`.
    func cli(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try HostFacts.run(binary, arguments + ["--state", state.path])
    }

    func stop() {
        if !HostFacts.terminate(process) { Issue.record("the daemon did not exit within 30 s of SIGTERM; killed") }
        try? FileManager.default.removeItem(at: state)
    }
}
