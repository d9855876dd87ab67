import API
import Engine
import Foundation
import TestSupport
import Testing

/// The real docker CLI (28.2.2) against real VCHs in front of a real host agent with KVM guests.
@Suite(.serialized, .enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable && VCHFixture.dockerAvailable, "needs /dev/kvm, busybox-static and the docker CLI"))
struct DockerCLITests {
    @Test func versionInfoPingAndUnknownEndpoints() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let version = try fixture.docker(socket, ["version"])
        #expect(version.status == 0, "\(version.stderr)")
        #expect(version.stdout.contains("API version:       1.43 (downgraded from 1.50)"), "\(version.stdout)")
        #expect(version.stdout.contains("VMFork Virtual Container Host dev"))
        let format = try fixture.docker(socket, ["version", "--format", "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}"])
        #expect(format.stdout == "1.43 1.24\n")

        // info: the pool's figures as the placement state has them.
        _ = try fixture.docker(socket, ["run", "-d", "--name", "busy", "busybox", "sh", "-c", "while true; do :; done"])
        let pools = try fixture.agent.send("GET", "/v1/placement/pools")
        let pool = try #require((try JSONSerialization.jsonObject(with: pools.body) as? [[String: Any]])?.first { $0["name"] as? String == "dev" })
        let used = ((pool["usedByForks"] as? [String: Int])?["memoryKiB"] ?? 0) + ((pool["usedByWarmParents"] as? [String: Int])?["memoryKiB"] ?? 0)
        let free = (pool["free"] as? [String: Int])?["memoryKiB"] ?? -1
        #expect(used > 0, "the running container is charged to the pool")
        let info = try fixture.docker(socket, ["info", "--format", "{{json .Labels}} {{.MemTotal}} {{.Name}} {{.ContainersRunning}}"])
        #expect(info.status == 0, "\(info.stderr)")
        #expect(info.stdout.contains("vmfork.pool=dev"))
        #expect(info.stdout.contains("vmfork.pool.memory.capacity.kib=1048576"))
        #expect(info.stdout.contains("vmfork.pool.memory.reserved.kib=524288"))
        #expect(info.stdout.contains("vmfork.pool.memory.used.kib=\(used)"), "\(info.stdout) used \(used)")
        #expect(info.stdout.contains("vmfork.pool.memory.free.kib=\(free)"), "\(info.stdout) free \(free)")
        #expect(info.stdout.hasSuffix(" \(1_048_576 * 1024) dev 1\n"), "\(info.stdout)")
        let text = try fixture.docker(socket, ["info"])
        #expect(text.stdout.contains("Pool memory capacity: 1024.0 MiB"), "\(text.stdout)")
        _ = try fixture.docker(socket, ["rm", "-f", "busy"])

