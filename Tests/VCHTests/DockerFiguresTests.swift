import API
import Engine
import Foundation
import TestSupport
import Testing

/// `docker top` and `docker stats` with the real docker CLI: a container's process VMs and
/// its memory as the host kernel accounts it, the same figures the host agent reports.
@Suite(.serialized, .enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable && VCHFixture.dockerAvailable, "needs /dev/kvm, busybox-static and the docker CLI"))
struct DockerFiguresTests {
    /// A container that forks: its first process runs a loop, its child executes /bin/sh.
    static let forker = ["sh", "-c", "/bin/sh -c 'while true; do :; done' & while true; do :; done"]

    @Test func topShowsTheProcessVMs() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        #expect(try fixture.docker(socket, ["run", "-d", "--name", "forker", "busybox"] + Self.forker).status == 0)
        var rows: [[String]] = []
        // Until the child has executed /bin/sh (just after its fork it still shows its parent's command).
        try fixture.waitUntil("the child process runs /bin/sh") {
            let top = (try? fixture.docker(socket, ["top", "forker"]))?.stdout ?? ""
            rows = top.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
            return rows.count == 3 && rows.contains { $0.count > 3 && $0[3...].joined(separator: " ") == "/bin/sh -c while true; do :; done" }
        }
        #expect(rows[0] == ["PID", "PPID", "STATE", "CMD"], "\(rows)")
        let first = try #require(rows.first { $0.count > 3 && $0[3...].joined(separator: " ") == "/bin/busybox " + Self.forker.joined(separator: " ") }, "\(rows)")
        let child = try #require(rows.first { $0.count > 3 && $0[3...].joined(separator: " ") == "/bin/sh -c while true; do :; done" }, "\(rows)")
        #expect(child[1] == first[0] && child[2] == "running" && first[2] == "running", "the child's parent is the first process: \(rows)")
        // The same as the agent's own report.
        let id = try fixture.docker(socket, ["inspect", "-f", "{{.Id}}", "forker"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let processes = try fixture.agent.send("GET", "/v1/containers/\(id)/processes").decode([ContainerProcess].self)
        #expect(processes.map { ["\($0.pid)", "\($0.parentPid)", $0.state] } == rows.dropFirst().map { Array($0.prefix(3)) })
        // ps options it cannot honour are refused by name.
        let options = try fixture.docker(socket, ["top", "forker", "-o", "pid,rss"])
        #expect(options.status != 0 && options.stderr.contains("top with ps options \"-o pid,rss\" is not supported"), "\(options.stderr)")
        #expect(try fixture.docker(socket, ["rm", "-f", "forker"]).status == 0)
        let gone = try fixture.agent.send("GET", "/v1/containers/\(id)/processes")
        #expect(gone.status == 404)
    }

    @Test func statsShowTheMemoryTheAgentAccounts() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        #expect(try fixture.docker(socket, ["run", "-d", "--name", "forker", "--memory", "32m", "busybox"] + Self.forker).status == 0)
        let id = try fixture.docker(socket, ["inspect", "-f", "{{.Id}}", "forker"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try fixture.waitUntil("the child process runs") {
            ((try? fixture.agent.send("GET", "/v1/containers/\(id)/stats").decode(ContainerStats.self))?.processes ?? 0) == 2
        }
        // The container keeps running (its shell's pages change), so docker's reading is
        // checked against the agent's readings just before and just after it.
        let before = try #require(try fixture.agent.send("GET", "/v1/containers/\(id)/stats").decode(ContainerStats.self).memory)
        let stats = try fixture.docker(socket, ["stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}|{{.PIDs}}", "forker"])
        #expect(stats.status == 0, "\(stats.stderr)")
        let agent = try fixture.agent.send("GET", "/v1/containers/\(id)/stats").decode(ContainerStats.self)
        let memory = try #require(agent.memory)
        let low = Double(min(before.privateBytes, memory.privateBytes)), high = Double(max(before.privateBytes, memory.privateBytes))
        let fields = stats.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|").map(String.init)
        #expect(fields.count == 3 && fields[0] == "forker" && fields[2] == "2", "\(stats.stdout)")
        // "1.2MiB / 64MiB": the pages it owns, against its two process VMs' guest memory.
        let usage = try #require(fields[1].firstMatch(of: /^([0-9.]+)(KiB|MiB|B) \/ ([0-9.]+)MiB$/), "\(fields[1])")
        let scale = usage.2 == "MiB" ? 1 << 20 : usage.2 == "KiB" ? 1 << 10 : 1
        let shown = Double(usage.1)! * Double(scale)
        let tolerance = max(0.02 * high, 64 * 1024)
        #expect(shown >= low - tolerance && shown <= high + tolerance, "docker \(fields[1]), agent before \(before), after \(memory)")
        #expect(Double(usage.3) == 64 && memory.limitBytes == 64 << 20, "\(fields[1])")
        #expect(memory.privateBytes > 0 && memory.sharedBytes > 0 && memory.residentBytes >= memory.privateBytes, "\(memory)")
        // The JSON as the CLI gets it: Docker's shape, the VMFork figures in memory_stats.stats.
        let raw = try AgentClient(socketPath: socket).send("GET", "/v1.43/containers/forker/stats?stream=false")
        let object = try #require(try JSONSerialization.jsonObject(with: raw.body) as? [String: Any])
        let memoryStats = try #require(object["memory_stats"] as? [String: Any])
        #expect((memoryStats["stats"] as? [String: Int])?["shared_bytes"] != nil && (object["pids_stats"] as? [String: Int])?["current"] == 2, "\(object)")
        #expect(try fixture.docker(socket, ["rm", "-f", "forker"]).status == 0)
    }

    /// docker stats' CPU %: a container spinning in a shell loop shows a share of a CPU and
    /// one asleep almost none (under a fifth of it); the agent's CPU seconds grow with it (the vCPU
    /// thread's clock while it runs the guest), and stop growing at its end.
    @Test func statsShowTheCPUAContainerUses() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        #expect(try fixture.docker(socket, ["run", "-d", "--name", "busy", "busybox", "sh", "-c", "while :; do :; done"]).status == 0)
        #expect(try fixture.docker(socket, ["run", "-d", "--name", "idle", "busybox", "sleep", "60"]).status == 0)
        func agentStats(_ name: String) throws -> ContainerStats {
            let id = try fixture.docker(socket, ["inspect", "-f", "{{.Id}}", name]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            return try fixture.agent.send("GET", "/v1/containers/\(id)/stats").decode(ContainerStats.self)
        }
        let busyBefore = try agentStats("busy"), idleBefore = try agentStats("idle")
        let stats = try fixture.docker(socket, ["stats", "--no-stream", "--format", "{{.Name}}|{{.CPUPerc}}", "busy", "idle"])
        #expect(stats.status == 0, "\(stats.stderr)")
        let busyAfter = try agentStats("busy"), idleAfter = try agentStats("idle")
        var percent: [String: Double] = [:]
        for line in stats.stdout.split(separator: "\n") {
            let fields = line.split(separator: "|").map(String.init)
            if fields.count == 2, let value = Double(fields[1].replacingOccurrences(of: "%", with: "")) { percent[fields[0]] = value }
        }
        let busy = try #require(percent["busy"], "\(stats.stdout)"), idle = try #require(percent["idle"], "\(stats.stdout)")
        // A loaded CI host may give the loop only a small share of a core; the ratio holds.
        #expect(busy >= 5 && busy <= 105 * Double(ProcessInfo.processInfo.activeProcessorCount), "busy \(busy)%")
        #expect(idle < 5 && idle < busy / 5, "idle \(idle)%, busy \(busy)%")
        let busyGrowth = try #require(busyAfter.cpuSeconds) - (try #require(busyBefore.cpuSeconds))
        let idleGrowth = try #require(idleAfter.cpuSeconds) - (try #require(idleBefore.cpuSeconds))
        let interval = busyAfter.readAt - busyBefore.readAt
        #expect(busyGrowth >= 0.05 * interval && idleGrowth < busyGrowth / 5, "over \(interval) s: busy \(busyGrowth) s, idle \(idleGrowth) s")
        #expect((try #require(busyAfter.hostCPUSeconds)) > (try #require(busyBefore.hostCPUSeconds)))
        #expect(try fixture.docker(socket, ["rm", "-f", "busy", "idle"]).status == 0)
    }

    /// wait?condition=removed for a container without --rm answers once it is removed: the
    /// agent's removal event wakes it (well inside the one-second recheck).
    @Test func waitForRemovalAnswersAtTheRemoval() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let id = try fixture.docker(socket, ["run", "-d", "busybox", "true"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try fixture.docker(socket, ["wait", id]).stdout == "0\n")
        let answered = DataBox()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            answered.data = (try? AgentClient(socketPath: socket).send("POST", "/v1.43/containers/\(id)/wait?condition=removed").body) ?? Data()
            done.signal()
        }
        usleep(1_500_000)
        #expect(done.wait(timeout: .now()) == .timedOut, "it waits while the container is there")
        let removing = Date()
        #expect(try fixture.docker(socket, ["rm", id]).status == 0)
        #expect(done.wait(timeout: .now() + 10) == .success)
        let delay = Date().timeIntervalSince(removing)
        #expect(String(decoding: answered.data, as: UTF8.self) == "{\"StatusCode\":0}\n")
        #expect(delay < 0.8, "answered \(delay) s after docker rm began")
    }
}
