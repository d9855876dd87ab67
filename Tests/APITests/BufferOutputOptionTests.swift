import API
import Engine
import Foundation
import TestSupport
import Testing

/// `vmfork serve --no-buffer-output`: containers' writes to their logs are each made at once,
/// by a VM exit when calls go by exit; by default the program buffers them, one system-call
/// exit fewer for a `busybox echo` (KVM counts each as an emulated instruction: unlike the
/// page faults of a VM made fresh, their number does not depend on the machine's load).
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct BufferOutputOptionTests {
    /// The system-call exits per container of six `busybox echo hi` runs, with calls by exit.
    private func exitsPerContainer(_ extra: [String]) throws -> Double {
        let daemon = try DaemonFixture()
        try daemon.start(extra: ["--no-poll-syscalls"] + extra)
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        for _ in 0..<6 {
            let run = try client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["echo", "hi"]))
            #expect(run.status == 200, "\(run.text)")
            #expect(try run.decode(RunResult.self).stdout == "hi\n")
        }
        let count = try client.metric("vmfork_container_exits_total")
        #expect(count >= 6)
        return try client.metric("vmfork_vm_emulated_instructions_total") / max(count, 1)
    }

    @Test func theDaemonBuffersOutputUnlessToldNot() throws {
        let buffered = try exitsPerContainer([])
        let atOnce = try exitsPerContainer(["--no-buffer-output"])
        #expect(atOnce >= buffered + 0.5, "buffered \(buffered) system-call exits a container, at once \(atOnce)")
    }

    @Test func theHelpNamesTheOption() throws {
        for command in ["serve", "run", "fork"] {
            let help = try HostFacts.run(DaemonFixture.binary, [command, "--help"])
            #expect(help.stdout.contains("--no-buffer-output"), "vmfork \(command) --help")
        }
    }
}
