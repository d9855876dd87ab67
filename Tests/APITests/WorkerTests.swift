import API
import Engine
import Foundation
import TestSupport
import Testing

/// Engine workers (`vmfork serve --workers N`): the VMs live in worker processes that outlive
/// the daemon; a worker that dies takes only its own containers. Real daemon, real workers,
/// real KVM guests.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"), .serialized)
struct WorkerTests {
    /// The pid in STATE/workers/N/vmfork.lock (the worker's engine writes its own there).
    static func workerPID(_ daemon: DaemonFixture, shard: Int) -> Int32? {
        let path = daemon.state.appendingPathComponent("workers/\(shard)/vmfork.lock").path
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        // Only a live `vmfork worker` of this state folder (never another process that got the pid).
        guard let command = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return nil }
        let words = String(decoding: command, as: UTF8.self).split(separator: "\0").map(String.init)
        guard words.contains("worker"), words.contains(daemon.state.path) else { return nil }
        return pid
    }

    /// A daemon with `workers` engine workers and the busybox image, for `body`; the daemon and
    /// its workers are stopped afterwards, whatever happened.
    static func withWorkers(_ workers: Int, _ body: (DaemonFixture, AgentClient) async throws -> Void) async throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--workers", "\(workers)"])
        defer {
            daemon.stop()
            killWorkers(daemon, count: workers)
        }
        let client = daemon.client
        try daemon.addBusybox(client)
        try await body(daemon, client)
    }

    /// Ends workers a failed test left behind (a daemon killed with -9 does not stop them).
    static func killWorkers(_ daemon: DaemonFixture, count: Int) {
        for shard in 0..<count { if let pid = workerPID(daemon, shard: shard) { kill(pid, SIGKILL) } }
    }

    /// The containers' script: `lines` numbered lines, one every `interval` seconds, then
    /// `exit code`. Guests cannot fork (no `sleep` program): the shell's own `read -t` on an
    /// open standard input that never gets data waits instead.
    static func script(_ name: String, lines: Int, interval: String, code: Int) -> [String] {
        ["sh", "-c", "i=1; while [ $i -le \(lines) ]; do echo \(name)-line-$i; echo \(name)-err-$i >&2; read -t \(interval) x; i=$((i+1)); done; exit \(code)"]
    }

    static func expectedLog(_ name: String, lines: Int, stream: String) -> String {
        (1...lines).map { "\(name)-\(stream)-\($0)\n" }.joined()
    }

    /// The sharing figures come from the workers: the list's figures of each family are those
    /// its own call gives (which asks only its worker, for that family), read at the time
    /// `measuredAt` says; sharing=false gives none.
    @Test func eachFamilysSharingFiguresComeFromItsWorkerAsInTheList() async throws {
        try await Self.withWorkers(2) { daemon, client in
            #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":32,"readyVMs":1}"#.utf8)).status == 201)
            #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":16,"readyVMs":1}"#.utf8)).status == 201)
            // One idle child in the 32m family (shard 0), two in the 16m one (shard 1).
            for (index, memory) in [32, 16, 16].enumerated() {
                let spec = ContainerSpec(image: "busybox", name: "idle\(index)", arguments: ["sh", "-c", "read x"], memoryMiB: memory, openStdin: true)
                #expect(try await client.send("POST", "/v1/containers", json: spec).status == 201)
                #expect(try await client.send("POST", "/v1/containers/idle\(index)/start").status == 200)
            }
            try await Task.sleep(for: .milliseconds(500))
            let before = Date().timeIntervalSince1970
            let listed = try await client.send("GET", "/v1/parents").decode([ParentInfo].self)
            #expect(listed.map(\.id) == ["busybox.main.16m", "busybox.main.32m"])
            for info in listed {
                let figures = try #require(info.sharing, "\(info.id) has sharing figures")
                #expect(figures.children == (info.id == "busybox.main.16m" ? 2 : 1) && figures.parentBytes > 0, "\(info.id): \(figures)")
                #expect(figures.childPrivateBytesMedian > 0 && figures.childSharedBytesMedian > 0, "\(info.id): \(figures)")
                let alone = try await client.send("GET", "/v1/parents/\(info.id)").decode(ParentInfo.self)
                let after = Date().timeIntervalSince1970
                let own = try #require(alone.sharing, "\(info.id) alone has sharing figures")
                #expect(own.children == figures.children && own.parentBytes == figures.parentBytes, "\(info.id): \(own) against \(figures)")
                #expect(own.childPrivateBytesMedian == figures.childPrivateBytesMedian, "\(info.id): \(own) against \(figures)")
                #expect(before <= figures.measuredAt && figures.measuredAt <= own.measuredAt && own.measuredAt <= after)
                #expect(try await client.send("GET", "/v1/parents/\(info.id)?sharing=false").decode(ParentInfo.self).sharing == nil)
            }
            #expect(try await client.send("GET", "/v1/parents/nosuch.main.16m").status == 404)
        }
    }

    /// kill -9 of the daemon while containers run and write: after the restart every one is
    /// still there, the ones still running run on, the ones that ended meanwhile have their
    /// real status, and every line of every log is there. 100 containers over two workers.
    @Test func containersSurviveAKill9OfTheDaemonWithTheirLogsAndStatuses() async throws {
        try await Self.withWorkers(2) { daemon, client in
            // Two families, one per worker: 64 MiB on shard 0 (its first use), 32 MiB on shard 1.
            #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":64,"readyVMs":4}"#.utf8)).status == 201)
            #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":32,"readyVMs":4}"#.utf8)).status == 201)
            let count = 100
            // Short ones end while no daemon runs; long ones run on after the restart.
            func plan(_ index: Int) -> (name: String, lines: Int, interval: String, code: Int, memory: Int) {
                let short = index % 2 == 0
                // Long ones last 16 s: longer than starting 100 on a loaded host plus the restart.
                return ("c\(index)", short ? 4 : 20, short ? "0.1" : "0.8", index % 7, index % 3 == 0 ? 32 : 64)
            }
            var ids: [String] = []
            for index in 0..<count {
                let item = plan(index)
                let spec = ContainerSpec(image: "busybox", name: item.name, arguments: Self.script(item.name, lines: item.lines, interval: item.interval, code: item.code),
                                         memoryMiB: item.memory, openStdin: true)
                let made = try await client.send("POST", "/v1/containers", json: spec)
                #expect(made.status == 201, "\(made.text)")
                let id = try made.decode(ContainerInfo.self).id
                #expect(try await client.send("POST", "/v1/containers/\(id)/start").status == 200)
                ids.append(id)
            }
            // The daemon dies at once, every container mid-output.
            daemon.stop(signal: SIGKILL)
            let worker0 = Self.workerPID(daemon, shard: 0)
            let worker1 = Self.workerPID(daemon, shard: 1)
            #expect(worker0 != nil && worker1 != nil, "both workers outlive the daemon")
            // Long enough for the short ones to end while no daemon listens.
            try await Task.sleep(for: .seconds(2))
            try daemon.start(extra: ["--workers", "2"])
            #expect(Self.workerPID(daemon, shard: 0) == worker0 && Self.workerPID(daemon, shard: 1) == worker1,
                    "the new daemon found the same workers")
            let listed = try await client.send("GET", "/v1/containers").decode([ContainerInfo].self)
            #expect(Set(listed.map(\.id)) == Set(ids), "every container is still known")
            let running = listed.filter { $0.state == .running }
            #expect(!running.isEmpty, "the long ones still run after the restart")
            #expect(running.allSatisfy { plan(Int($0.name.dropFirst())!).lines == 20 }, "only long ones can still run")
            #expect(!listed.contains { $0.exitReason?.contains("restarted") == true }, "none was recorded as stopped by the restart")
            // Every one ends with its own status and complete logs.
            for (index, id) in ids.enumerated() {
                let item = plan(index)
                let exit = try await client.send("POST", "/v1/containers/\(id)/wait").decode(ExitInfo.self)
                #expect(exit.exitCode == item.code, "\(item.name): \(exit)")
                let stdout = try await client.send("GET", "/v1/containers/\(id)/logs?stream=stdout")
                let stderr = try await client.send("GET", "/v1/containers/\(id)/logs?stream=stderr")
                #expect(stdout.text == Self.expectedLog(item.name, lines: item.lines, stream: "line"), "\(item.name) stdout: \(stdout.text)")
                #expect(stderr.text == Self.expectedLog(item.name, lines: item.lines, stream: "err"), "\(item.name) stderr: \(stderr.text)")
                let info = try await client.send("GET", "/v1/containers/\(id)").decode(ContainerInfo.self)
                #expect(info.state == .exited && info.exitCode == item.code && info.finishedAt != nil)
            }
            let exits = try daemon.events(client, type: "container.exit")
            #expect(Set(exits.compactMap { $0["subject"] as? String }) == Set(ids), "an exit event for each, ended before or after the restart")
            // The restarted daemon forks as before, in its workers.
            let run = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["echo", "after restart"], memoryMiB: 32))
            #expect(try run.decode(RunResult.self).stdout == "after restart\n")
            #expect(daemon.stop() == 0)
            #expect(Self.workerPID(daemon, shard: 0) == nil && Self.workerPID(daemon, shard: 1) == nil, "a graceful stop stops the workers")
        }
    }

    /// In workers mode the worker writes the logs and their time indexes; the daemon serves
    /// the lines with the times they were written, stdout and stderr in that order.
    @Test func logsFromAWorkerCarryTheTimesTheLinesWereWritten() async throws {
        try await Self.withWorkers(1) { daemon, client in
            let script = "echo a; read -t 0.3 x; echo b >&2; read -t 0.3 x; echo c"
            let created = try await client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "timed", arguments: ["sh", "-c", script],
                                                                                              memoryMiB: 32, openStdin: true))
            #expect(created.status == 201, "\(created.text)")
            #expect(try await client.send("POST", "/v1/containers/timed/start").status == 200)
            #expect(try await client.send("POST", "/v1/containers/timed/wait").decode(ExitInfo.self).exitCode == 0)
            let info = try await client.send("GET", "/v1/containers/timed").decode(ContainerInfo.self)
            let (started, finished) = (try #require(info.startedAt), try #require(info.finishedAt))
            let text = try await client.send("GET", "/v1/containers/timed/logs?timestamps=true").text
            let lines = text.split(separator: "\n").map { (time: Double(LogStamp.parse($0.prefix(LogStamp.length).utf8) ?? 0) / 1e9,
                                                            text: String($0.dropFirst(LogStamp.length + 1))) }
            #expect(lines.map(\.text) == ["a", "b", "c"], "\(text)")
            for (earlier, later) in zip(lines, lines.dropFirst()) { #expect(later.time - earlier.time >= 0.299, "\(text)") }
            #expect(lines.allSatisfy { $0.time >= started - 1e-6 && $0.time <= finished + 1e-6 }, "\(started) \(text) \(finished)")
            #expect(daemon.stop() == 0)
        }
    }

    /// A run through a worker is answered as soon as the worker's answer is read, before the
    /// daemon records it and removes it (`Engine.runContainer`'s `answer`); those follow on the
    /// same event loop before the next request is read, so a second connection asked right
    /// after the answer already finds the container gone and its four events logged.
    @Test func aRunAnsweredEarlyIsRecordedAndRemovedBeforeTheNextRequest() async throws {
        try await Self.withWorkers(1) { daemon, client in
            let other = AgentClient(socketPath: daemon.socketPath)
            for index in 0..<10 {
                let run = try client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["echo", "early \(index)"], memoryMiB: 32))
                let result = try run.decode(RunResult.self)
                #expect(result.exitCode == 0 && result.stdout == "early \(index)\n" && result.finishedAt != nil, "\(run.text)")
                #expect(try other.send("GET", "/v1/containers/\(result.id)").status == 404)
                let types = try daemon.events(other).filter { $0["subject"] as? String == result.id }.compactMap { $0["type"] as? String }
                #expect(types == ["container.create", "container.start", "container.exit", "container.remove"], "\(index): \(types)")
            }
        }
    }

    /// A run in workers mode is one call to the worker (create and start together), and the
    /// log still has each container's create and start before its exit, however fast the
    /// program ends: the exit the worker reports first waits until they are recorded.
    @Test func aRunInAWorkerLogsCreateAndStartBeforeItsExit() async throws {
        try await Self.withWorkers(1) { daemon, client in
            var ids: [String] = []
            for index in 0..<20 {
                let run = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["echo", "run \(index)"], memoryMiB: 32))
                let result = try run.decode(RunResult.self)
                #expect(result.exitCode == 0 && result.stdout == "run \(index)\n", "\(run.text)")
                ids.append(result.id)
            }
            // A worker decides a Docker command as the daemon does: argv[0] as written.
            let named = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", entrypoint: [""], cmd: ["sh", "-c", "echo $0"], memoryMiB: 32))
            let namedResult = try named.decode(RunResult.self)
            #expect(namedResult.stdout == "sh\n", "\(named.text)")
            ids.append(namedResult.id)
            // The log is written in batches: wait until every exit is in it.
            var events: [[String: Any]] = []
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                events = try daemon.events(client)
                let exited = Set(events.filter { $0["type"] as? String == "container.exit" }.compactMap { $0["subject"] as? String })
                if exited.isSuperset(of: ids) { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            for id in ids {
                let types = events.filter { $0["subject"] as? String == id }.compactMap { $0["type"] as? String }
                    .filter { ["container.create", "container.start", "container.exit"].contains($0) }
                #expect(types == ["container.create", "container.start", "container.exit"], "\(id): \(types)")
            }
        }
    }

    /// A run that ends before its answer goes is answered with its end and output, and its
    /// worker removes it there and then (no second call): the output, status and log are as
    /// for any run, a large output (past what goes along) is read from the log files, and
    /// nothing of either run is left in the worker.
    @Test func aShortRunIsAnsweredWithItsEndAndRemovedInItsWorker() async throws {
        try await Self.withWorkers(1) { daemon, client in
            var smallID = ""
            for index in 0..<5 {
                let small = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(
                    image: "busybox", arguments: ["sh", "-c", "echo out \(index); echo err >&2; exit 3"], memoryMiB: 32))
                let smallResult = try small.decode(RunResult.self)
                smallID = smallResult.id
                #expect(smallResult.exitCode == 3 && smallResult.stdout == "out \(index)\n" && smallResult.stderr == "err\n", "\(small.text)")
            }
            // 2,000 lines of 41 bytes: 82,000 bytes, more than an answer carries.
            let line = "0123456789012345678901234567890123456789"
            let large = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(
                image: "busybox", arguments: ["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo \(line); i=$((i+1)); done"], memoryMiB: 32))
            let largeResult = try large.decode(RunResult.self)
            #expect(largeResult.exitCode == 0 && largeResult.stdout == String(repeating: line + "\n", count: 2000), "\(largeResult.stdout.count) bytes")
            for id in [smallID, largeResult.id] {
                #expect(try await client.send("GET", "/v1/containers/\(id)").status == 404)
            }
            var live = -1
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                let workers = try JSONDecoder().decode([WorkerInfo].self, from: try await client.send("GET", "/v1/workers").body)
                live = workers.reduce(0) { $0 + ($1.process?.liveChildren ?? 1) + $1.liveContainers }
                if live == 0 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(live == 0)
            var types: [String] = []
            let logged = Date().addingTimeInterval(30)
            while Date() < logged {
                types = try daemon.events(client).filter { $0["subject"] as? String == smallID }.compactMap { $0["type"] as? String }
                if types.contains("container.remove") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(types == ["container.create", "container.start", "container.exit", "container.remove"], "\(types)")
            // Six runs: each a create asked of the worker, or served by the worker on the client's
            // kept connection, which it holds after a run it answered there (`CallerConnections`),
            // removing the container itself. A remove asked of the worker for the large one when
            // it was a create, and for none of the small ones that ended within the answer's wait
            // (10 ms; on a loaded host some may not).
            let metrics = try await client.send("GET", "/metrics").text
            let requests = { (op: String) in
                metrics.split(separator: "\n").first { $0.hasPrefix("vmfork_worker_requests{") && $0.contains("op=\"\(op)\"") }
                    .flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
            }
            let served = try client.metric("vmfork_runs_on_handed_over_connections_total")
            #expect(requests("create") + served == 6 && requests("remove") < 6 && (served > 0 || requests("remove") >= 1),
                    "served on a handed-over connection: \(served); \(metrics.split(separator: "\n").filter { $0.contains("worker_requests") })")
        }
    }

    /// A run's answer waits in the worker for the program's end (one message and one wake-up
    /// for the daemon), but no longer than a few milliseconds: a run still going is listed as
    /// running meanwhile. And the worker's system-call poller has the priority the daemon's
    /// own would have (the daemon raises it; the worker holds no capability).
    @Test func aLongRunInAWorkerIsListedWhileItRunsAndItsPollerIsRaised() async throws {
        try await Self.withWorkers(1) { daemon, client in
            let short = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["echo", "short"], memoryMiB: 32))
            #expect(try short.decode(RunResult.self).stdout == "short\n", "\(short.text)")
            // An open standard input that never gets data: `read -t` waits its whole second.
            let spec = ContainerSpec(image: "busybox", name: "long-run", arguments: ["sh", "-c", "echo begun; read -t 1 x; echo done"], memoryMiB: 32,
                                     openStdin: true)
            let run = Task { try await client.send("POST", "/v1/containers/run", json: spec) }
            var seenRunning = false
            let deadline = Date().addingTimeInterval(0.8)
            while Date() < deadline, !seenRunning {
                let list = try await client.send("GET", "/v1/containers")
                seenRunning = try list.decode([ContainerInfo].self).contains { $0.name == "long-run" && $0.state == .running }
                if !seenRunning { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(seenRunning, "the run was not listed as running while it ran")
            let result = try await run.value.decode(RunResult.self)
            #expect(result.exitCode == 0 && result.stdout == "begun\ndone\n", "\(result)")

            // The poller thread of the worker, and its nice value (field 19 of its stat).
            let pid = try #require(Self.workerPID(daemon, shard: 0))
            let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
            let poller = try #require(tasks.first { (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/comm", encoding: .utf8))?.hasPrefix("vmfork-poller") == true })
            let stat = try String(contentsOfFile: "/proc/\(pid)/task/\(poller)/stat", encoding: .utf8)
            let fields = stat[stat.range(of: ")")!.upperBound...].split(separator: " ")
            let nice = try #require(Int(fields[16]))
            // CAP_SYS_NICE (bit 23) in this process's effective set: the daemon it started has it too.
            let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
            let effective = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }.flatMap { UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) } ?? 0
            if effective & (1 << 23) != 0 {
                #expect(nice == -10, "the worker's poller runs at nice \(nice)")
            } else {
                #expect(nice == 0, "the worker's poller runs at nice \(nice) without CAP_SYS_NICE")
            }
        }
    }

    /// A running container's figures come from the worker that runs it: its stats (memory
    /// and CPU), its processes, and its memory in the list and in inspect.
    /// The daemon measures the machine's exit and polled-call costs and passes them to each
    /// worker (which, confined, cannot measure them itself), for its poller's judgement.
    @Test func eachWorkerGetsTheDaemonsMeasuredCosts() async throws {
        try await Self.withWorkers(2) { daemon, _ in
            let logs = (0..<2).map { daemon.state.appendingPathComponent("workers/\($0).log").path }
            func told(_ path: String) -> Bool {
                ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").contains("machine costs from the daemon")
            }
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline, !logs.allSatisfy(told) { try await Task.sleep(for: .milliseconds(200)) }
            for path in logs { #expect(told(path), "\(path) never got the daemon's costs") }
        }
    }

    @Test func aWorkersContainerHasItsFiguresThroughTheDaemon() async throws {
        try await Self.withWorkers(1) { daemon, client in
            let created = try await client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "figures", arguments: ["sh", "-c", "read x"],
                                                                                              memoryMiB: 32, openStdin: true))
            let id = try created.decode(ContainerInfo.self).id
            #expect(try await client.send("POST", "/v1/containers/\(id)/start").status == 200)
            // The shell has started once its process is listed.
            var processes: [ContainerProcess] = []
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, processes.isEmpty {
                let answer = try await client.send("GET", "/v1/containers/\(id)/processes")
                if answer.status == 200 { processes = try answer.decode([ContainerProcess].self) }
                if processes.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(processes.count == 1 && processes.first?.state == "running", "\(processes)")
            let stats = try await client.send("GET", "/v1/containers/\(id)/stats").decode(ContainerStats.self)
            #expect(stats.processes == 1 && (stats.memory?.residentBytes ?? 0) > 0 && stats.cpuSeconds != nil, "\(stats)")
            let listed = try await client.send("GET", "/v1/containers?memory=true").decode([ContainerInfo].self)
            #expect((listed.first { $0.id == id }?.memory?.residentBytes ?? 0) > 0, "\(listed)")
            let inspected = try await client.send("GET", "/v1/containers/\(id)?memory=true").decode(ContainerInfo.self)
            #expect((inspected.memory?.limitBytes ?? 0) == 32 << 20, "\(inspected)")
            // The workers' pollers' CPU: each one's, and their sum as the engine's poller figure.
            let metrics = try await client.send("GET", "/metrics").text
            let perWorker = metrics.split(separator: "\n").first { $0.hasPrefix("vmfork_worker_thread_cpu_seconds{") && $0.contains("thread=\"poller\"") }
            #expect(perWorker != nil && metrics.contains("vmfork_thread_cpu_seconds{thread=\"poller\"} "), "\(metrics)")
            #expect(try await client.send("DELETE", "/v1/containers/\(id)?force=true").status == 204)
        }
    }

    /// kill -9 of one worker: its containers are recorded exited with the reason, the other
    /// worker's containers finish normally, and the worker comes back with its parents.
    @Test func aWorkerKilledTakesOnlyItsOwnContainersAndComesBackWithItsParents() async throws {
        try await Self.withWorkers(2) { daemon, client in
            // busybox.main.32m on shard 0, busybox.main.16m on shard 1 (the fewest families first).
            #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":32,"readyVMs":2}"#.utf8)).status == 201)
            #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":16,"readyVMs":2}"#.utf8)).status == 201)
            var doomed: [String] = []
            var survivors: [String] = []
            for index in 0..<6 {
                let onShard0 = index % 2 == 0
                let name = "w\(index)"
                // The doomed ones run far longer than the test (a loaded host may take seconds to
                // start all six); the survivors two seconds.
                let spec = ContainerSpec(image: "busybox", name: name, arguments: Self.script(name, lines: onShard0 ? 400 : 8, interval: "0.25", code: 3),
                                         memoryMiB: onShard0 ? 32 : 16, openStdin: true)
                let made = try await client.send("POST", "/v1/containers", json: spec)
                #expect(made.status == 201, "\(made.text)")
                #expect(try await client.send("POST", "/v1/containers/\(name)/start").status == 200)
                if onShard0 { doomed.append(name) } else { survivors.append(name) }
            }
            let victim = try #require(Self.workerPID(daemon, shard: 0))
            let bystander = try #require(Self.workerPID(daemon, shard: 1))
            // Least privilege: the workers run their containers with no capability left.
            // Capabilities are per thread: every thread of each worker is checked.
            for pid in [victim, bystander] {
                let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
                #expect(threads.count > 1)
                for thread in threads {
                    let status = try String(contentsOfFile: "/proc/\(pid)/task/\(thread)/status", encoding: .utf8)
                    for field in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
                        #expect(status.contains("\(field):\t0000000000000000"), "worker \(pid) thread \(thread) \(field)")
                    }
                    #expect(status.contains("NoNewPrivs:\t1"), "worker \(pid) thread \(thread)")
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            kill(victim, SIGKILL)
            for name in doomed {
                let exit = try await client.send("POST", "/v1/containers/\(name)/wait").decode(ExitInfo.self)
                #expect(exit.exitCode == 137, "\(name): \(exit)")
                #expect(exit.reason.contains("worker (shard 0, pid \(victim)) died: killed by signal 9"), "\(name): \(exit.reason)")
            }
            for name in survivors {
                let exit = try await client.send("POST", "/v1/containers/\(name)/wait").decode(ExitInfo.self)
                #expect(exit.exitCode == 3, "\(name) finishes normally: \(exit)")
                let stdout = try await client.send("GET", "/v1/containers/\(name)/logs?stream=stdout")
                #expect(stdout.text == Self.expectedLog(name, lines: 8, stream: "line"))
            }
            #expect(Self.workerPID(daemon, shard: 1) == bystander, "the other worker never noticed")
            // The worker comes back, with the parents of its policy made again.
            let deadline = Date().addingTimeInterval(30)
            var back: ParentInfo?
            while Date() < deadline {
                let parents = try await client.send("GET", "/v1/parents?sharing=false").decode([ParentInfo].self)
                if let parent = parents.first(where: { $0.id == "busybox.main.32m" }), parent.state == "ready", parent.parentsReady == 1 {
                    back = parent
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(back?.policy.readyVMs == 2, "the policy's parents are back: \(String(describing: back))")
            let restarted = Self.workerPID(daemon, shard: 0)
            #expect(restarted != nil && restarted != victim)
            let run = try await client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["echo", "again"], memoryMiB: 32))
            #expect(try run.decode(RunResult.self).stdout == "again\n")
            let workers = try await client.send("GET", "/v1/workers").decode([WorkerInfo].self)
            #expect(workers.map(\.shard) == [0, 1] && workers.allSatisfy(\.connected))
            #expect(workers.map(\.pid) == [restarted, bystander])
            #expect(workers.map(\.restarts) == [1, 0])
            #expect(workers.map(\.parents) == [["busybox.main.32m"], ["busybox.main.16m"]])
            let lost = try daemon.events(client, type: "worker.exit")
            #expect(lost.contains { ($0["subject"] as? String) == "0" && (($0["detail"] as? String) ?? "").contains("killed by signal 9") }, "\(lost)")
            #expect(try daemon.events(client, type: "worker.restart").contains { ($0["subject"] as? String) == "0" })
        }
    }
}
