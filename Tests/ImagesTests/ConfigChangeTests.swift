import Foundation
import Images
import Testing

/// `ConfigChange`: Dockerfile instructions (`docker commit --change`) parsed and applied to
/// an image config as Docker applies them.
struct ConfigChangeTests {
    static var base: [String: Any] { [
        "architecture": "amd64", "os": "linux", "rootfs": ["type": "layers", "diff_ids": []],
        "config": ["Entrypoint": ["/bin/busybox"], "Cmd": ["sh"], "Env": ["PATH=/bin", "GREETING=hello"], "WorkingDir": "/"],
    ] }

    /// The config's `config` object after `changes`.
    static func applied(_ changes: [String], to document: [String: Any] = base) throws -> [String: Any] {
        var document = document
        try ConfigChange.apply(try ConfigChange.parse(changes), to: &document)
        return try #require(document["config"] as? [String: Any])
    }

    /// The refusal of `changes`, as its message.
    static func refusal(_ changes: [String]) -> String {
        do {
            var document = base
            try ConfigChange.apply(try ConfigChange.parse(changes), to: &document)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func cmdAndEntrypointTakeTheJSONAndTheShellForm() throws {
        #expect(try ConfigChange.parse([#"CMD ["echo","hi there"]"#]) == [.cmd(.exec(["echo", "hi there"]))])
        #expect(try ConfigChange.parse(["cmd echo hi  there "]) == [.cmd(.shell("echo hi  there"))])
        #expect(try ConfigChange.parse([#"ENTRYPOINT [ "/bin/busybox" , "sh" ]"#]) == [.entrypoint(.exec(["/bin/busybox", "sh"]))])
        #expect(try ConfigChange.parse(["CMD []"]) == [.cmd(.exec([]))])

        let exec = try Self.applied([#"CMD ["echo","hi"]"#])
        #expect(exec["Cmd"] as? [String] == ["echo", "hi"] && exec["Entrypoint"] as? [String] == ["/bin/busybox"])
        let shell = try Self.applied(["CMD echo $GREETING && pwd"])
        #expect(shell["Cmd"] as? [String] == ["/bin/sh", "-c", "echo $GREETING && pwd"], "the shell form is not expanded: the shell does that")
        // The config's Shell runs the shell form when it has one.
        var zsh = Self.base
        zsh["config"] = ["Shell": ["/bin/zsh", "-ec"]]
        #expect(try Self.applied(["ENTRYPOINT exec app"], to: zsh)["Entrypoint"] as? [String] == ["/bin/zsh", "-ec", "exec app"])
    }

    /// As in a Dockerfile: an ENTRYPOINT drops the image's CMD unless a CMD came before it.
    @Test func anEntrypointDropsTheCmdItDidNotComeWith() throws {
        let alone = try Self.applied([#"ENTRYPOINT ["/bin/busybox","echo"]"#])
        #expect(alone["Entrypoint"] as? [String] == ["/bin/busybox", "echo"] && alone["Cmd"] == nil)
        let withCmd = try Self.applied([#"CMD ["hi"]"#, #"ENTRYPOINT ["/bin/busybox","echo"]"#])
        #expect(withCmd["Cmd"] as? [String] == ["hi"])
    }

    @Test func envTakesPairsAndTheLegacyForm() throws {
        #expect(try ConfigChange.parse(["ENV A=1 B=\"two words\""]) == [.env([.init(name: "A", value: "1"), .init(name: "B", value: "\"two words\"")])])
        let env = try Self.applied(["ENV A=1 B=\"two words\" C='$GREETING' D=\"$GREETING\"\\ world E=${GREETING}x F=${NOPE:-dflt} G=${GREETING:+set}",
                                    "ENV GREETING hi there  ", "env PATH=$PATH:/usr/bin", "ENV H=a\\ b I=\\$GREETING"])
        #expect(env["Env"] as? [String] == ["PATH=/bin:/usr/bin", "GREETING=hi there", "A=1", "B=two words", "C=$GREETING",
                                            "D=hello world", "E=hellox", "F=dflt", "G=set", "H=a b", "I=$GREETING"], "\(env)")
        // Pairs of one instruction see the environment from before it, as in Docker.
        #expect(try Self.applied(["ENV GREETING=bye X=$GREETING"])["Env"] as? [String] == ["PATH=/bin", "GREETING=bye", "X=hello"])
    }

    @Test func workdirUserLabelExposeAndStopSignal() throws {
        let config = try Self.applied(["WORKDIR /srv", "WORKDIR app/./x/..", "USER 1000:50", "LABEL a=1 \"b c\"=\"d e\"", "LABEL legacy some value",
                                       "EXPOSE 80 53/udp 8000-8002/TCP", "STOPSIGNAL SIGINT", "ENV W=/data", "WORKDIR $W/w"])
        #expect(config["WorkingDir"] as? String == "/data/w")
        #expect(config["User"] as? String == "1000:50")
        #expect(config["Labels"] as? [String: String] == ["a": "1", "b c": "d e", "legacy": "some value"])
        #expect((config["ExposedPorts"] as? [String: Any]).map { Set($0.keys) } == ["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"])
        #expect(config["StopSignal"] as? String == "SIGINT")
        #expect(try Self.applied(["WORKDIR rel"])["WorkingDir"] as? String == "/rel")
        for signal in ["TERM", "sigkill", "9", "SIGRTMIN+3"] { #expect(try Self.applied(["STOPSIGNAL \(signal)"])["StopSignal"] as? String == signal) }
    }

    @Test func linesBlanksCommentsAndContinuations() throws {
        #expect(try ConfigChange.parse(["", "  # a comment", "ENV A=1\nUSER app", "CMD echo \\\n  hi"])
                == [.env([.init(name: "A", value: "1")]), .user("app"), .cmd(.shell("echo hi"))])
    }

    @Test func refusalsNameTheInstructionAndTheProblem() {
        let run = Self.refusal(["RUN echo hi"])
        #expect(run.contains("RUN is not a valid change instruction") && run.contains("CMD, ENTRYPOINT"), "\(run)")
        for building in ["COPY a b", "FROM busybox", "ADD x y", "SHELL [\"/bin/bash\"]", "ARG X"] {
            let word = String(building.prefix { $0 != " " })
            #expect(Self.refusal([building]).contains("\(word) is not a valid change instruction"), "\(building)")
        }
        #expect(Self.refusal(["FROBNICATE now"]).contains("FROBNICATE is not a Dockerfile instruction"))
        #expect(Self.refusal(["VOLUME /data"]).contains("VOLUME is not supported"))
        let json = Self.refusal([#"CMD ["echo", hi]"#])
        #expect(json.contains(#"CMD ["echo", hi] is not a JSON array of strings"#), "\(json)")
        #expect(Self.refusal([#"ENTRYPOINT ["a", 1]"#]).contains("is not a JSON array of strings"))
        #expect(Self.refusal([#"CMD ["unclosed""#]).contains("is not a JSON array of strings"))
        #expect(Self.refusal(["CMD"]).contains("CMD needs a command"))
        #expect(Self.refusal(["ENV"]).contains("ENV needs NAME=value"))
        #expect(Self.refusal(["ENV ONLY"]).contains("ENV ONLY has no value"))
        #expect(Self.refusal(["ENV A=1 B"]).contains("ENV B has no '='"))
        #expect(Self.refusal(["ENV =x"]).contains("names cannot be blank"))
        #expect(Self.refusal(["ENV A=\"open"]).contains("double quote is not closed"))
        #expect(Self.refusal(["ENV A=${B"]).contains("not closed"))
        #expect(Self.refusal(["ENV A=${B:?x}"]).contains("only :- and :+"))
        #expect(Self.refusal(["WORKDIR"]).contains("WORKDIR needs exactly one argument"))
        #expect(Self.refusal(["USER $NOPE"]).contains("USER $NOPE is empty once expanded"))
        #expect(Self.refusal(["EXPOSE 0"]).contains("EXPOSE 0 is not PORT"))
        #expect(Self.refusal(["EXPOSE 70000"]).contains("is not PORT"))
        #expect(Self.refusal(["EXPOSE 80/icmp"]).contains("protocol icmp"))
        #expect(Self.refusal(["EXPOSE 1-65535"]).contains("over 1024 ports"))
        #expect(Self.refusal(["STOPSIGNAL SIGNOPE"]).contains("STOPSIGNAL SIGNOPE is not a signal"))
        #expect(Self.refusal(["STOPSIGNAL 99"]).contains("is not a signal"))
        #expect(Self.refusal(["STOPSIGNAL TERM KILL"]).contains("exactly one argument"))
        #expect(Self.refusal(["CMD [\"sh\"]", "RUN x"]).contains("RUN"), "a refusal anywhere refuses them all")
    }
}
