import API
import Engine
import Foundation
import TestSupport
import Testing

/// `docker pull` through a VCH from a real registry (Debian's docker-registry on loopback,
/// seeded with busybox by scripts/local-registry.sh), then `docker run` of what it pulled.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable && VCHFixture.dockerAvailable && ["/usr/bin/docker-registry", "/usr/bin/skopeo", "/usr/bin/umoci"].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) },
                "needs /dev/kvm, the docker CLI, docker-registry, skopeo and umoci (scripts/setup.sh)"))
struct DockerPullTests {
    @Test func pullFromARegistryThenRunWhatWasPulled() throws {
        let registry = try HostFacts.makeTemporaryFolder("registry")
        let started = try HostFacts.run("/bin/bash", [HostFacts.packageRoot.appendingPathComponent("scripts/local-registry.sh").path, registry.path])
        let fields = started.stdout.split(whereSeparator: \.isWhitespace)
        let port = try #require(fields.count == 2 ? Int(fields[0]) : nil, "local-registry.sh: \(started.stdout) \(started.stderr)")
        let pid = try #require(Int32(fields[1]))
        defer {
            kill(pid, SIGTERM)
            try? FileManager.default.removeItem(at: registry)
        }
        let fixture = try VCHFixture()
        let socket = try fixture.startVCH("dev", pool: "dev")
        let reference = "127.0.0.1:\(port)/busybox:latest"

        // The agent's busybox of the fixture came from a folder: a pull of the registry's
        // busybox, which the agent would name the same, is refused until it is removed.
        let clash = try fixture.docker(socket, ["pull", reference])
        #expect(clash.status != 0 && clash.stderr.contains("already has an image named busybox") && clash.stderr.contains("added from a folder"), "\(clash)")
        #expect(try fixture.docker(socket, ["rmi", "busybox"]).status == 0)

        let pull = try fixture.docker(socket, ["pull", reference])
        #expect(pull.status == 0 && pull.stdout.contains("Downloaded newer image"), "\(pull)")
        // The agent registered it, under the name its pull gave it.
        let images = try fixture.agent.send("GET", "/v1/images").decode([ImageRecord].self)
        let pulled = try #require(images.first { $0.pulled != nil }, "agent images: \(images.map(\.name))")
        #expect(pulled.name == "busybox" && pulled.pulled?.reference == reference, "\(pulled)")
        // Its placement cost is the fixture's busybox's (placement knows images by name).
        let listed = try fixture.docker(socket, ["images", "--format", "{{.Repository}}"])
        #expect(listed.stdout.split(separator: "\n").contains(Substring(pulled.name)), "\(listed)")

        let run = try fixture.docker(socket, ["run", "--rm", pulled.name, "echo", "pulled and forked"])
        #expect(run.status == 0 && run.stdout == "pulled and forked\n", "\(run)")
        // Pulled again: the agent has it already, and says so as Docker does.
        let again = try fixture.docker(socket, ["pull", reference])
        #expect(again.status == 0 && again.stdout.contains("up to date"), "\(again)")
        // A tag the registry lacks is refused by name.
        let missing = try fixture.docker(socket, ["pull", "127.0.0.1:\(port)/busybox:no-such-tag"])
        #expect(missing.status != 0 && missing.stderr.contains("no-such-tag"), "\(missing)")

        // docker commit: an ended container of the pulled image becomes an image of its own.
        let maker = try fixture.docker(socket, ["run", "--name", "maker", pulled.name, "sh", "-c", "echo made > /made; rm /etc/hostname"])
        #expect(maker.status == 0, "\(maker)")
        let committed = try fixture.docker(socket, ["commit", "-m", "one file", "maker", "made"])
        #expect(committed.status == 0 && committed.stdout.hasPrefix("sha256:"), "\(committed)")
        let fromCommit = try fixture.docker(socket, ["run", "--rm", "made", "sh", "-c", "cat /made; test -e /etc/hostname || echo no-hostname"])
        #expect(fromCommit.status == 0 && fromCommit.stdout == "made\nno-hostname\n", "\(fromCommit)")
        let made = try fixture.agent.send("GET", "/v1/images/made").decode(ImageRecord.self)
        #expect(made.pulled?.committedFrom != nil && made.pulled?.layers.count == (pulled.pulled?.layers.count ?? 0) + 1, "\(made)")
        // The commit as Docker shows it (the agent's audit log is written behind the call: looked up until it is there).
        var events = ""
        for _ in 0..<20 where events.isEmpty {
            events = try fixture.docker(socket, ["events", "--since", "1m", "--until", "0s", "--filter", "event=commit", "--format",
                                                 "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}"]).stdout
            if events.isEmpty { usleep(100_000) }
        }
        #expect(events == "container commit maker\n", "\(events)")
        // What this VCH cannot keep is refused by name.
        let tagged = try fixture.docker(socket, ["commit", "maker", "made2:v2"])
        #expect(tagged.status != 0 && tagged.stderr.contains("tag v2"), "\(tagged)")

        // docker commit --change: the new image's config as the instructions say, seen by
        // docker image inspect and by its containers (the new CMD run when none is given).
        let changed = try fixture.docker(socket, ["commit", "-c", #"CMD ["echo","from the new cmd"]"#, "--change", "ENV MOTTO=docker",
                                                  "-c", "WORKDIR /etc", "-c", "LABEL stage=test", "-c", "EXPOSE 8080/udp", "maker", "made3"])
        #expect(changed.status == 0 && changed.stdout.hasPrefix("sha256:"), "\(changed)")
        let shown = try fixture.docker(socket, ["image", "inspect", "-f",
                                                "{{json .Config.Cmd}}|{{json .Config.Entrypoint}}|{{.Config.WorkingDir}}|{{json .Config.Env}}|{{json .Config.Labels}}|{{json .Config.ExposedPorts}}",
                                                "made3"])
        #expect(shown.status == 0 && shown.stdout == #"["echo","from the new cmd"]|["/bin/busybox"]|/etc|["PATH=/bin","GREETING=hello","MOTTO=docker"]|{"stage":"test"}|{"8080/udp":{}}"# + "\n",
                "\(shown)")
        let ranDefault = try fixture.docker(socket, ["run", "--rm", "made3"])
        #expect(ranDefault.status == 0 && ranDefault.stdout == "from the new cmd\n", "\(ranDefault)")
        let ranShell = try fixture.docker(socket, ["run", "--rm", "made3", "sh", "-c", "echo $MOTTO; pwd"])
        #expect(ranShell.status == 0 && ranShell.stdout == "docker\n/etc\n", "\(ranShell)")
        // Docker's API also takes a container config as the commit's body (the CLI sends none):
        // its image fields apply before the changes, their quotes and '$' kept as they are.
        let api = AgentClient(socketPath: socket)
        let body: [String: Any] = ["Cmd": ["echo", "$HOME 'as is'"], "Env": ["QUOTED=a \"b\" $c\\d"], "WorkingDir": "/etc", "Labels": ["k": "v w"],
                                   "Hostname": "", "Volumes": NSNull(), "Tty": false]
        let viaBody = try api.send("POST", "/commit?container=maker&repo=made5&changes=ENV%20AFTER%3D1",
                                   body: try JSONSerialization.data(withJSONObject: body))
        #expect(viaBody.status == 201, "\(viaBody.text)")
        let bodyShown = try fixture.docker(socket, ["image", "inspect", "-f", "{{json .Config.Cmd}}|{{.Config.WorkingDir}}|{{json .Config.Env}}|{{json .Config.Labels}}", "made5"])
        #expect(bodyShown.stdout == #"["echo","$HOME 'as is'"]|/etc|["PATH=/bin","GREETING=hello","QUOTED=a \"b\" $c\\d","AFTER=1"]|{"k":"v w"}"# + "\n", "\(bodyShown)")
        let bodyRun = try fixture.docker(socket, ["run", "--rm", "made5"])
        #expect(bodyRun.status == 0 && bodyRun.stdout == "$HOME 'as is'\n", "\(bodyRun)")
        let volumes = try api.send("POST", "/commit?container=maker&repo=made6", body: Data(#"{"Volumes":{"/data":{}}}"#.utf8))
        #expect(volumes.status == 400 && volumes.text.contains("Volumes is not supported"), "\(volumes.text)")
        #expect(try fixture.docker(socket, ["image", "inspect", "made6"]).status != 0)
        // What Docker refuses is refused by name, and no image is made.
        for (change, named) in [("RUN echo hi", "RUN is not a valid change instruction"), (#"ENTRYPOINT ["sh", -c]"#, "is not a JSON array of strings"),
                                ("NOPE x", "NOPE is not a Dockerfile instruction")] {
            let refused = try fixture.docker(socket, ["commit", "-c", change, "maker", "made4"])
            #expect(refused.status != 0 && refused.stderr.contains(named), "\(change): \(refused)")
            #expect(try fixture.docker(socket, ["image", "inspect", "made4"]).status != 0)
        }
        #expect(try fixture.docker(socket, ["rm", "maker"]).status == 0)

        // docker commit carries the container's own config: the command it ran (here with its
        // entrypoint reset), its environment with -e, its labels; then docker run of the new
        // image runs that command, and a command given to it names its program as Docker
        // does: `ls` runs busybox's ls applet with argv[0] "ls", $0 is the name as written.
        let applet = try fixture.docker(socket, ["run", "--name", "applet-maker", "-e", "EXTRA=x", "--label", "team=a", "--entrypoint", "",
                                                 pulled.name, "sh", "-c", "echo $0 $EXTRA"])
        #expect(applet.status == 0 && applet.stdout == "sh x\n", "\(applet)")
        let appletCommit = try fixture.docker(socket, ["commit", "applet-maker", "applets"])
        #expect(appletCommit.status == 0, "\(appletCommit)")
        let appletConfig = try fixture.docker(socket, ["image", "inspect", "-f", "{{json .Config.Cmd}}|{{json .Config.Entrypoint}}|{{json .Config.Env}}|{{json .Config.Labels}}", "applets"])
        #expect(appletConfig.stdout == #"["sh","-c","echo $0 $EXTRA"]|null|["PATH=/bin","GREETING=hello","EXTRA=x"]|{"team":"a"}"# + "\n", "\(appletConfig)")
        let appletDefault = try fixture.docker(socket, ["run", "--rm", "applets"])
        #expect(appletDefault.status == 0 && appletDefault.stdout == "sh x\n", "\(appletDefault)")
        let ls = try fixture.docker(socket, ["run", "--rm", "applets", "ls", "/"])
        #expect(ls.status == 0 && ls.stdout.split(separator: "\n").contains("bin") && ls.stdout.split(separator: "\n").contains("etc") && !ls.stdout.contains("BusyBox"), "\(ls)")
        let dollarZero = try fixture.docker(socket, ["run", "--rm", "applets", "sh", "-c", "echo $0"])
        #expect(dollarZero.stdout == "sh\n", "\(dollarZero)")
        let absolute = try fixture.docker(socket, ["run", "--rm", "--entrypoint", "/bin/sh", "applets", "-c", "echo $0"])
        #expect(absolute.stdout == "/bin/sh\n", "\(absolute)")
        let created = try fixture.docker(socket, ["create", "--name", "lister", "applets", "ls", "/etc"])
        #expect(created.status == 0, "\(created)")
        let shownPath = try fixture.docker(socket, ["inspect", "-f", "{{.Path}} {{json .Args}} {{json .Config.Cmd}} {{json .Config.Entrypoint}}", "lister"])
        #expect(shownPath.stdout == #"ls ["/etc"] ["ls","/etc"] null"# + "\n", "\(shownPath)")
        #expect(try fixture.docker(socket, ["rm", "lister", "applet-maker"]).status == 0)
    }
}
