import API
import Engine
import Foundation
import TestSupport
import Testing

/// Containers with a terminal through the host agent: create with tty, resize, and the
/// refusals (bad sizes, a container without a terminal, one that ended), in one process and
/// with the containers in a worker.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct TerminalAPITests {
    @Test(arguments: [[], ["--workers", "1"]])
    func createResizeAndRefusals(extra: [String]) throws {
        let daemon = try DaemonFixture()
        try daemon.start(extra: extra)
        defer { daemon.stop() }
        let client = daemon.client
        try daemon.addBusybox(client)

        // Input through the line discipline (echoed, "\n" out as "\r\n"), the size the client set.
        let reader = ContainerSpec(image: "busybox", name: "reader", arguments: ["sh", "-c", "read x; stty size; echo \"[$x]\" >&2"],
                                   openStdin: true, tty: true)
        #expect(try client.send("POST", "/v1/containers", json: reader).status == 201)
        #expect(try client.send("GET", "/v1/containers/reader").decode(ContainerInfo.self).tty == true)
        #expect(try client.send("POST", "/v1/containers/reader/start").status == 200)
        #expect(try client.send("POST", "/v1/containers/reader/resize?rows=30&columns=100").status == 204)
        for query in ["rows=0&columns=80", "rows=24", "columns=80", "rows=24&columns=65536", "rows=x&columns=80"] {
            let refused = try client.send("POST", "/v1/containers/reader/resize?\(query)")
            #expect(refused.status == 400, "\(query): \(refused.status) \(refused.text)")
            #expect(refused.text.contains("rows") || refused.text.contains("columns"), "\(query): \(refused.text)")
        }
        #expect(try client.send("POST", "/v1/containers/reader/stdin?close=true", body: Data("hi\n".utf8), contentType: "application/octet-stream").status == 204)
        #expect(try client.send("POST", "/v1/containers/reader/wait").decode(ExitInfo.self).exitCode == 0)
        #expect(try client.send("GET", "/v1/containers/reader/logs?stream=stdout").text == "hi\r\n30 100\r\n[hi]\r\n")
        #expect(try client.send("GET", "/v1/containers/reader/logs?stream=stderr").text.isEmpty)
        let ended = try client.send("POST", "/v1/containers/reader/resize?rows=30&columns=100")
        #expect(ended.status == 409 && ended.text.contains("not running"), "\(ended.text)")

        // A resize is SIGWINCH to the foreground group.
        let watcher = ContainerSpec(image: "busybox", name: "watcher",
                                    arguments: ["sh", "-c", "trap 'stty size; exit 3' WINCH; echo ready; while :; do sleep 0.05; done"], tty: true)
        #expect(try client.send("POST", "/v1/containers", json: watcher).status == 201)
        #expect(try client.send("POST", "/v1/containers/watcher/start").status == 200)
        let deadline = Date().addingTimeInterval(20)
        while try !client.send("GET", "/v1/containers/watcher/logs").text.contains("ready"), Date() < deadline { usleep(20_000) }
        #expect(try client.send("POST", "/v1/containers/watcher/resize?rows=40&columns=120").status == 204)
        // Bounded: without the signal the loop runs on, and is killed for the test to fail.
        while try client.send("GET", "/v1/containers/watcher").decode(ContainerInfo.self).state != .exited, Date() < deadline { usleep(20_000) }
        #expect(try client.send("GET", "/v1/containers/watcher").decode(ContainerInfo.self).exitCode == 3)
        #expect(try client.send("GET", "/v1/containers/watcher/logs").text == "ready\r\n40 120\r\n")
        _ = try client.send("DELETE", "/v1/containers/watcher?force=true")

        // ^C acts as it arrives: the foreground group (sh and its sleep) gets SIGINT at once.
        let looper = ContainerSpec(image: "busybox", name: "looper",
                                   arguments: ["sh", "-c", "trap 'echo caught; exit 4' INT; echo ready; while :; do sleep 0.05; done"],
                                   openStdin: true, tty: true)
        #expect(try client.send("POST", "/v1/containers", json: looper).status == 201)
        #expect(try client.send("POST", "/v1/containers/looper/start").status == 200)
        let looperDeadline = Date().addingTimeInterval(20)
        while try !client.send("GET", "/v1/containers/looper/logs").text.contains("ready"), Date() < looperDeadline { usleep(20_000) }
        let sentInterrupt = try client.send("POST", "/v1/containers/looper/stdin", body: Data("dropped\u{03}".utf8), contentType: "application/octet-stream")
        #expect(sentInterrupt.status == 204, "\(sentInterrupt.status) \(sentInterrupt.text)")
        while try client.send("GET", "/v1/containers/looper").decode(ContainerInfo.self).state != .exited, Date() < looperDeadline { usleep(20_000) }
        #expect(try client.send("GET", "/v1/containers/looper").decode(ContainerInfo.self).exitCode == 4)
        #expect(try client.send("GET", "/v1/containers/looper/logs").text == "ready\r\n^Ccaught\r\n")
        _ = try client.send("DELETE", "/v1/containers/looper?force=true")

        // Without a terminal: no resize, and the output as it always was.
        let plain = ContainerSpec(image: "busybox", name: "plain", arguments: ["sh", "-c", "[ -t 1 ] || echo plain; sleep 5"])
        #expect(try client.send("POST", "/v1/containers", json: plain).status == 201)
        #expect(try client.send("POST", "/v1/containers/plain/start").status == 200)
        let refused = try client.send("POST", "/v1/containers/plain/resize?rows=30&columns=100")
        #expect(refused.status == 409 && refused.text.contains("no terminal"), "\(refused.text)")
        #expect(try client.send("DELETE", "/v1/containers/plain?force=true").status == 204)
        #expect(try client.send("POST", "/v1/containers/nosuch/resize?rows=30&columns=100").status == 404)
    }
}
