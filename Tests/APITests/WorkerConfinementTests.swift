import API
import Engine
import Foundation
import HostSystem
import Placement
import TestSupport
import Testing

/// What confines an engine worker, seen from outside it: its seccomp filter is live in every
/// thread and kills it for a call outside the list (the daemon reports that and starts it
/// again), its Landlock domain refuses writes outside its folders, and it is bound to its
/// NUMA node. Real daemon, real workers, real KVM guests.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"), .serialized)
struct WorkerConfinementTests {
    /// Sends one worker-protocol request straight to a worker's socket and returns what comes
    /// back before the stream ends: nil when it ended without a reply.
    static func rawRequest(socket path: String, op: String, body: String = "{}") throws -> String? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        // unsafe: the path is shorter than sun_path (a test's temporary folder), so every index is inside it.
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (index, byte) in bytes.enumerated() { raw[index] = byte } }
        let connected = withUnsafePointer(to: &address) {
            // unsafe: sockaddr_un is a sockaddr of the size given.
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw AgentClient.ClientError(description: "connect \(path): errno \(errno)") }
        let payload = Array(#"{"id":1,"op":"\#(op)","body":\#(body)}"#.utf8)
        let length = UInt32(payload.count)
        let frame = [UInt8(length & 0xff), UInt8(length >> 8 & 0xff), UInt8(length >> 16 & 0xff), UInt8(length >> 24)] + payload
        #expect(write(fd, frame, frame.count) == frame.count)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = read(fd, &buffer, buffer.count)
            if got <= 0 { break }
            received += buffer[0..<got]
            if received.count >= 4 {
                let size = Int(received[0]) | Int(received[1]) << 8 | Int(received[2]) << 16 | Int(received[3]) << 24
                if received.count >= 4 + size { return String(decoding: received[4..<(4 + size)], as: UTF8.self) }
            }
        }
        return nil
    }

    static func statusField(_ pid: Int32, thread: String? = nil, _ field: String) -> String? {
        let path = thread.map { "/proc/\(pid)/task/\($0)/status" } ?? "/proc/\(pid)/status"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix(field + ":") }.map { $0.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces) }
    }

    @Test func workersRunUnderTheirSeccompFilterAndAForbiddenCallEndsOnlyThatWorker() async throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--workers", "2"])
        defer {
            daemon.stop()
            WorkerTests.killWorkers(daemon, count: 2)
        }
        let client = daemon.client
        try daemon.addBusybox(client)
        // busybox.main.32m on shard 0, busybox.main.16m on shard 1.
        #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":32,"readyVMs":2}"#.utf8)).status == 201)
        #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":16,"readyVMs":2}"#.utf8)).status == 201)
        // Containers run as ever under the filter: output, status, in both workers.
        for memory in [32, 16] {
            let run = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["sh", "-c", "echo filtered; ls / >/dev/null; exit 5"], memoryMiB: memory))
            let result = try run.decode(RunResult.self)
            #expect(result.stdout == "filtered\n" && result.exitCode == 5, "\(run.text)")
        }
        let pids = [try #require(WorkerTests.workerPID(daemon, shard: 0)), try #require(WorkerTests.workerPID(daemon, shard: 1))]
        // The kernel's word: every thread of each worker is under a filter (mode 2).
        for pid in pids {
            let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
            #expect(threads.count > 1)
            // A thread may end between the listing and the read (a queue's idle thread): it has no field then.
            let fields = threads.compactMap { Self.statusField(pid, thread: $0, "Seccomp") }
            #expect(fields.count > 1 && fields.allSatisfy { $0 == "2" }, "worker \(pid): \(fields)")
        }
        // The API's: each worker reports its filter and its NUMA binding.
        let workers = try await client.send("GET", "/v1/workers").decode([WorkerInfo].self)
        #expect(workers.count == 2)
        for worker in workers {
            let process = try #require(worker.process, "worker \(worker.shard) answers its status")
            #expect(process.pid == pids[worker.shard])
            #expect(process.seccomp == 2 && process.seccompMode == "kill")
            #expect(process.allowedSystemCalls > 50 && process.allowedSystemCalls < 200)
            #expect(process.rssKiB > 1024 && process.threads > 1)
            // One warm parent, its pool (of 2) refilling after the run.
            #expect(process.parents == 1 && process.readyVMs <= 2, "\(process)")
            // Its Landlock domain, where the kernel has Landlock.
            if process.landlockFailure != "the kernel has no Landlock" {
                #expect((process.landlockABI ?? 0) >= 1 && process.landlockFailure == nil, "\(process)")
            }
        }
        // Inside the domain a worker writes only where it must: not in a folder of the host
        // (EACCES), in its own state folder (0).
        if let process = workers.first?.process, process.landlockABI != nil {
            let socket = daemon.state.appendingPathComponent("workers/0.sock").path
            let outside = FileManager.default.temporaryDirectory.appendingPathComponent("vmfork-landlock-\(UUID().uuidString)").path
            let refused = try Self.rawRequest(socket: socket, op: "debug.tryCreate", body: #"{"path":"\#(outside)"}"#)
            #expect(refused?.contains(#""result":13"#) == true && !FileManager.default.fileExists(atPath: outside), "\(refused ?? "no reply")")
            let inside = daemon.state.appendingPathComponent("workers/0/landlock-probe").path
            let allowed = try Self.rawRequest(socket: socket, op: "debug.tryCreate", body: #"{"path":"\#(inside)"}"#)
            #expect(allowed?.contains(#""result":0"#) == true, "\(allowed ?? "no reply")")
        }
        // A connect is refused, not fatal: glibc's syslog (libdispatch's) may have made its
        // socket just before the filter came, and goes on without it.
        let connect = try Self.rawRequest(socket: daemon.state.appendingPathComponent("workers/0.sock").path, op: "debug.connect")
        #expect(connect?.contains(#""result":-\#(EACCES)"#) == true, "\(connect ?? "no reply: the worker ended")")
        // A container blocked reading its stdin on each worker, then a forbidden call in shard 1's.
        var waiting: [String] = []
        for (index, memory) in [32, 16].enumerated() {
            let spec = ContainerSpec(image: "busybox", name: "reader\(index)", arguments: ["sh", "-c", "read x; echo got $x"], memoryMiB: memory, openStdin: true)
            let made = try await client.send("POST", "/v1/containers", json: spec)
            #expect(made.status == 201, "\(made.text)")
            #expect(try await client.send("POST", "/v1/containers/reader\(index)/start").status == 200)
            waiting.append("reader\(index)")
        }
        let reply = try Self.rawRequest(socket: daemon.state.appendingPathComponent("workers/1.sock").path, op: "debug.forbiddenCall")
        #expect(reply == nil, "the worker ended before it could answer: \(reply ?? "")")
        let lost = try await client.send("POST", "/v1/containers/reader1/wait").decode(ExitInfo.self)
        #expect(lost.exitCode == 137 && lost.reason.contains("worker (shard 1, pid \(pids[1])) died: killed by signal \(SIGSYS) (SIGSYS: a system call outside its seccomp filter)"), "\(lost)")
        // The other worker's container never noticed.
        #expect(try await client.send("POST", "/v1/containers/reader0/stdin", body: Data("yes\n".utf8), contentType: "application/octet-stream").status < 300)
        let kept = try await client.send("POST", "/v1/containers/reader0/wait").decode(ExitInfo.self)
        #expect(kept.exitCode == 0, "\(kept)")
        #expect(try await client.send("GET", "/v1/containers/reader0/logs?stream=stdout").text == "got yes\n")
        #expect(WorkerTests.workerPID(daemon, shard: 0) == pids[0])
        let exits = try daemon.events(client, type: "worker.exit")
        #expect(exits.contains { ($0["subject"] as? String) == "1" && (($0["detail"] as? String) ?? "").contains("killed by signal \(SIGSYS)") }, "\(exits)")
        // The worker comes back under its filter again.
        let deadline = Date().addingTimeInterval(30)
        var back: WorkerInfo?
        while Date() < deadline {
            let workers = try await client.send("GET", "/v1/workers").decode([WorkerInfo].self)
            if let worker = workers.first(where: { $0.shard == 1 }), worker.connected, worker.restarts == 1, worker.process?.readyVMs == 2 {
                back = worker
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let restarted = try #require(back, "shard 1 is back with its parent's pool")
        #expect(restarted.pid != pids[1] && restarted.process?.seccomp == 2)
        let again = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["echo", "again"], memoryMiB: 16))
        #expect(try again.decode(RunResult.self).stdout == "again\n")
        let starts = try daemon.events(client, type: "worker.start").compactMap { $0["subject"] as? String }
        #expect(starts.sorted() == ["0", "1", "1"], "a start event for each worker and the restart: \(starts)")
        // The metrics page labels each worker's figures.
        let metrics = try await client.send("GET", "/metrics").text
        for shard in 0..<2 {
            #expect(metrics.contains("vmfork_worker_seccomp{worker=\"\(shard)\"} 2"), "worker \(shard) seccomp metric")
            #expect(metrics.contains("vmfork_worker_up{worker=\"\(shard)\"} 1"))
            #expect(metrics.contains("vmfork_worker_rss_bytes{worker=\"\(shard)\"}"))
        }
        #expect(metrics.contains("vmfork_worker_restarts{worker=\"1\"} 1"))
        // An x32 system call is refused whatever its number: shard 0 ends with SIGSYS too.
        #expect(try Self.rawRequest(socket: daemon.state.appendingPathComponent("workers/0.sock").path, op: "debug.x32Call") == nil)
        let deadline0 = Date().addingTimeInterval(30)
        var x32Exit: [String: Any]?
        while Date() < deadline0, x32Exit == nil {
            x32Exit = try daemon.events(client, type: "worker.exit").first { ($0["subject"] as? String) == "0" }
            if x32Exit == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let x32Detail = (x32Exit?["detail"] as? String) ?? ""
        #expect(x32Detail.contains("killed by signal \(SIGSYS)"), "\(x32Detail)")
    }

    /// Each worker is bound to its node: the policy it reports is what the kernel shows in
    /// its numa_maps and every thread's affinity, and its pages are on that node.
    @Test func workersAreBoundToTheirNUMANode() async throws {
        let topology = try #require(NUMATopology.current(), "libnuma reports the topology")
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--workers", "2"])
        defer {
            daemon.stop()
            WorkerTests.killWorkers(daemon, count: 2)
        }
        let client = daemon.client
        try daemon.addBusybox(client)
        #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":32,"readyVMs":2}"#.utf8)).status == 201)
        let workers = try await client.send("GET", "/v1/workers?sharing=true").decode([WorkerInfo].self)
        #expect(workers.count == 2)
        for worker in workers {
            let process = try #require(worker.process)
            let node = try #require(NUMABinding.node(forShard: worker.shard, topology: topology))
            let cpus = try #require(topology.nodes.first { $0.id == node }).cpus
            #expect(process.numaNode == node && process.numaFailure == nil)
            #expect(process.numa == NUMABinding(mode: "preferred", nodes: [node], cpus: cpus), "\(String(describing: process.numa))")
            #expect((process.pagesPerNode["\(node)"] ?? 0) > 1000, "its pages are on node \(node): \(process.pagesPerNode)")
            // The kernel's view: the task policy in numa_maps, the affinity of every thread.
            let maps = try String(contentsOfFile: "/proc/\(process.pid)/numa_maps", encoding: .utf8)
            #expect(maps.contains(" prefer:\(node) "), "numa_maps shows the preferred node")
            let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.pid)/task")
            for thread in threads {
                let allowed = try #require(Self.statusField(process.pid, thread: thread, "Cpus_allowed_list"))
                #expect(Self.expand(allowed) == cpus, "thread \(thread): \(allowed)")
            }
        }
        // The parent's worker reports the measured memory placement will use.
        let holder = try #require(workers.first { $0.parents == ["busybox.main.32m"] }?.process)
        #expect((holder.parentBytes?["busybox.main.32m"] ?? 0) > 0)
    }

    /// Placement charges what the workers measured, not what it was told: a parent's resident
    /// size becomes the image's parent memory, a child's median private memory its growth.
    @Test func placementTakesTheWorkersMeasuredMemory() async throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--workers", "2"])
        defer {
            daemon.stop()
            WorkerTests.killWorkers(daemon, count: 2)
        }
        let client = daemon.client
        try daemon.addBusybox(client)
        // What a profile would have said: 1 KiB each.
        let image = #"{"name":"busybox","parentMemoryKiB":1,"growthPerChildKiB":1,"cpuMHzPerChild":1}"#
        #expect(try await client.send("POST", "/v1/placement/images", body: Data(image.utf8)).status == 201)
        let host = #"{"name":"here","cpuCores":2,"nodeMemoryKiB":[16777216]}"#
        #expect(try await client.send("POST", "/v1/placement/hosts", body: Data(host.utf8)).status == 201)
        #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":32,"readyVMs":1}"#.utf8)).status == 201)
        for index in 0..<3 {
            let spec = ContainerSpec(image: "busybox", name: "held\(index)", arguments: ["sh", "-c", "x=$(ls /bin); read y"], memoryMiB: 32, openStdin: true)
            #expect(try await client.send("POST", "/v1/containers", json: spec).status == 201)
            #expect(try await client.send("POST", "/v1/containers/held\(index)/start").status == 200)
        }
        try await Task.sleep(for: .milliseconds(300))
        let workers = try await client.send("GET", "/v1/workers?sharing=true").decode([WorkerInfo].self)
        let process = try #require(workers.first { $0.parents == ["busybox.main.32m"] }?.process)
        let parentKiB = ((process.parentBytes?["busybox.main.32m"] ?? 0) + 1023) / 1024
        let childKiB = ((process.childPrivateBytesMedian?["busybox.main.32m"] ?? 0) + 1023) / 1024
        #expect(parentKiB > 100 && childKiB > 1, "measured: parent \(parentKiB) KiB, child \(childKiB) KiB")
        let measured = try daemon.events(client, type: "placement.image.measured")
        #expect(measured.contains { ($0["subject"] as? String) == "busybox" &&
                                    ($0["detail"] as? String) == "{\"parentMemoryKiB\":\(parentKiB),\"growthPerChildKiB\":\(childKiB)}" }, "\(measured)")
        // A cold start (no warm parent placed on the host) is charged the parent and a child, as measured.
        let placed = try await client.send("POST", "/v1/placement/place", body: Data(#"{"pool":"\#(PoolTree.rootName)","image":"busybox"}"#.utf8))
        #expect(placed.status == 201, "\(placed.text)")
        let placement = try placed.decode(Placement.self)
        #expect(placement.start == .cold && placement.charge.memoryKiB == parentKiB + childKiB, "\(placement)")
        for index in 0..<3 { _ = try await client.send("POST", "/v1/containers/held\(index)/stdin?close=true", body: Data("\n".utf8)) }
    }

    /// "0-3,5" -> [0, 1, 2, 3, 5].
    static func expand(_ list: String) -> [Int] {
        list.split(separator: ",").flatMap { part -> [Int] in
            let ends = part.split(separator: "-").compactMap { Int($0) }
            return ends.count == 2 ? Array(ends[0]...ends[1]) : ends
        }
    }
}
