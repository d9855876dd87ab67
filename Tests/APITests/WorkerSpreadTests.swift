import API
import Engine
import Foundation
import TestSupport
import Testing

/// One parent policy over several workers: a policy of P parents puts a parent in each of
/// min(P, workers) workers, and its forks are balanced over them. Real daemon, workers, KVM.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"), .serialized)
struct WorkerSpreadTests {
    @Test func aPolicyOfTwoParentsSpansTwoWorkersAndItsForksAreBalanced() async throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--workers", "3"])
        defer {
            daemon.stop()
            WorkerTests.killWorkers(daemon, count: 3)
        }
        let client = daemon.client
        try daemon.addBusybox(client)
        // One single-parent policy first (shard 0), then a two-parent one: shards 1 and 2.
        #expect(try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":16,"readyVMs":1}"#.utf8)).status == 201)
        let made = try await client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","memoryMiB":24,"parents":2,"readyVMs":1}"#.utf8))
        #expect(made.status == 201, "\(made.text)")
        let created = try made.decode(ParentInfo.self)
        #expect(created.parentsReady == 2 && created.policy.parents == 2, "\(created)")
        var workers = try await client.send("GET", "/v1/workers").decode([WorkerInfo].self)
        #expect(workers.map(\.parents) == [["busybox.main.16m"], ["busybox.main.24m"], ["busybox.main.24m"]])
        #expect(workers.map { $0.process?.parents } == [1, 1, 1], "a parent in each worker")
        // Eight forks held open: four in each of the policy's workers, none in the other.
        for index in 0..<8 {
            let spec = ContainerSpec(image: "busybox", name: "spread\(index)", arguments: ["sh", "-c", "read x; echo $x-\(index)"], memoryMiB: 24, openStdin: true)
            #expect(try await client.send("POST", "/v1/containers", json: spec).status == 201)
            #expect(try await client.send("POST", "/v1/containers/spread\(index)/start").status == 200)
        }
        workers = try await client.send("GET", "/v1/workers").decode([WorkerInfo].self)
        #expect(workers.map(\.liveContainers) == [0, 4, 4], "\(workers.map(\.liveContainers))")
        #expect(workers.map { $0.process?.liveChildren } == [0, 4, 4])
        let parents = try await client.send("GET", "/v1/parents?sharing=false").decode([ParentInfo].self)
        let spread = try #require(parents.first { $0.id == "busybox.main.24m" })
        #expect(spread.parentsReady == 2 && spread.liveChildren == 8 && spread.policy.parents == 2, "\(spread)")
        // Each ends with its own output, wherever it ran.
        for index in 0..<8 {
            #expect(try await client.send("POST", "/v1/containers/spread\(index)/stdin?close=true", body: Data("hi\n".utf8)).status < 300)
            let exit = try await client.send("POST", "/v1/containers/spread\(index)/wait").decode(ExitInfo.self)
            #expect(exit.exitCode == 0)
            #expect(try await client.send("GET", "/v1/containers/spread\(index)/logs?stream=stdout").text == "hi-\(index)\n")
        }
        // Removing the policy (its children removed) removes its parents from both workers.
        for index in 0..<8 { #expect(try await client.send("DELETE", "/v1/containers/spread\(index)").status == 204) }
        let removed = try await client.send("DELETE", "/v1/parents/busybox.main.24m")
        #expect(removed.status == 204, "\(removed.text)")
        workers = try await client.send("GET", "/v1/workers").decode([WorkerInfo].self)
        #expect(workers.map(\.parents) == [["busybox.main.16m"], [], []])
        #expect(workers.map { $0.process?.parents } == [1, 0, 0])
    }
}
