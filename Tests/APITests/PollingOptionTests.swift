import API
import Engine
import Foundation
import TestSupport
import Testing

/// `vmfork serve --no-poll-syscalls`: containers make every system call through a VM exit,
/// so the engine's polling thread serves none; by default it serves most of them.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct PollingOptionTests {
    @Test(arguments: [true, false])
    func theDaemonPollsSystemCallsUnlessToldNot(polls: Bool) throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: polls ? [] : ["--no-poll-syscalls"])
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)
        // Many small calls (each `[ -e ]` a stat; the echoes' writes to the log are buffered in
        // the program and make none) in each container. The poller backs off while the host
        // is busy (its core taken), so a loaded host may need several containers before it
        // serves any: up to 10 when polling, always 3 when not.
        let script = "i=0; while [ $i -lt 200 ]; do [ -e /bin/busybox ]; echo $i; i=$((i+1)); done"
        var served = 0.0
        for round in 0..<(polls ? 10 : 3) {
            let run = try client.send("POST", "/v1/containers/run", json: ContainerSpec(image: "busybox", arguments: ["sh", "-c", script]))
            #expect(run.status == 200, "\(run.text)")
            #expect(try run.decode(RunResult.self).stdout.split(separator: "\n").count == 200)
            served = try client.metric("vmfork_poller_calls_served_total")
            if polls, served > 0, round >= 2 { break }
        }
        if polls {
            #expect(served > 0, "the poller served no call of up to 10 × 200 stats")
        } else {
            #expect(served == 0, "the poller served \(served) calls with --no-poll-syscalls")
        }
        #expect(try client.send("GET", "/v1/_ping").status == 200)
    }

    @Test func theHelpNamesTheOption() throws {
        let help = try HostFacts.run(DaemonFixture.binary, ["serve", "--help"])
        #expect(help.stdout.contains("--no-poll-syscalls"))
    }
}
