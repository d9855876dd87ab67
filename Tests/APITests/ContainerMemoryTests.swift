import API
import Engine
import Foundation
import TestSupport
import Testing

extension DaemonTests {
    /// `?memory=true` reads each live container's own memory from the kernel's accounting,
    /// summed over the VMs of its processes; an ended container has none, and a list without
    /// the parameter reads none.
    @Test func aLiveContainersOwnMemoryCountsEveryProcessVM() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        // Two processes while the background sleep lives: the shell and its child.
        let script = "sleep 3 & echo ready; wait"
        #expect(try client.send("POST", "/v1/containers", json: ContainerSpec(image: "busybox", name: "two", arguments: ["sh", "-c", script])).status == 201)
        #expect(try client.send("POST", "/v1/containers/two/start").status == 200)
        let deadline = Date().addingTimeInterval(10)
        while try client.send("GET", "/v1/containers/two/logs").text != "ready\n", Date() < deadline { usleep(10_000) }

        let listed = try client.send("GET", "/v1/containers?memory=true").decode([ContainerInfo].self)
        let memory = try #require(listed.first { $0.name == "two" }?.memory)
        #expect(memory.vms == 2, "the shell and its background child: \(memory)")
        // Each VM owns at least its stack and data pages, and shares the parent's program text.
        #expect(memory.privateBytes >= 2 * 4096, "\(memory)")
        #expect(memory.sharedBytes >= 2 * 4096, "\(memory)")
        let inspected = try client.send("GET", "/v1/containers/two?memory=true").decode(ContainerInfo.self)
        #expect(inspected.memory?.vms == 2)
        // Not asked for: not read.
        #expect(try client.send("GET", "/v1/containers").decode([ContainerInfo].self).allSatisfy { $0.memory == nil })
        #expect(try client.send("GET", "/v1/containers/two").decode(ContainerInfo.self).memory == nil)
        // Refused by name when it is not a boolean.
        let bad = try client.send("GET", "/v1/containers?memory=lots")
        #expect(bad.status == 400 && bad.text.contains("memory"), "\(bad.status) \(bad.text)")

        #expect(try client.send("POST", "/v1/containers/two/wait").decode(ExitInfo.self).exitCode == 0)
        #expect(try client.send("GET", "/v1/containers/two?memory=true").decode(ContainerInfo.self).memory == nil)
    }
}
