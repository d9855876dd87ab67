import API
import Engine
import Foundation
import ProcessVM
import TestSupport
import Testing

/// The host agent end to end: a real daemon on a temporary state folder, real KVM guests.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct DaemonTests {
    @Test func socketIsPrivateAndTheDocumentIsServedRouteForRoute() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        var info = stat()
        #expect(stat(daemon.socketPath, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600, "socket mode \(String(info.st_mode & 0o777, radix: 8))")
        #expect((info.st_mode & S_IFMT) == S_IFSOCK)
        var token = stat()
        #expect(stat(daemon.state.appendingPathComponent(TokenFile.fileName).path, &token) == 0)
        #expect(token.st_mode & 0o777 == 0o600)

        let client = daemon.client
        let served = try client.send("GET", "/v1/openapi.json")
        let repository = try Data(contentsOf: HostFacts.packageRoot.appendingPathComponent("Sources/API/openapi.json"))
        #expect(served.status == 200)
        #expect(served.body == repository, "the daemon serves the repository's document")
        // Every documented operation is routed: none answers the router's "no such route".
        let operations = try AgentDaemon.documentedOperations(repository)
        #expect(operations.count > 30)
        for operation in operations.sorted() {
            let parts = operation.split(separator: " ")
            let path = parts[1].replacingOccurrences(of: "{name}", with: "nosuch").replacingOccurrences(of: "{id}", with: "424242")
            let response = try client.send(String(parts[0]), path, body: parts[0] == "GET" || parts[0] == "DELETE" ? nil : Data("{}".utf8))
            #expect(response.status < 500, "\(operation): \(response.status) \(response.text)")
            #expect(!response.text.contains("\"no_route\""), "\(operation) is documented but not routed")
        }
        let unknown = try client.send("GET", "/v1/nothing")
        #expect(unknown.status == 404 && unknown.text.contains("no_route"))
    }

    @Test func hundredContainersRunConcurrentlyEachWithItsOwnOutputAndStatus() async throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        let results = try await withThrowingTaskGroup(of: (Int, RunResult, Int).self) { group in
            for index in 0..<100 {
                group.addTask {
                    let spec = ContainerSpec(image: "busybox", arguments: ["sh", "-c", "echo container-\(index) $HOSTNAME_CHECK; echo err-\(index) >&2; exit \(index % 7)"],
                                             environment: ["HOSTNAME_CHECK=h\(index)"], labels: ["index": "\(index)"])
                    let response = try await client.send("POST", "/v1/containers/run", json: spec)
                    return (index, try response.decode(RunResult.self), response.status)
                }
            }
            var all: [(Int, RunResult, Int)] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 100)
        for (index, result, status) in results {
            #expect(status == 200)
            #expect(result.stdout == "container-\(index) h\(index)\n")
            #expect(result.stderr == "err-\(index)\n")
            #expect(result.exitCode == index % 7)
        }
        #expect(Set(results.map(\.1.id)).count == 100, "unique container ids")
        let listed = try await client.send("GET", "/v1/containers").decode([ContainerInfo].self)
        #expect(listed.isEmpty, "run removes its container")
        let exits = try daemon.events(client, type: "container.exit")
        #expect(exits.count == 100)
        #expect(daemon.stop() == 0)
    }

    @Test func logsFollowWhileTheContainerWrites() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        let script = "i=0; while [ $i -lt 6 ]; do echo line $i; j=0; while [ $j -lt 30000 ]; do j=$((j+1)); done; i=$((i+1)); done"
        let created = try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "writer", arguments: ["sh", "-c", script]))
        #expect(created.status == 201)
        #expect(try client.send("POST", "/v1/containers/writer/start").status == 200)
        var received = Data()
        var statesWhileReceiving: [String] = []
        let status = try client.stream("GET", "/v1/containers/writer/logs?follow=true") { chunk in
            received.append(chunk)
            if let info = try? client.send("GET", "/v1/containers/writer").decode(ContainerInfo.self) {
                statesWhileReceiving.append(info.state.rawValue)
            }
            return true
        }
        #expect(status == 200)
        #expect(String(decoding: received, as: UTF8.self) == (0..<6).map { "line \($0)\n" }.joined())
        #expect(statesWhileReceiving.first == "running", "the first lines arrived while the container still ran: \(statesWhileReceiving)")
        #expect(statesWhileReceiving.count >= 2, "the output came in several pieces: \(statesWhileReceiving)")
        // A client resuming passes the bytes it has.
        let rest = try client.send("GET", "/v1/containers/writer/logs?stream=stdout&since=7")
        #expect(rest.text == String(String(decoding: received, as: UTF8.self).dropFirst(7)))
        let exit = try client.send("POST", "/v1/containers/writer/wait").decode(ExitInfo.self)
        #expect(exit.exitCode == 0)
    }

    /// `logs` by time: each line stamped with when it was written (the engine's time index
    /// beside each log), stdout and stderr merged in that order, since/until by time, a
    /// process the container forks timed too, bad times refused by name, and a time index
    /// with a partial last record (a writer killed mid-record) read as far as it is whole.
    @Test func logsCarryTheTimesTheLinesWereWritten() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        // The subshell is a forked guest process (a VM of its own) writing to the same logs.
        let script = "echo a; sleep 0.3; echo b >&2; sleep 0.3; (echo c; sleep 0.3; echo d >&2); echo e"
        let created = try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "timed", arguments: ["sh", "-c", script]))
        #expect(created.status == 201)
        let id = try created.decode(ContainerInfo.self).id
        #expect(try client.send("POST", "/v1/containers/timed/start").status == 200)
        #expect(try client.send("POST", "/v1/containers/timed/wait").decode(ExitInfo.self).exitCode == 0)
        let info = try client.send("GET", "/v1/containers/timed").decode(ContainerInfo.self)
        let (started, finished) = (try #require(info.startedAt), try #require(info.finishedAt))

        func stamped(_ query: String) throws -> [(time: Double, text: String)] {
            let response = try client.send("GET", "/v1/containers/timed/logs?timestamps=true" + query)
            #expect(response.status == 200, "\(query): \(response.text)")
            return response.text.split(separator: "\n").map { line in
                let stamp = line.prefix(LogStamp.length)
                #expect(line.dropFirst(LogStamp.length).first == " ", "\(line)")
                let nanoseconds = LogStamp.parse(stamp.utf8) ?? 0
                return (Double(nanoseconds) / 1e9, String(line.dropFirst(LogStamp.length + 1)))
            }
        }
        let all = try stamped("")
        #expect(all.map(\.text) == ["a", "b", "c", "d", "e"], "merged in the order written: \(all)")
        for (earlier, later) in zip(all, all.dropFirst()) {
            #expect(earlier.time < later.time, "\(all)")
        }
        // Each sleep of 0.3 s is between two lines; a stamp is at most 1 ms early.
        for (earlier, later) in zip(all, all.dropFirst()) where ["a", "b", "c"].contains(earlier.text) {
            #expect(later.time - earlier.time >= 0.299, "\(earlier) → \(later)")
        }
        // Within the container's life (its start and end are seconds as a Double: 1 µs of slack).
        #expect(all.allSatisfy { $0.time >= started - 1e-6 && $0.time <= finished + 1e-6 }, "\(started) \(all) \(finished)")
        // One stream alone: the same stamps.
        let stdout = try stamped("&stream=stdout")
        #expect(stdout.map(\.text) == ["a", "c", "e"])
        #expect(stdout.map(\.time) == all.filter { ["a", "c", "e"].contains($0.text) }.map(\.time))
        // since between a and c: b on; until before b: a alone; both: b and c.
        let (a, b, c) = (all[0].time, all[1].time, all[2].time)
        func at(_ time: Double) -> String { String(format: "%.6f", time) }
        #expect(try stamped("&sinceTime=\(at((a + b) / 2))").map(\.text) == ["b", "c", "d", "e"])
        #expect(try stamped("&untilTime=\(at((a + b) / 2))").map(\.text) == ["a"])
        #expect(try stamped("&sinceTime=\(at((a + b) / 2))&untilTime=\(at((c + all[3].time) / 2))").map(\.text) == ["b", "c"])
        // A time filter without stamps: the lines as they are.
        #expect(try client.send("GET", "/v1/containers/timed/logs?stream=stderr&sinceTime=\(at((a + b) / 2))").text == "b\nd\n")
        // The byte offset still works as before, and with times.
        #expect(try client.send("GET", "/v1/containers/timed/logs?stream=stdout&since=2").text == "c\ne\n")
        #expect(try stamped("&stream=stdout&since=2").map(\.text) == ["c", "e"])

        // Bad times: refused by name, with what was wrong.
        let future = Date().timeIntervalSince1970 + 3600
        for (query, field) in [("sinceTime=nan", "sinceTime"), ("sinceTime=-1", "sinceTime"), ("untilTime=inf", "untilTime"),
                               ("sinceTime=\(at(future))", "sinceTime"), ("sinceTime=\(at(b))&untilTime=\(at(a))", "untilTime"),
                               ("sinceTime=soon", "sinceTime"), ("timestamps=maybe", "timestamps"),
                               // Past the nanoseconds a 64-bit number holds (the API fuzz once crashed the daemon so).
                               ("untilTime=22136517058.58922", "untilTime"), ("untilTime=9000000001", "untilTime")] {
            let refused = try client.send("GET", "/v1/containers/timed/logs?" + query)
            #expect(refused.status == 400 && refused.text.contains(field), "\(query): \(refused.status) \(refused.text)")
        }

        // The CLI: the same stamps with --timestamps, and --since.
        let cli = try HostFacts.run(DaemonFixture.binary, ["container", "logs", "--state", daemon.state.path, "--timestamps", "--since", at((a + b) / 2), "timed"])
        let stampedText = try client.send("GET", "/v1/containers/timed/logs?timestamps=true").text
        #expect(cli.status == 0 && cli.stdout == stampedText.split(separator: "\n").dropFirst().map { $0 + "\n" }.joined(), "\(cli)")
        let badCLI = try HostFacts.run(DaemonFixture.binary, ["container", "logs", "--state", daemon.state.path, "--since", "soon", "timed"])
        #expect(badCLI.status != 0 && badCLI.stderr.contains("--since soon"), "\(badCLI)")

        // A partial record at the end of the index (a writer killed mid-record) is ignored.
        let index = daemon.state.appendingPathComponent("containers/\(id)/stdout.times")
        let whole = try Data(contentsOf: index)
        #expect(!whole.isEmpty && whole.count % LogTimeIndex.recordSize == 0, "\(whole.count) bytes")
        let handle = try FileHandle(forWritingTo: index)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))
        try handle.close()
        #expect(try stamped("").map(\.time) == all.map(\.time))
    }

    @Test func stopRunsTheGuestsTermHandler() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        let script = "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do :; done"
        #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "trapper", arguments: ["sh", "-c", script])).status == 201)
        #expect(try client.send("POST", "/v1/containers/trapper/start").status == 200)
        let deadline = Date().addingTimeInterval(10)
        while try client.send("GET", "/v1/containers/trapper/logs").text != "ready\n", Date() < deadline { usleep(10_000) }
        let stopped = try client.send("POST", "/v1/containers/trapper/stop?grace=5")
        #expect(stopped.status == 200)
        let exit = try stopped.decode(ExitInfo.self)
        #expect(exit.exitCode == 7, "the handler's exit status, not a power-off: \(exit)")
        #expect(try client.send("GET", "/v1/containers/trapper/logs").text == "ready\ngot TERM\n")
        // Without a handler, SIGTERM's default action: 143.
        #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "plain", arguments: ["sh", "-c", "while true; do :; done"])).status == 201)
        #expect(try client.send("POST", "/v1/containers/plain/start").status == 200)
        usleep(100_000)
        #expect(try client.send("POST", "/v1/containers/plain/stop?grace=5").decode(ExitInfo.self).exitCode == 143)
        #expect(try client.send("DELETE", "/v1/containers/plain").status == 204)
        let stops = try daemon.events(client, type: "container.stop")
        #expect(stops.count == 2 && stops.allSatisfy { ($0["actor"] as? String) == "uid:\(getuid())" && ($0["result"] as? String) == "ok" })
    }

    @Test func tcpWithoutOrWithAWrongTokenIsRefusedAndLogged() throws {
        let daemon = try DaemonFixture(tcp: true)
        try daemon.start()
        defer { daemon.stop() }
        let port = try #require(daemon.tcpPort)
        let token = try #require(try TokenFile.load(path: daemon.state.appendingPathComponent(TokenFile.fileName).path).tokens.first)
        let anonymous = AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: nil))
        let wrong = AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: String(repeating: "0", count: token.value.count)))
        let right = AgentClient(endpoint: .tcp(host: "127.0.0.1", port: port, token: token.value))
        let missing = try anonymous.send("GET", "/v1/version")
        #expect(missing.status == 401 && missing.text.contains("missing bearer token"))
        #expect(try anonymous.send("POST", "/v1/images", body: Data("{}".utf8)).status == 401)
        let refused = try wrong.send("GET", "/v1/containers")
        #expect(refused.status == 401 && refused.text.contains("wrong bearer token"))
        #expect(try right.send("GET", "/v1/version").status == 200)
        // A state change on TCP is recorded under the token's name.
        #expect(try right.send("POST", "/v1/placement/pools", body: Data(#"{"name":"tcp-pool"}"#.utf8)).status == 201)
        let events = try daemon.events(daemon.client)
        let refusals = events.filter { ($0["type"] as? String) == "auth.refused" }
        #expect(refusals.count == 3)
        #expect(refusals.allSatisfy { ($0["actor"] as? String)?.hasPrefix("tcp:") == true })
        #expect(refusals.map { $0["result"] as? String } == ["missing bearer token", "missing bearer token", "wrong bearer token"])
        #expect(events.contains { ($0["type"] as? String) == "pool.add" && ($0["actor"] as? String) == "token:\(token.name)" })
    }

    @Test func aRestartKeepsImagesPoliciesPoolsAndTheEventLog() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        let client = daemon.client
        try daemon.addBusybox(client)
        #expect(try client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":32,"readyVMs":2}"#.utf8)).status == 201)
        #expect(try client.send("POST", "/v1/placement/hosts", body: Data(#"{"name":"h1","cpuCores":4,"nodeMemoryKiB":[1048576]}"#.utf8)).status == 201)
        #expect(try client.send("POST", "/v1/placement/pools", body: Data(#"{"name":"dev","memoryReservationKiB":1024}"#.utf8)).status == 201)
        #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "spinner", arguments: ["sh", "-c", "while true; do :; done"])).status == 201)
        #expect(try client.send("POST", "/v1/containers/spinner/start").status == 200)
        usleep(300_000)
        let before = try daemon.events(client)
        // The daemon dies with its container running (no graceful stop).
        daemon.stop(signal: SIGKILL)
        try daemon.start()
        defer { daemon.stop() }
        let images = try client.send("GET", "/v1/images").decode([ImageRecord].self)
        #expect(images.map(\.name) == ["busybox"])
        let parents = try client.send("GET", "/v1/parents?sharing=false").decode([ParentInfo].self)
        #expect(parents.map(\.id).sorted() == ["busybox.main.32m", "busybox.main.64m"])
        #expect(parents.first { $0.id == "busybox.main.32m" }?.policy.readyVMs == 2)
        let pools = try client.send("GET", "/v1/placement/pools")
        #expect(pools.text.contains("\"dev\""))
        let spinner = try client.send("GET", "/v1/containers/spinner").decode(ContainerInfo.self)
        #expect(spinner.state == .exited)
        #expect(spinner.exitReason?.contains("restarted") == true)
        let after = try daemon.events(client)
        #expect(after.count > before.count)
        #expect(zip(before, after).allSatisfy { ($0["id"] as? Int) == ($1["id"] as? Int) && ($0["type"] as? String) == ($1["type"] as? String) },
                "the log before the restart is kept as it was")
        #expect(after.contains { ($0["type"] as? String) == "container.stopped" && ($0["subject"] as? String) == spinner.id })
        // The parents of the recorded policies are made again, and fork.
        let run = try client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["echo", "after restart"], memoryMiB: 32))
        #expect(try run.decode(RunResult.self).stdout == "after restart\n")
        #expect(try client.send("DELETE", "/v1/containers/spinner").status == 204)
    }

    /// The state writer leaves out the row of a container made and removed within one batch,
    /// and its deletion; one written in an earlier batch is still deleted. Either way a
    /// removed container stays removed across a restart, and a kept one is there.
    @Test func removedContainersStayRemovedAcrossARestart() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        let client = daemon.client
        try daemon.addBusybox(client)
        func run(_ name: String, pause: Bool) throws {
            #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: name, arguments: ["echo", name])).status == 201)
            // Past the writer's 5 ms gathering window: its row is written before the rest.
            if pause { usleep(100_000) }
            #expect(try client.send("POST", "/v1/containers/\(name)/start").status == 200)
            #expect(try client.send("POST", "/v1/containers/\(name)/wait").status == 200)
        }
        try run("written-first", pause: true)
        #expect(try client.send("DELETE", "/v1/containers/written-first").status == 204)
        try run("kept", pause: true)
        for round in 0..<5 {
            try run("quick-\(round)", pause: false)
            #expect(try client.send("DELETE", "/v1/containers/quick-\(round)").status == 204)
        }
        daemon.stop()
        try daemon.start()
        defer { daemon.stop() }
        let listed = try client.send("GET", "/v1/containers").decode([ContainerInfo].self)
        #expect(listed.map(\.name) == ["kept"])
        #expect(try client.send("GET", "/v1/containers/written-first").status == 404)
    }

    @Test func aSecondDaemonOnTheSameFolderIsRefused() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let second = try HostFacts.run(DaemonFixture.binary, ["serve", "--state", daemon.state.path])
        #expect(second.status == 1)
        #expect(second.stderr.contains("in use by another vmfork daemon"))
        #expect(try daemon.client.send("GET", "/v1/_ping").status == 200)
    }

    @Test func badInputIsRefusedByNameAndChangesNothing() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        // An image whose program ends without reading standard input: no stdin fork point.
        let truthy = #"{"name":"truthy","rootfs":"\#(daemon.rootfs.path)","executable":"/bin/busybox","arguments":["true"]}"#
        #expect(try client.send("POST", "/v1/images", body: Data(truthy.utf8)).status == 201)
        func snapshot() throws -> String {
            try ["/v1/images", "/v1/containers", "/v1/parents?sharing=false", "/v1/placement/pools", "/v1/placement/hosts"]
                .map { try client.send("GET", $0).text }.joined(separator: "\n")
        }
        let before = try snapshot()
        let cases: [(String, String, String, Int, String)] = [
            ("POST", "/v1/containers", #"{"image":"busybox""#, 400, "not valid JSON"),
            ("POST", "/v1/containers", #"["busybox"]"#, 400, "JSON object"),
            ("POST", "/v1/containers", #"{"image":"busybox","colour":"red"}"#, 400, "colour"),
            ("POST", "/v1/containers", #"{"image":"busybox","name":null}"#, 400, "is null"),
            ("POST", "/v1/containers", #"{"image":"busybox","memoryMiB":99999999}"#, 400, "memoryMiB"),
            ("POST", "/v1/containers", #"{"image":"busybox","memoryMiB":"64"}"#, 400, "memoryMiB"),
            ("POST", "/v1/containers", #"{"image":"busybox","memoryMiB":1e30}"#, 400, "out of any range"),
            ("POST", "/v1/containers", #"{"image":"nosuch"}"#, 404, "unknown image nosuch"),
            ("POST", "/v1/containers", #"{"image":"busybox","pool":"nosuch"}"#, 404, "nosuch"),
            ("POST", "/v1/containers", #"{"image":"busybox","environment":["NOEQUALS"]}"#, 400, "NOEQUALS"),
            ("POST", "/v1/containers", #"{}"#, 400, "is required"),
            ("POST", "/v1/containers/nosuch/start", "", 404, "unknown container nosuch"),
            ("POST", "/v1/containers/nosuch/kill?signal=99", "", 400, "signal"),
            ("DELETE", "/v1/images/nosuch", "", 404, "unknown image"),
            ("POST", "/v1/images", #"{"name":"x","rootfs":"/nonexistent","executable":"/bin/sh"}"#, 400, "rootfs"),
            ("POST", "/v1/images", #"{"name":"busybox","rootfs":"/","executable":"/bin/sh"}"#, 409, "already exists"),
            ("POST", "/v1/parents", #"{"image":"busybox","parents":0}"#, 400, "parents"),
            ("POST", "/v1/parents", #"{"image":"truthy","forkPoint":"stdin"}"#, 400, "ended before it first read standard input"),
            ("POST", "/v1/containers", #"{"image":"truthy","forkPoint":"stdin"}"#, 400, "ended before it first read standard input"),
            ("POST", "/v1/placement/pools", #"{"name":"p","memoryReservationKiB":-1}"#, 400, "memoryReservationKiB"),
            ("POST", "/v1/placement/pools", #"{"name":"p","parent":"nosuch"}"#, 404, "nosuch"),
            ("POST", "/v1/placement/place", #"{"pool":"nosuch","image":"busybox"}"#, 404, "nosuch"),
            ("GET", "/v1/events?follow=maybe", "", 400, "follow"),
            ("GET", "/v1/containers?state=sleeping", "", 400, "state"),
        ]
        for (method, path, body, status, mention) in cases {
            let response = try client.send(method, path, body: body.isEmpty ? nil : Data(body.utf8))
            #expect(response.status == status, "\(method) \(path) \(body): \(response.status) \(response.text)")
            #expect(response.headers["content-type"] == "application/json")
            #expect(response.text.contains(mention), "\(method) \(path) \(body): \(response.text)")
        }
        let big = try client.send("POST", "/v1/containers", body: Data(repeating: 0x20, count: 2 << 20))
        #expect(big.status == 413 && big.text.contains("too_large"))
        #expect(try snapshot() == before, "refused requests changed nothing")
        let refused = try daemon.events(client).filter { ($0["result"] as? String) != "ok" }
        #expect(refused.contains { ($0["type"] as? String) == "request.refused" && ($0["actor"] as? String) == "uid:\(getuid())"
                                   && ($0["result"] as? String)?.contains("colour") == true })
        #expect(refused.contains { ($0["type"] as? String) == "container.create" && ($0["result"] as? String) == "unknown image nosuch" })
        // An image in use is not removed.
        #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "user", arguments: ["true"])).status == 201)
        let inUse = try client.send("DELETE", "/v1/images/busybox")
        #expect(inUse.status == 409 && inUse.text.contains("used by 1 container"))
        #expect(try client.send("DELETE", "/v1/containers/user").status == 204)
        #expect(try client.send("DELETE", "/v1/images/busybox").status == 204)
        #expect(try client.send("DELETE", "/v1/images/truthy").status == 204)
    }

    @Test func stdinAttachLabelFiltersAndTheFollowedEventStream() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        // A follower of the event log, from the start, for container exits only.
        let followed = FollowedEvents()
        let follower = Thread {
            _ = try? daemon.client.stream("GET", "/v1/events?follow=true&type=container.exit&timeout=30") { chunk in
                followed.append(chunk)
                return !followed.text.contains("\n")
            }
        }
        follower.start()
        let spec = ContainerSpec(image: "busybox", name: "reader", arguments: ["sh", "-c", "read line; echo got $line"],
                                 labels: ["role": "reader"], openStdin: true)
        #expect(try client.send("POST", "/v1/containers", json: spec).status == 201)
        #expect(try client.send("POST", "/v1/containers/reader/start").status == 200)
        #expect(try client.send("POST", "/v1/containers/reader/stdin?close=true", body: Data("hello\n".utf8), contentType: "application/octet-stream").status == 204)
        #expect(try client.send("POST", "/v1/containers/reader/wait").decode(ExitInfo.self).exitCode == 0)
        #expect(try client.send("GET", "/v1/containers/reader/logs").text == "got hello\n")
        // Its input is closed now: nothing to write is no error (a ^C that ended a terminal's
        // program sends nothing after it), bytes are refused naming why.
        #expect(try client.send("POST", "/v1/containers/reader/stdin", body: Data(), contentType: "application/octet-stream").status == 204)
        let late = try client.send("POST", "/v1/containers/reader/stdin", body: Data("late\n".utf8), contentType: "application/octet-stream")
        #expect(late.status == 409 && late.text.contains("is closed"), "\(late.status) \(late.text)")
        #expect(try client.send("GET", "/v1/containers?label=role=reader").decode([ContainerInfo].self).map(\.name) == ["reader"])
        #expect(try client.send("GET", "/v1/containers?label=role=writer").decode([ContainerInfo].self).isEmpty)
        #expect(try client.send("GET", "/v1/containers?state=exited&label=role").decode([ContainerInfo].self).count == 1)
        // A label filter without a key is refused by name (it once crashed the daemon when a
        // container was there to match).
        for empty in ["", "=reader"] {
            let refused = try client.send("GET", "/v1/containers?label=\(empty)")
            #expect(refused.status == 400 && refused.text.contains("label"), "label=\(empty): \(refused.text)")
        }
        #expect(try client.send("POST", "/v1/containers/reader/kill?signal=15").status == 409)
        let id = try client.send("GET", "/v1/containers/reader").decode(ContainerInfo.self).id
        let deadline = Date().addingTimeInterval(10)
        while !followed.text.contains("\n"), Date() < deadline { usleep(10_000) }
        let line = followed.text.split(separator: "\n").first.map(String.init) ?? ""
        #expect(line.contains("\"type\":\"container.exit\"") && line.contains(id), "followed: \(followed.text)")
    }

    /// One call at a container's end where a client would make four: the wait carries the
    /// whole stdout and stderr when they fit and removes the container only then, so a client
    /// never loses output it did not get.
    @Test func waitCarriesTheOutputAndRemovesOnlyWhenItFits() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        // Bytes that are not UTF-8 pass through as they are (base64 in the JSON).
        let script = "echo out; printf '\\377\\000x' >&2; echo err >&2; exit 3"
        let fits = ContainerSpec(image: "busybox", name: "fits", arguments: ["sh", "-c", script])
        #expect(try client.send("POST", "/v1/containers", json: fits).status == 201)
        #expect(try client.send("POST", "/v1/containers/fits/start").status == 200)
        let id = try client.send("GET", "/v1/containers/fits").decode(ContainerInfo.self).id
        let ended = try client.send("POST", "/v1/containers/fits/wait?output=64&remove=true")
        #expect(ended.status == 200, "\(ended.text)")
        let exit = try ended.decode(ExitInfo.self)
        #expect(exit.exitCode == 3 && exit.removed == true)
        #expect(exit.stdout == Data("out\n".utf8))
        #expect(exit.stderr == Data([0xFF, 0x00, 0x78]) + Data("err\n".utf8), "\(String(describing: exit.stderr.map { Array($0) }))")
        #expect(try client.send("GET", "/v1/containers/fits").status == 404)
        let removals = try daemon.events(client, type: "container.remove")
        #expect(removals.contains { ($0["subject"] as? String) == id })
        // Output beyond the limit: neither stream comes, and the container stays for its logs.
        let big = ContainerSpec(image: "busybox", name: "big", arguments: ["sh", "-c", "echo 0123456789; echo more >&2"])
        #expect(try client.send("POST", "/v1/containers", json: big).status == 201)
        #expect(try client.send("POST", "/v1/containers/big/start").status == 200)
        let kept = try client.send("POST", "/v1/containers/big/wait?output=15&remove=true").decode(ExitInfo.self)
        #expect(kept.exitCode == 0 && kept.stdout == nil && kept.stderr == nil && kept.removed == false)
        #expect(try client.send("GET", "/v1/containers/big/logs?stream=stdout").text == "0123456789\n")
        // Without output, remove alone removes; a plain wait says nothing of either.
        #expect(try client.send("POST", "/v1/containers/big/wait").decode(ExitInfo.self) == ExitInfo(exitCode: 0, reason: kept.reason))
        #expect(try client.send("POST", "/v1/containers/big/wait?remove=true").decode(ExitInfo.self).removed == true)
        #expect(try client.send("GET", "/v1/containers/big").status == 404)
        for bad in ["output=-1", "output=1048577", "output=lots", "remove=maybe"] {
            let refused = try client.send("POST", "/v1/containers/nosuch/wait?\(bad)")
            #expect(refused.status == 400 && refused.text.contains(bad.split(separator: "=")[0]), "\(bad): \(refused.text)")
        }
    }

    /// A fork from a ready parent takes its placement in the same hop as the fork; when the
    /// fork then fails, that placement is released at once: the pool, room for one, still takes one.
    @Test func aForkThatFailsAfterItsPlacementGivesThePlacementBack() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        try daemon.addPoolWithRoomForOne(client, name: "one")
        // The parent is ready (made by a container outside the pool).
        let run = try client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["true"]))
        #expect(run.status == 200, "\(run.text)")
        // More environment than a child of a main fork point has room for: refused at the fork.
        let crowded = ContainerSpec(image: "busybox", arguments: ["true"], environment: (0..<300).map { "V\($0)=x" }, pool: "one")
        let refused = try client.send("POST", "/v1/containers", json: crowded)
        #expect(refused.status == 400 && refused.text.contains("do not fit"), "\(refused.text)")
        let fits = try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "fits", arguments: ["true"], pool: "one"))
        #expect(fits.status == 201, "the refused fork's placement was not given back: \(fits.text)")
        let full = try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", arguments: ["true"], pool: "one"))
        #expect(full.status == 409 && full.text.contains("one"), "\(full.text)")
        #expect(try client.send("DELETE", "/v1/containers/fits").status == 204)
    }

    /// Forks' placements are written behind, with their containers' rows: a daemon killed a
    /// moment after a create, or stopped, still has the placement when it starts again (the
    /// pool, room for one, stays full until that container is removed).
    @Test(arguments: [SIGKILL, SIGTERM])
    func aForksPlacementOutlivesTheDaemon(signal: Int32) throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        let client = daemon.client
        try daemon.addBusybox(client)
        try daemon.addPoolWithRoomForOne(client, name: "one")
        #expect(try client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["true"])).status == 200)
        let held = try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "held", arguments: ["true"], pool: "one"))
        #expect(held.status == 201, "\(held.text)")
        // Killed: once past the state writer's gathering window; stopped: at once (the stop flushes it).
        if signal == SIGKILL { usleep(300_000) }
        _ = daemon.stop(signal: signal)
        try daemon.start()
        defer { daemon.stop() }
        let refused = try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", arguments: ["true"], pool: "one"))
        #expect(refused.status == 409, "the placement of held was lost: \(refused.text)")
        #expect(try client.send("DELETE", "/v1/containers/held").status == 204)
        let fits = try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "fits", arguments: ["true"], pool: "one"))
        #expect(fits.status == 201, "held's placement was not given back at its removal: \(fits.text)")
        // And that release was written too: after another restart the pool holds fits alone.
        _ = daemon.stop()
        try daemon.start()
        #expect(try client.send("DELETE", "/v1/containers/fits").status == 204)
        #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", arguments: ["true"], pool: "one")).status == 201)
    }

    /// A container whose memory the host cannot map (more than its RAM and swap, under the
    /// kernel's overcommit heuristic) is refused as a 409 naming memoryMiB, found by the API
    /// fuzz as a 500; the daemon goes on serving.
    @Test func aContainerTheHostCannotMapIsRefusedNotAFailure() throws {
        let meminfo = try String(contentsOfFile: "/proc/meminfo", encoding: .utf8)
        func kib(_ field: String) -> Int {
            meminfo.split(separator: "\n").first { $0.hasPrefix(field + ":") }
                .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? 0
        }
        let hostMiB = (kib("MemTotal") + kib("SwapTotal")) / 1024
        let overcommit = (try? String(contentsOfFile: "/proc/sys/vm/overcommit_memory", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        guard hostMiB < 60_000, overcommit == "0" else { return }  // the host could map 64 GiB: nothing to refuse here
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        let huge = ContainerSpec(image: "busybox", arguments: ["true"], memoryMiB: 65536)
        let refused = try client.send("POST", "/v1/containers", json: huge)
        #expect(refused.status == 409 && refused.text.contains("memoryMiB"), "\(refused.status) \(refused.text)")
        let fine = ContainerSpec(image: "busybox", name: "after", arguments: ["true"], memoryMiB: 16)
        #expect(try client.send("POST", "/v1/containers", json: fine).status == 201)
    }

    @Test func drainEvictsAParentWithItsLastChildAndMetricsShowTheForks() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        let made = try client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":16,"readyVMs":2}"#.utf8))
        #expect(made.status == 201)
        #expect(try made.decode(ParentInfo.self).state == "ready")
        // A finished container's VM goes back to the pool when it exits, not when it is
        // removed: the pool is at its target again while the container is still listed.
        let quick = ContainerSpec(image: "busybox", name: "quick", arguments: ["true"], memoryMiB: 16)
        #expect(try client.send("POST", "/v1/containers", json: quick).status == 201)
        #expect(try client.send("POST", "/v1/containers/quick/start").status == 200)
        #expect(try client.send("POST", "/v1/containers/quick/wait").decode(ExitInfo.self).exitCode == 0)
        var readyNow = 0
        let refilled = Date().addingTimeInterval(10)
        repeat {
            readyNow = try client.send("GET", "/v1/parents").decode([ParentInfo].self).first { $0.id == "busybox.main.16m" }?.readyVMsNow ?? -1
            if readyNow < 2 { usleep(20_000) }
        } while readyNow < 2 && Date() < refilled
        #expect(readyNow == 2, "the exited container's VM did not come back to the pool")
        #expect(try client.send("DELETE", "/v1/containers/quick").status == 204)
        let child = ContainerSpec(image: "busybox", name: "child", arguments: ["sleep", "30"], memoryMiB: 16)
        #expect(try client.send("POST", "/v1/containers", json: child).status == 201)
        #expect(try client.send("POST", "/v1/containers/child/start").status == 200)
        // The child's private pages grow while its program starts: compare the two reports once
        // it sleeps (two reads in a row agree), not while it is still touching pages.
        var previous: Int?
        for _ in 0..<100 {
            let now = try client.send("GET", "/v1/parents/busybox.main.16m").decode(ParentInfo.self).sharing?.childPrivateBytesMedian
            if now != nil && now == previous { break }
            previous = now
            usleep(20_000)
        }
        let listedFrom = Date().timeIntervalSince1970
        let listed = try client.send("GET", "/v1/parents").decode([ParentInfo].self)
        let parent = try #require(listed.first { $0.id == "busybox.main.16m" })
        #expect(parent.liveChildren == 1)
        #expect(parent.sharing.map { $0.parentBytes > 0 && $0.children == 1 } == true, "sharing figures: \(String(describing: parent.sharing))")
        // One parent alone: the same figures, or none with sharing=false; an unknown one is 404.
        let alone = try client.send("GET", "/v1/parents/busybox.main.16m").decode(ParentInfo.self)
        let aloneBy = Date().timeIntervalSince1970
        #expect(alone.liveChildren == 1 && alone.sharing.map { $0.parentBytes > 0 && $0.children == 1 } == true)
        let (inList, own) = (try #require(parent.sharing), try #require(alone.sharing))
        #expect(own.parentBytes == inList.parentBytes && own.childPrivateBytesMedian == inList.childPrivateBytesMedian, "\(own) against \(inList)")
        #expect(own.childPrivateBytesMedian > 0 && own.childSharedBytesMedian > 0, "\(own)")
        // Each answer says when the kernel's accounting was read: during its request.
        #expect(listedFrom <= inList.measuredAt && inList.measuredAt <= own.measuredAt && own.measuredAt <= aloneBy)
        let bare = try client.send("GET", "/v1/parents/busybox.main.16m?sharing=false").decode(ParentInfo.self)
        #expect(bare.id == "busybox.main.16m" && bare.liveChildren == 1 && bare.sharing == nil)
        #expect(try client.send("GET", "/v1/parents/nosuch.main.16m?sharing=false").status == 404)
        // Once it ends, its VM goes back to the pool: it is still the parent's child (not
        // removed), but it holds no guest memory, so the sharing report no longer counts it.
        #expect(try client.send("POST", "/v1/containers/child/kill?signal=9").status == 200)
        #expect(try client.send("POST", "/v1/containers/child/wait").decode(ExitInfo.self).exitCode == 137)
        let afterExit = try #require(try client.send("GET", "/v1/parents").decode([ParentInfo].self).first { $0.id == "busybox.main.16m" })
        #expect(afterExit.liveChildren == 1)
        #expect(afterExit.sharing.map { $0.parentBytes > 0 && $0.children == 0 } == true, "sharing figures: \(String(describing: afterExit.sharing))")
        // Draining: no more forks from it; it goes with its last child.
        #expect(try client.send("POST", "/v1/parents/busybox.main.16m/drain").decode(ParentInfo.self).state == "draining")
        let refused = try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", arguments: ["true"], memoryMiB: 16))
        #expect(refused.status == 409 && refused.text.contains("draining"))
        #expect(try client.send("DELETE", "/v1/parents/busybox.main.16m").status == 409, "a parent with a live child is not removed")
        #expect(try client.send("DELETE", "/v1/containers/child").status == 204)
        let evictions = try daemon.events(client, type: "parent.evict")
        #expect(evictions.contains { ($0["subject"] as? String) == "busybox.main.16m" && ($0["actor"] as? String) == "engine" })
        #expect(try client.send("DELETE", "/v1/parents/busybox.main.16m").status == 204)
        let metrics = try client.send("GET", "/metrics")
        #expect(metrics.status == 200 && metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
        #expect(metrics.text.contains("vmfork_forks_total 2"))
        #expect(metrics.text.contains("vmfork_fork_duration_seconds_count 2"))
        #expect(metrics.text.contains("vmfork_containers_live 0"))
        // The finished children's exits, as KVM counted them, and the poller's figures.
        let exits = metrics.text.split(separator: "\n").first { $0.hasPrefix("vmfork_vm_exits_total ") }
        #expect(exits.flatMap { Int($0.split(separator: " ")[1]) }.map { $0 > 0 } == true, "\(metrics.text)")
        #expect(metrics.text.contains("vmfork_vm_exits_per_container_count 2"), "\(metrics.text)")
        #expect(metrics.text.contains("vmfork_poller_watched_vms "))
        // The poller thread's CPU time (the containers polled their calls, so it ran).
        #expect(metrics.text.contains("vmfork_thread_cpu_seconds{thread=\"poller\"} "), "\(metrics.text)")
    }
    @Test func underMemoryPressureIdlePoolsShrinkThenIdleParentsGoButNotOnesWithChildren() throws {
        let daemon = try DaemonFixture()
        // A threshold no host meets: the daemon is under memory pressure from the start.
        try daemon.start(extra: ["--pressure-available-mib", "100000000"])
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        #expect(try client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":16,"readyVMs":2}"#.utf8)).status == 201)
        #expect(try client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":32,"readyVMs":2}"#.utf8)).status == 201)
        // A live child keeps its parent.
        #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "keeper", arguments: ["true"], memoryMiB: 32)).status == 201)
        let deadline = Date().addingTimeInterval(20)
        var evicted: [[String: Any]] = []
        while evicted.isEmpty, Date() < deadline {
            usleep(200_000)
            evicted = try daemon.events(client, type: "parent.evict")
        }
        let shrunk = try daemon.events(client, type: "parent.shrink")
        #expect(shrunk.contains { ($0["subject"] as? String) == "busybox.main.16m" })
        #expect(evicted.map { $0["subject"] as? String } == ["busybox.main.16m"], "only the idle parent goes: \(evicted)")
        #expect((evicted.first?["detail"] as? String)?.contains("memory pressure") == true)
        let parents = try client.send("GET", "/v1/parents?sharing=false").decode([ParentInfo].self)
        #expect(parents.first { $0.id == "busybox.main.32m" }?.state == "ready")
        #expect(parents.first { $0.id == "busybox.main.16m" }?.state == "absent", "the policy stays; its parent is made again at its next use")
    }
}



final class FollowedEvents: @unchecked Sendable {
    // @unchecked: every access holds the lock.
    private let lock = NSLock()
    private var data = Data()
    func append(_ chunk: Data) { lock.withLock { data.append(chunk) } }
    var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
}