        // The endpoint itself: the ping's headers, Docker's 404 for what it does not serve.
        let client = AgentClient(socketPath: socket)
        let ping = try client.send("GET", "/_ping")
        #expect(ping.status == 200 && ping.text == "OK")
        #expect(ping.headers["api-version"] == "1.43")
        #expect(ping.headers["ostype"] == "linux")
        let unknown = try client.send("GET", "/v1.43/nothing/here")
        #expect(unknown.status == 404)
        #expect(unknown.errorMessage == "page not found")
        let tooNew = try client.send("GET", "/v1.50/version")
        #expect(tooNew.status == 400 && tooNew.errorMessage.contains("Maximum supported API version is 1.43"))
        let badJSON = try client.send("POST", "/v1.43/containers/create", body: Data("{\"Image\": 5}".utf8))
        #expect(badJSON.status == 400 && badJSON.errorMessage.contains("Image"), "\(badJSON.text)")
    }

    @Test func runPassesOutputExitStatusStreamsAndOptions() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let hi = try fixture.docker(socket, ["run", "--rm", "busybox", "echo", "hi"])
        #expect(hi.status == 0 && hi.stdout == "hi\n" && hi.stderr.isEmpty, "\(hi)")

        // The exit status passes through; stdout and stderr stay apart.
        let split = try fixture.docker(socket, ["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; echo out2; exit 3"])
        #expect(split.status == 3)
        #expect(split.stdout == "out\nout2\n")
        #expect(split.stderr == "err\n")

        // The output comes with the exit's answer when it fits (the agent removes the --rm
        // container in the same call); past 64 KiB it is read from the logs and removed after.
        // One that runs past the VCH's follow delay is followed, and its rest taken at the end.
        let line = String(repeating: "0123456789", count: 5) + "\n"
        let big = try fixture.docker(socket, ["run", "--rm", "busybox", "sh", "-c",
                                              "i=0; while [ $i -lt 2000 ]; do echo \(line.dropLast()); i=$((i+1)); done; echo tail >&2"])
        #expect(big.status == 0 && big.stdout == String(repeating: line, count: 2000) && big.stderr == "tail\n",
                "\(big.status) \(big.stdout.count) bytes, stderr \(big.stderr)")
        let slow = try fixture.docker(socket, ["run", "--rm", "busybox", "sh", "-c", "echo early; busybox sleep 0.2; echo late; echo gone >&2; exit 5"])
        #expect(slow.status == 5 && slow.stdout == "early\nlate\n" && slow.stderr == "gone\n", "\(slow)")

        // Containers that end about when the VCH starts following their output (its 50 ms
        // delay): the follow may end, or be refused for a container the agent has removed,
        // before the exit's answer is in; the output still comes whole.
        for round in 0..<12 {
            let edge = try fixture.docker(socket, ["run", "--rm", "busybox", "sh", "-c", "busybox sleep 0.0\(3 + round % 5); echo edge\(round)"])
            #expect(edge.status == 0 && edge.stdout == "edge\(round)\n", "round \(round): \(edge)")
        }

        // -i: standard input reaches the container; -e, --hostname, --entrypoint.
        let cat = try fixture.docker(socket, ["run", "--rm", "-i", "busybox", "cat"], stdin: Data("line one\nline two\n".utf8))
        #expect(cat.status == 0 && cat.stdout == "line one\nline two\n", "\(cat)")
        let env = try fixture.docker(socket, ["run", "--rm", "-e", "GREETING=hello", "--entrypoint", "/bin/sh", "busybox", "-c", "echo $GREETING $PATH"])
        #expect(env.status == 0 && env.stdout == "hello /bin\n", "the image's environment with the container's over it: \(env)")
        let hostname = try fixture.docker(socket, ["run", "-d", "--hostname", "box1", "busybox", "true"])
        let hostnameID = hostname.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try fixture.agent.send("GET", "/v1/containers/\(hostnameID)").decode(ContainerInfo.self).hostname == "box1")
        #expect(try fixture.docker(socket, ["rm", "-f", hostnameID]).status == 0)

        // -t: one raw stream (stderr arrives on stdout, as with a terminal), "\n" as "\r\n".
        let tty = try fixture.docker(socket, ["run", "--rm", "-t", "busybox", "sh", "-c", "echo to-out; echo to-err >&2"])
        #expect(tty.status == 0)
        #expect(tty.stdout == "to-out\r\nto-err\r\n" && tty.stderr.isEmpty, "\(tty)")

        // -d with --name, --label, --memory: the agent sees the same container.
        let detached = try fixture.docker(socket, ["run", "-d", "--name", "web", "--label", "tier=front", "--memory", "32m", "busybox",
                                                   "sh", "-c", "echo started; while true; do :; done"])
        #expect(detached.status == 0)
        let id = detached.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(id.count == 32)
        let agentView = try fixture.agent.send("GET", "/v1/containers/\(id)").decode(ContainerInfo.self)
        #expect(agentView.memoryMiB == 32 && agentView.pool == "dev" && agentView.labels["tier"] == "front" && agentView.labels["vmfork.vch"] == "dev")
        #expect(agentView.state == .running && agentView.placementID != nil)
        let inspect = try fixture.docker(socket, ["inspect", "-f", "{{.State.Status}} {{.HostConfig.Memory}} {{.Config.Labels.tier}} {{.Name}} {{.Config.Hostname}} {{.VMFork.Pool}}", "web"])
        #expect(inspect.stdout == "running \(32 << 20) front /web web dev\n", "\(inspect)")
        #expect(try fixture.docker(socket, ["rm", "-f", "web"]).status == 0)

        // Every docker call is in the agent's audit log: who (the caller), what, when, result.
        try fixture.waitUntil("the audit records are written", timeout: 10) {
            let events = (try? fixture.agent.send("GET", "/v1/events?type=client.vch.request&limit=10000").text) ?? ""
            return events.contains("\"subject\":\"POST /containers/create\"") && events.contains("\"result\":\"201\"")
                && events.contains("/attach\"") && events.contains("\"actor\":\"uid:")
        }
        // --rm leaves nothing behind.
        #expect(try fixture.docker(socket, ["ps", "-a", "-q"]).stdout.isEmpty)
        #expect(try fixture.agent.send("GET", "/v1/containers").decode([ContainerInfo].self).isEmpty)

        // Refusals, as Docker words them.
        let unknownImage = try fixture.docker(socket, ["run", "--rm", "nosuch", "echo"])
        #expect(unknownImage.status == 125)
        #expect(unknownImage.stderr.contains("Unable to find image 'nosuch:latest' locally"), "\(unknownImage.stderr)")
        let published = try fixture.docker(socket, ["run", "--rm", "-v", "/tmp:/tmp", "busybox", "echo"])
        #expect(published.status == 125 && published.stderr.contains("--volume is not supported by this VCH"), "\(published.stderr)")
        let entrypoint = try fixture.docker(socket, ["run", "--rm", "--entrypoint", "/bin/nosuch", "busybox"])
        #expect(entrypoint.status == 125 && entrypoint.stderr.contains("program \"/bin/nosuch\" is not an executable file in image busybox"), "\(entrypoint.stderr)")
        // Each refused by name, from a Config field, a HostConfig field, and the two allowed
        // only with some values (the body is read once, the refused fields' presence with it).
        for (options, named) in [(["--user", "1000"], "--user"), (["--workdir", "/tmp"], "--workdir"), (["--cap-add", "NET_ADMIN"], "--cap-add"),
                                 (["--restart", "always"], "--restart always"), (["--network", "host"], "--network host")] {
            let refused = try fixture.docker(socket, ["create"] + options + ["busybox", "echo"])
            #expect(refused.status != 0 && refused.stderr.contains("\(named) is not supported"), "\(options): \(refused.stderr)")
        }
        let tooSmall = try fixture.docker(socket, ["run", "--rm", "--memory", "6m", "--memory-swap", "12m", "busybox", "echo"])
        #expect(tooSmall.status == 125 && tooSmall.stderr.contains("--memory-swap"), "\(tooSmall.stderr)")
        _ = try fixture.docker(socket, ["create", "--name", "taken", "busybox"])
        let taken = try fixture.docker(socket, ["create", "--name", "taken", "busybox"])
        #expect(taken.status != 0 && taken.stderr.contains("Conflict. The container name \"/taken\" is already in use by container"), "\(taken.stderr)")
    }

    /// -t gives the program a terminal (isatty, 24 x 80, "\r\n"); -it, with the CLI itself on a
    /// terminal (util-linux script gives it one: with a pipe it refuses, "the input device is
    /// not a TTY"), echoes what is typed and reads it a line at a time; docker's resize sets
    /// the size the program reads.
    @Test func terminalForRunTAndIT() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let size = try fixture.docker(socket, ["run", "--rm", "-t", "busybox", "sh", "-c", "stty size; [ -t 0 ] && [ -t 1 ] && echo yes; tty"])
        #expect(size.status == 0 && size.stdout == "24 80\r\nyes\r\n/dev/pts/0\r\n" && size.stderr.isEmpty, "\(size)")
        let piped = try fixture.docker(socket, ["run", "--rm", "-i", "-t", "busybox", "true"], stdin: Data())
        #expect(piped.status != 0 && piped.stderr.contains("not a TTY"), "\(piped)")

        // -it on a terminal: the typed line is echoed by the container's terminal and read whole.
        let (status, transcript) = try Self.typed("sleep 1; printf 'ab\\177c\\r'; sleep 2",
                                                  into: "docker run --rm -it busybox sh -c 'read x; echo got-\\$x; stty size'", fixture, socket)
        #expect(status == 0, "\(transcript.debugDescription)")
        #expect(transcript.contains("got-ac\r\n24 80\r\n"), "\(transcript.debugDescription)")
        #expect(transcript.contains("ab\u{8} \u{8}c\r\n"), "the container's echo with the erase: \(transcript.debugDescription)")

        // docker's resize (the CLI sends it only from a terminal): through the VCH, as the CLI does.
        let run = try fixture.docker(socket, ["run", "-d", "-t", "--name", "sized", "busybox", "sh", "-c", "trap 'stty size; exit 3' WINCH; while :; do sleep 0.05; done"])
        #expect(run.status == 0, "\(run)")
        let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let vch = AgentClient(socketPath: socket)
        for query in ["h=0&w=80", "h=24", "h=a&w=b", "h=24&w=70000"] {
            #expect(try vch.send("POST", "/v1.43/containers/sized/resize?\(query)").status == 400, "\(query)")
        }
        #expect(try vch.send("POST", "/v1.43/containers/sized/resize?h=33&w=99").status == 200)
        // Bounded: without the signal the loop runs on, and is killed for the test to fail.
        try? fixture.waitUntil("sized ends on SIGWINCH") { (try? fixture.docker(socket, ["inspect", "-f", "{{.State.Status}}", "sized"]))?.stdout == "exited\n" }
        _ = try fixture.docker(socket, ["kill", "sized"])
        #expect(try fixture.docker(socket, ["wait", "sized"]).stdout == "3\n")
        #expect(try fixture.docker(socket, ["logs", "sized"]).stdout == "33 99\r\n")
        #expect(try vch.send("POST", "/v1.43/containers/sized/resize?h=33&w=99").status == 409, "not running")
        #expect(try fixture.agent.send("GET", "/v1/containers/\(id)").decode(ContainerInfo.self).tty == true)
        #expect(try fixture.docker(socket, ["rm", "sized"]).status == 0)
    }

    /// `docker run -it busybox sh` from a terminal: an interactive shell (job control, line
    /// editing in raw mode) with a prompt, that runs what is typed.
    @Test func interactiveShell() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let (status, transcript) = try Self.typed("sleep 2; printf 'echo hi-$((6*7))\\r'; sleep 1; printf 'exit 5\\r'; sleep 2",
                                                  into: "docker run --rm -it busybox sh", fixture, socket)
        #expect(status == 5, "\(transcript.debugDescription)")
        #expect(transcript.contains("/ # "), "a prompt: \(transcript.debugDescription)")
        #expect(transcript.contains("hi-42\r\n"), "\(transcript.debugDescription)")
    }

    /// Runs `command` (a docker command line) on a terminal of its own (util-linux `script`),
    /// with what the shell commands `typing` print as the keys typed; its status and everything
    /// the terminal showed.
    static func typed(_ typing: String, into command: String, _ fixture: VCHFixture, _ socket: String) throws -> (Int32, String) {
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-c", "(\(typing)) | timeout 60 script -qec \"\(command)\" /dev/null"]
        shell.environment = fixture.dockerEnvironment.merging(["DOCKER_HOST": "unix://\(socket)"]) { $1 }
        let out = Pipe()
        shell.standardOutput = out
        shell.standardError = out
        shell.standardInput = FileHandle.nullDevice
        try shell.run()
        let transcript = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        shell.waitUntilExit()
        return (shell.terminationStatus, transcript)
    }

    @Test func createStartPsLogsWaitStopKillRemoveAttach() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let script = "echo one; echo two; echo three >&2; echo four; exit 5"
        #expect(try fixture.docker(socket, ["create", "--name", "job", "--label", "kind=batch", "busybox", "sh", "-c", script]).status == 0)
        let created = try fixture.docker(socket, ["ps", "-a", "--filter", "status=created", "--format", "{{.Names}} {{.Status}}"])
        #expect(created.stdout == "job Created\n", "\(created)")
        #expect(try fixture.docker(socket, ["start", "job"]).stdout == "job\n")
        let wait = try fixture.docker(socket, ["wait", "job"])
        #expect(wait.stdout == "5\n", "\(wait)")
        let logs = try fixture.docker(socket, ["logs", "job"])
        #expect(logs.stdout == "one\ntwo\nfour\n" && logs.stderr == "three\n", "\(logs)")
        // --tail counts the lines of both streams together, as Docker's one log file does.
        let tail = try fixture.docker(socket, ["logs", "--tail", "2", "job"])
        #expect(tail.stdout == "four\n" && tail.stderr == "three\n", "\(tail)")
        let tailOne = try fixture.docker(socket, ["logs", "--tail", "1", "job"])
        #expect(tailOne.stdout == "four\n" && tailOne.stderr == "", "\(tailOne)")
        #expect(try fixture.dockerCombined(socket, ["logs", "job"]) == "one\ntwo\nthree\nfour\n", "stdout and stderr in the order written")
        let stamped = try fixture.docker(socket, ["logs", "-t", "job"])
        let stampedLines = stamped.stdout.split(separator: "\n")
        #expect(stampedLines.count == 3 && stampedLines.allSatisfy { $0.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z \w+/) != nil }, "\(stamped)")
        let exited = try fixture.docker(socket, ["ps", "-a", "--filter", "label=kind=batch", "--format", "{{.Names}} {{.Status}}"])
        #expect(exited.stdout.hasPrefix("job Exited (5)"), "\(exited)")
        #expect(try fixture.docker(socket, ["ps", "-q"]).stdout.isEmpty, "only running containers without -a")

        // A long runner: logs -f while it writes, attach, stop -t with a TERM handler.
        let spinner = "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do :; done"
        let run = try fixture.docker(socket, ["run", "-d", "--name", "spin", "busybox", "sh", "-c", spinner])
        let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try fixture.waitUntil("spin is ready") { (try? fixture.docker(socket, ["logs", "spin"]))?.stdout == "ready\n" }
        let ids = try fixture.docker(socket, ["ps", "-q", "--no-trunc"])
        #expect(ids.stdout == "\(id)\n")
        func attachesAnswered() -> Int {
            let events = (try? fixture.agent.send("GET", "/v1/events?type=client.vch.request&limit=10000").text) ?? ""
            return events.components(separatedBy: "/attach\"").count - 1
        }
        let attachesBefore = attachesAnswered()
        let follower = try fixture.dockerInBackground(socket, ["logs", "-f", "spin"])
        let attached = try fixture.dockerInBackground(socket, ["attach", "--no-stdin", "spin"])
        // The VCH records the attach as it answers it (101, the stream from then on): wait for
        // that record rather than a fixed time, which a loaded host outran.
        try fixture.waitUntil("the attach is answered", timeout: 30) { attachesAnswered() > attachesBefore }
        usleep(300_000)
        let stop = try fixture.docker(socket, ["stop", "-t", "5", "spin"])
        #expect(stop.status == 0 && stop.stdout == "spin\n")
        #expect(follower.finish(grace: 5) == "ready\ngot TERM\n")
        #expect(attached.finish(grace: 5).hasSuffix("got TERM\n"), "attach shows the output after it attached: \(attached.text)")
        #expect(try fixture.docker(socket, ["inspect", "-f", "{{.State.ExitCode}}", "spin"]).stdout == "7\n")

        // start -a: the output and the exit status, as with run.
        _ = try fixture.docker(socket, ["create", "--name", "attached", "busybox", "sh", "-c", "echo from start; exit 6"])
        let startAttached = try fixture.docker(socket, ["start", "-a", "attached"])
        #expect(startAttached.status == 6 && startAttached.stdout == "from start\n", "\(startAttached)")
        // top needs it running, as Docker's does.
        let topExited = try fixture.docker(socket, ["top", "attached"])
        #expect(topExited.status != 0 && topExited.stderr.contains("is not running"), "\(topExited.stderr)")
        // What the agent has no operation for is refused by name.
        for command in ["exec", "restart", "pause"] {
            let arguments = command == "exec" ? ["exec", "attached", "true"] : [command, "attached"]
            let refused = try fixture.docker(socket, arguments)
            #expect(refused.status != 0 && refused.stderr.contains("\(command) is not supported by this VCH"), "\(command): \(refused.stderr)")
        }
        #expect(try fixture.docker(socket, ["rm", "attached"]).status == 0)

        // kill -s: a signal by name; SIGKILL powers the VM off (137).
        _ = try fixture.docker(socket, ["run", "-d", "--name", "victim", "busybox", "sh", "-c", "while true; do :; done"])
        #expect(try fixture.docker(socket, ["kill", "-s", "SIGKILL", "victim"]).status == 0)
        #expect(try fixture.docker(socket, ["wait", "victim"]).stdout == "137\n")
        let notRunning = try fixture.docker(socket, ["kill", "victim"])
        #expect(notRunning.status != 0 && notRunning.stderr.contains("is not running"), "\(notRunning.stderr)")

        // rm: a running one only with -f.
        _ = try fixture.docker(socket, ["run", "-d", "--name", "alive", "busybox", "sh", "-c", "while true; do :; done"])
        let refused = try fixture.docker(socket, ["rm", "alive"])
        #expect(refused.status != 0 && refused.stderr.contains("container is running"), "\(refused.stderr)")
        #expect(try fixture.docker(socket, ["rm", "-f", "alive"]).status == 0)
        let pruned = try fixture.docker(socket, ["container", "prune", "-f"])
        #expect(pruned.status == 0 && pruned.stdout.contains(id), "the exited ones go: \(pruned)")
        #expect(try fixture.docker(socket, ["ps", "-a", "-q"]).stdout.isEmpty)
        let gone = try fixture.docker(socket, ["inspect", "job"])
        #expect(gone.status != 0 && gone.stderr.contains("No such container: job") || gone.stderr.contains("No such object: job"), "\(gone.stderr)")
    }

    /// `docker logs -t` shows when each line was written (the agent's time index), within the
    /// container's life; --since and --until choose by that time; stdout and stderr come in
    /// the order they were written; a bad time is refused by name.
    @Test func logsShowTheTimesTheLinesWereWrittenAndFilterByThem() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let script = "echo a; sleep 0.3; echo b >&2; sleep 0.3; echo c"
        #expect(try fixture.docker(socket, ["run", "--name", "timed", "busybox", "sh", "-c", script]).status == 0)
        let stamped = try fixture.dockerCombined(socket, ["logs", "-t", "timed"])
        let lines = stamped.split(separator: "\n").map { line -> (stamp: String, nanoseconds: Int64, text: String) in
            let stamp = String(line.prefix(LogStamp.length))
            return (stamp, LogStamp.parse(stamp.utf8) ?? 0, String(line.dropFirst(LogStamp.length + 1)))
        }
        #expect(lines.map(\.text) == ["a", "b", "c"], "in the order written: \(stamped)")
        for (earlier, later) in zip(lines, lines.dropFirst()) {
            #expect(later.nanoseconds - earlier.nanoseconds >= 299_000_000, "0.3 s apart (a stamp is at most 1 ms early): \(stamped)")
        }
        let life = try fixture.docker(socket, ["inspect", "-f", "{{.State.StartedAt}} {{.State.FinishedAt}}", "timed"]).stdout
            .split(separator: " ").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
        let (started, finished) = (try #require(LogStamp.parse(life[0].utf8)), try #require(LogStamp.parse(life[1].utf8)))
        #expect(lines.allSatisfy { $0.nanoseconds >= started - 1_000 && $0.nanoseconds <= finished + 1_000 }, "\(life) \(stamped)")

        // --since and --until as the CLI sends them: seconds since 1970 with nine digits.
        func unix(_ nanoseconds: Int64) -> String { String(format: "%lld.%09lld", nanoseconds / 1_000_000_000, nanoseconds % 1_000_000_000) }
        let (a, b, c) = (lines[0].nanoseconds, lines[1].nanoseconds, lines[2].nanoseconds)
        #expect(try fixture.dockerCombined(socket, ["logs", "--since", unix((a + b) / 2), "timed"]) == "b\nc\n")
        #expect(try fixture.dockerCombined(socket, ["logs", "--until", unix((a + b) / 2), "timed"]) == "a\n")
        #expect(try fixture.dockerCombined(socket, ["logs", "--since", unix((a + b) / 2), "--until", unix((b + c) / 2), "timed"]) == "b\n")
        // The same stamps each time, and with --since.
        let since = try fixture.dockerCombined(socket, ["logs", "-t", "--since", lines[1].stamp, "timed"])
        #expect(since == lines.dropFirst().map { "\($0.stamp) \($0.text)\n" }.joined(), "\(since)")
        #expect(try fixture.dockerCombined(socket, ["logs", "--tail", "2", "timed"]) == "b\nc\n")

        // A bad time straight to the VCH's API: 400 naming it.
        let vch = AgentClient(socketPath: socket)
        for query in ["since=soon", "until=-5", "since=1.2.3", "since=1.1234567891"] {
            let refused = try vch.send("GET", "/v1.43/containers/timed/logs?stdout=1&\(query)")
            let name = String(query.prefix { $0 != "=" })
            #expect(refused.status == 400 && refused.text.contains(name), "\(query): \(refused.status) \(refused.text)")
        }
    }

    @Test func memoryIsThePoolsChargeAndAFullPoolRefuses() throws {
        let fixture = try VCHFixture(pools: [])
        try fixture.post("/v1/placement/pools", ["name": "tiny", "memoryLimitKiB": 40 * 1024])
        let socket = try fixture.startVCH("tiny", pool: "tiny")
        func used() throws -> Int {
            let info = try fixture.docker(socket, ["info", "--format", "{{json .Labels}}"]).stdout
            let label = try #require(info.firstMatch(of: /vmfork\.pool\.memory\.used\.kib=(\d+)/))
            return Int(label.1)!
        }
        let before = try used()
        let first = try fixture.docker(socket, ["run", "-d", "--name", "big", "--memory", "32m", "busybox", "sh", "-c", "while true; do :; done"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(try used() - before == 32 * 1024, "--memory is the placement's charge, not the image's 1 MiB per child")
        let second = try fixture.docker(socket, ["run", "-d", "--name", "bigger", "--memory", "32m", "busybox", "true"])
        #expect(second.status == 125)
        #expect(second.stderr.contains("pool tiny at its memory limit"), "\(second.stderr)")
        // Without --memory the image's own per-child cost is charged, and fits.
        let small = try fixture.docker(socket, ["run", "--rm", "busybox", "echo", "fits"])
        #expect(small.status == 0 && small.stdout == "fits\n", "\(small)")
        #expect(try fixture.docker(socket, ["rm", "-f", "big"]).status == 0)
        #expect(try used() == before, "removal releases the charge")
    }

    /// docker ps/inspect, `vmfork container ps --json` and the agent's API agree on a
    /// container: state, image, command, memory, pool, exit status.
    @Test func oneViewThroughDockerTheToolAndTheAPI() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let id = try fixture.docker(socket, ["run", "-d", "--name", "seen", "--memory", "16m", "busybox", "sh", "-c", "while true; do :; done"])
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        /// Each view: state, image, command, memory size, pool, exit status, then the memory
        /// it owns and the memory it shares with its warm parent ("-" once it has ended).
        func views() throws -> (docker: [String], tool: [String], api: [String]) {
            let inspect = try fixture.docker(socket, ["inspect", "-f", "{{.State.Status}}|{{.Config.Image}}|{{range .Config.Cmd}}{{.}} {{end}}|{{.HostConfig.Memory}}|{{.VMFork.Pool}}|{{.State.ExitCode}}|{{with .VMFork.MemoryPrivateBytes}}{{.}}{{else}}-{{end}}|{{with .VMFork.MemorySharedBytes}}{{.}}{{else}}-{{end}}", "seen"])
            #expect(inspect.status == 0, "\(inspect.stderr)")
            let row = try fixture.docker(socket, ["ps", "-a", "--no-trunc", "--format", "{{.State}}|{{.Image}}|{{.Command}}"]).stdout
            let tool = try HostFacts.run(VCHFixture.binary, ["container", "ps", "--all", "--json", "--state", fixture.state.path])
            let listed = try JSONDecoder().decode([ContainerInfo].self, from: Data(tool.stdout.utf8)).first { $0.id == id }
            let api = try fixture.agent.send("GET", "/v1/containers/\(id)?memory=true").decode(ContainerInfo.self)
            func line(_ info: ContainerInfo?) -> [String] {
                guard let info else { return [] }
                return [info.state.rawValue, info.image, info.arguments.joined(separator: " "), "\(info.memoryMiB << 20)", info.pool ?? "", "\(info.exitCode ?? 0)",
                        info.memory.map { "\($0.privateBytes)" } ?? "-", info.memory.map { "\($0.sharedBytes)" } ?? "-"]
            }
            let dockerLine = inspect.stdout.trimmingCharacters(in: .newlines).split(separator: "|", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
            let psLine = row.trimmingCharacters(in: .newlines).split(separator: "|").map(String.init)
            #expect(psLine.count == 3 && psLine[0] == dockerLine[0] && psLine[1] == dockerLine[1] && psLine[2] == "\"/bin/busybox \(dockerLine[2])\"", "\(psLine)")
            return (dockerLine, line(listed), line(api))
        }
        // Memory is read anew by each view: the three agree once the program's pages have settled.
        var running = try views()
        for _ in 0..<10 where !(running.tool == running.docker && running.api == running.docker) {
            usleep(200_000)
            running = try views()
        }
        #expect(Array(running.docker.prefix(6)) == ["running", "busybox", "sh -c while true; do :; done", "\(16 << 20)", "dev", "0"])
        #expect(running.tool == running.docker && running.api == running.docker, "\(running)")
        let (owned, shared) = (Int(running.docker[6]) ?? 0, Int(running.docker[7]) ?? 0)
        #expect(owned > 0 && shared > 0 && owned + shared <= 16 << 20, "a fork owns some pages and shares the rest with its parent: \(running.docker)")
        #expect(try fixture.docker(socket, ["kill", "seen"]).status == 0)
        #expect(try fixture.docker(socket, ["wait", "seen"]).stdout == "137\n")
        let exited = try views()
        #expect(exited.docker[0] == "exited" && exited.docker[5] == "137" && exited.docker[6] == "-" && exited.docker[7] == "-", "\(exited)")
        #expect(exited.tool == exited.docker && exited.api == exited.docker, "\(exited)")
        #expect(try fixture.docker(socket, ["rm", "seen"]).status == 0)
    }

    @Test func eventsStreamWithFilters() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let all = try fixture.dockerInBackground(socket, ["events", "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}"])
        let dies = try fixture.dockerInBackground(socket, ["events", "--filter", "event=die", "--filter", "container=second",
                                                           "--format", "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}"])
        usleep(300_000)
        _ = try fixture.docker(socket, ["run", "--rm", "--name", "first", "busybox", "true"])
        _ = try fixture.docker(socket, ["run", "--rm", "--name", "second", "busybox", "sh", "-c", "exit 4"])
        try fixture.waitUntil("the events arrive", timeout: 10) { dies.text.contains("die second 4") && all.text.contains("destroy second") }
        let lines = all.finish().split(separator: "\n").map(String.init)
        #expect(lines == ["container create first", "container start first", "container die first", "container destroy first",
                          "container create second", "container start second", "container die second", "container destroy second"], "\(lines)")
        #expect(dies.finish() == "die second 4\n")
        // --since/--until: past events, then the stream ends.
        // (The agent writes its event log in batches: poll until the last one is in.)
        var past = try fixture.docker(socket, ["events", "--since", "1m", "--until", "0s", "--filter", "container=first", "--format", "{{.Action}}"])
        try fixture.waitUntil("the past events are written", timeout: 10) {
            past = (try? fixture.docker(socket, ["events", "--since", "1m", "--until", "0s", "--filter", "container=first", "--format", "{{.Action}}"])) ?? past
            return past.stdout == "create\nstart\ndie\ndestroy\n"
        }
        #expect(past.status == 0 && past.stdout == "create\nstart\ndie\ndestroy\n", "\(past)")
    }

    @Test func vchsSideBySideCannotSeeOrTouchEachOthersContainers() throws {
        let fixture = try VCHFixture(pools: ["dev", "test"])
        let dev = try fixture.startVCH("dev", pool: "dev")
        let test = try fixture.startVCH("test", pool: "test")
        _ = try fixture.docker(dev, ["run", "-d", "--name", "app", "busybox", "sh", "-c", "while true; do :; done"])
        // The same name in the other VCH is its own container.
        let other = try fixture.docker(test, ["run", "--name", "app", "busybox", "echo", "from test"])
        #expect(other.status == 0 && other.stdout == "from test\n", "\(other)")
        #expect(try fixture.docker(dev, ["ps", "-a", "--format", "{{.Names}} {{.State}}"]).stdout == "app running\n")
        #expect(try fixture.docker(test, ["ps", "-a", "--format", "{{.Names}} {{.State}}"]).stdout == "app exited\n")
        let devID = try fixture.docker(dev, ["inspect", "-f", "{{.Id}}", "app"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        for command in [["inspect", devID], ["stop", devID], ["kill", devID], ["rm", devID], ["logs", devID], ["wait", devID], ["start", "app"]] {
            let refused = try fixture.docker(test, command)
            #expect(refused.status != 0 && refused.stderr.contains("No such") || command == ["start", "app"] && refused.stderr.contains("has exited"),
                    "\(command): \(refused.stderr)")
        }
        // rm -f of an unknown container: the CLI ignores the 404, as with Docker; the container stays.
        #expect(try fixture.docker(test, ["rm", "-f", devID]).stderr.contains("No such container"))
        #expect(try fixture.docker(dev, ["inspect", "-f", "{{.State.Status}} {{.VMFork.Pool}}", "app"]).stdout == "running dev\n")
        // Each info reports its own pool; the agent charged each container to its VCH's pool.
        #expect(try fixture.docker(test, ["info", "--format", "{{.Name}} {{.ContainersRunning}} {{.Containers}}"]).stdout == "test 0 1\n")
        #expect(try fixture.docker(dev, ["info", "--format", "{{.Name}} {{.ContainersRunning}} {{.Containers}}"]).stdout == "dev 1 1\n")
        let agentView = try fixture.agent.send("GET", "/v1/containers").decode([ContainerInfo].self)
        #expect(Set(agentView.map { "\($0.name) \($0.pool ?? "-")" }) == ["dev.app dev", "test.app test"])
        // Events of one VCH's containers are not the other's.
        let testEvents = try fixture.docker(test, ["events", "--since", "1m", "--until", "0s", "--format", "{{.Action}} {{.Actor.ID}}"])
        #expect(!testEvents.stdout.contains(devID), "\(testEvents.stdout)")
        #expect(try fixture.docker(dev, ["rm", "-f", "app"]).status == 0)
        #expect(try fixture.docker(test, ["rm", "app"]).status == 0)
    }

    @Test func imagesRmiAndPull() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        try fixture.post("/v1/images", ["name": "tool", "rootfs": fixture.rootfs.path, "executable": "/bin/busybox", "arguments": ["echo", "tool default"]])
        // Without its placement cost the agent refuses a pool's fork: a 400, not a 404 the CLI would take for a missing image.
        let uncosted = try fixture.docker(socket, ["run", "--rm", "tool"])
        #expect(uncosted.status == 125 && uncosted.stderr.contains("the host agent refused the container") && !uncosted.stderr.contains("Unable to find"),
                "\(uncosted.stderr)")
        try fixture.post("/v1/placement/images", ["name": "tool", "parentMemoryKiB": 65536, "growthPerChildKiB": 1024, "cpuMHzPerChild": 10])
        let images = try fixture.docker(socket, ["images", "--format", "{{.Repository}}:{{.Tag}}"])
        #expect(images.status == 0 && Set(images.stdout.split(separator: "\n")) == ["busybox:latest", "tool:latest"], "\(images)")
        let defaults = try fixture.docker(socket, ["run", "--rm", "tool"])
        #expect(defaults.stdout == "tool default\n", "the image's own arguments: \(defaults)")
        // The VCH keeps the image a reference found; an image replaced behind its back (through
        // the agent) reaches it by the agent's image events: the new environment is the one merged.
        #expect(try fixture.docker(socket, ["run", "--rm", "-e", "X=1", "tool", "sh", "-c", "echo v$V"]).stdout == "v\n")
        #expect(try fixture.agent.send("DELETE", "/v1/images/tool").status == 204)
        try fixture.post("/v1/images", ["name": "tool", "rootfs": fixture.rootfs.path, "executable": "/bin/busybox", "arguments": ["echo", "tool default"],
                                        "environment": ["PATH=/bin", "V=2"]])
        try fixture.waitUntil("the VCH runs the new image", timeout: 10) {
            (try? fixture.docker(socket, ["run", "--rm", "-e", "X=1", "tool", "sh", "-c", "echo v$V"]))?.stdout == "v2\n"
        }
        let inspect = try fixture.docker(socket, ["image", "inspect", "-f", "{{json .Config.Entrypoint}} {{json .Config.Cmd}}", "tool"])
        #expect(inspect.stdout == "[\"/bin/busybox\"] [\"echo\",\"tool default\"]\n", "\(inspect)")
        let rmi = try fixture.docker(socket, ["rmi", "tool"])
        #expect(rmi.status == 0 && rmi.stdout.contains("Untagged: tool:latest"), "\(rmi)")
        #expect(try fixture.docker(socket, ["images", "-q"]).stdout.split(separator: "\n").count == 1)
        let missing = try fixture.docker(socket, ["rmi", "tool"])
        #expect(missing.status != 0 && missing.stderr.contains("No such image: tool"), "\(missing.stderr)")

        // docker pull goes to the agent's POST /v1/images/pull; without that route it says so.
        let document = try fixture.agent.send("GET", "/v1/openapi.json").text
        let pull = try fixture.docker(socket, ["pull", "busybox"])
        if !document.contains("\"/v1/images/pull\"") {
            #expect(pull.status != 0 && pull.stderr.contains("pull is not available: the host agent has no POST /v1/images/pull"), "\(pull)")
        }
    }

    @Test func rmContainersThatEndWhileTheVCHIsDownAreRemovedAllTheSame() throws {
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let id = try fixture.docker(socket, ["run", "-d", "--rm", "busybox", "sh", "-c", "while true; do :; done"])
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(fixture.stopVCH("dev") == 0, "SIGTERM stops the VCH cleanly")
        // It ends while no VCH runs: the agent removes it on the VCH's standing wait (its
        // `remove`), as Docker's daemon removes a --rm container without a client.
        #expect(try fixture.agent.send("POST", "/v1/containers/\(id)/kill?signal=9").status == 200)
        try fixture.waitUntil("the agent removes it", timeout: 10) { (try? fixture.agent.send("GET", "/v1/containers/\(id)"))?.status == 404 }
        // One the VCH never waited for (made and ended while it was down): the VCH removes it
        // when it starts again.
        let spec = ContainerSpec(image: "busybox", name: "dev-left", arguments: ["true"],
                                 labels: ["vmfork.vch": "dev", "vmfork.vch.autoremove": "1"], pool: "dev")
        let left = try fixture.agent.send("POST", "/v1/containers", json: spec)
        #expect(left.status == 201, "\(left.text)")
        #expect(try fixture.agent.send("POST", "/v1/containers/dev-left/start").status == 200)
        #expect(try fixture.agent.send("POST", "/v1/containers/dev-left/wait").status == 200)
        #expect(try fixture.agent.send("GET", "/v1/containers/dev-left").status == 200)
        try fixture.startVCH("dev", pool: "dev")
        try fixture.waitUntil("the restarted VCH removes it", timeout: 10) { (try? fixture.agent.send("GET", "/v1/containers/dev-left"))?.status == 404 }
    }

    @Test func tcpNeedsTheToken() throws {
        let fixture = try VCHFixture()
        let (port, token) = try fixture.startTCPVCH("dev", pool: "dev")
        let host = "tcp://127.0.0.1:\(port)"
        let refused = try fixture.dockerHost(host, ["ps"])
        #expect(refused.status != 0 && refused.stderr.contains("missing bearer token"), "\(refused.stderr)")
        try Data("{\"HttpHeaders\": {\"Authorization\": \"Bearer \(token)\"}}".utf8).write(to: fixture.dockerConfig.appendingPathComponent("config.json"))
        let run = try fixture.dockerHost(host, ["run", "--rm", "busybox", "echo", "over tcp"])
        #expect(run.status == 0 && run.stdout == "over tcp\n", "\(run)")
        try Data("{\"HttpHeaders\": {\"Authorization\": \"Bearer wrong\"}}".utf8).write(to: fixture.dockerConfig.appendingPathComponent("config.json"))
        #expect(try fixture.dockerHost(host, ["ps"]).stderr.contains("wrong bearer token"))
    }
}
