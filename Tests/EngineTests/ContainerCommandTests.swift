import Engine
import Foundation
import Metrics
import TestSupport
import Testing

/// A container's command as Docker decides it: the program's argv[0] is the command's first
/// word as written (busybox picks its applet by it; `$0` is it), the file is the one that
/// word leads to inside the image; checked against runc running the same rootfs.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct ContainerCommandTests {
    static let runc = "/usr/sbin/runc"
    static var runcAvailable: Bool { FileManager.default.isExecutableFile(atPath: runc) && geteuid() == 0 }

    /// Runs `arguments` (Docker's process args) in `root` with runc (an OCI bundle of `root`,
    /// read-only, PATH=/bin); its standard output.
    static func runcOutput(root: URL, _ arguments: [String]) throws -> String {
        let bundle = try HostFacts.makeTemporaryFolder("runc-bundle")
        defer { try? FileManager.default.removeItem(at: bundle) }
        let made = try HostFacts.run(runc, ["spec"], currentDirectory: bundle)
        guard made.status == 0 else { throw FixtureError(description: "runc spec: \(made.stderr)") }
        let configURL = bundle.appendingPathComponent("config.json")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        var process = try #require(config["process"] as? [String: Any])
        process["args"] = arguments
        process["terminal"] = false
        process["env"] = ["PATH=/bin"]
        config["process"] = process
        config["root"] = ["path": root.path, "readonly": true]
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        let result = try HostFacts.run(runc, ["run", "--bundle", bundle.path, "argv0-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"])
        guard result.status == 0 else { throw FixtureError(description: "runc run \(arguments): \(result.status) \(result.stderr)") }
        return result.stdout
    }

    struct FixtureError: Error, CustomStringConvertible { let description: String }

    @Test(arguments: [ForkPointName.main, .entry])
    func argv0IsTheCommandsFirstWordAsWritten(forkPoint: ForkPointName) async throws {
        let state = try HostFacts.makeTemporaryFolder("argv0-state")
        let root = try BusyboxRootfs.make()
        defer {
            try? FileManager.default.removeItem(at: state)
            try? FileManager.default.removeItem(at: root)
        }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("proc"), withIntermediateDirectories: true)
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance)
        defer { Task { await engine.shutdown(grace: .milliseconds(100)) } }
        _ = try await engine.addImage(ImageRecord(name: "busybox", rootfs: root.path, executable: "/bin/busybox", arguments: ["sh"],
                                                  environment: ["PATH=/bin"]), by: "test")
        func run(_ spec: ContainerSpec) async throws -> RunResult {
            var spec = spec
            spec.forkPoint = forkPoint
            return try await engine.runContainer(spec, by: "test")
        }

        // `ls` through its applet link runs ls, not busybox's usage text.
        let listed = try await run(ContainerSpec(image: "busybox", cmd: ["ls", "/data"]))
        #expect(listed.exitCode == 0 && listed.stdout == "blob.bin\nhello.txt\nnumbers.txt\nsub\nwords.txt\n", "\(listed)")
        // A shell's $0 is argv[0]: the name, or the path, as the command wrote it.
        let bare = try await run(ContainerSpec(image: "busybox", cmd: ["sh", "-c", "echo $0"]))
        #expect(bare.stdout == "sh\n", "\(bare)")
        let path = try await run(ContainerSpec(image: "busybox", entrypoint: ["/bin/sh"], cmd: ["-c", "echo $0"]))
        #expect(path.stdout == "/bin/sh\n", "\(path)")
        // An entrypoint of its own: argv[0] is its first word, the cmd follows (the image's dropped).
        let entry = try await run(ContainerSpec(image: "busybox", entrypoint: ["cat"], cmd: ["/data/sub/nested.txt"]))
        #expect(entry.stdout == "nested\n", "\(entry)")
        let alone = try await run(ContainerSpec(image: "busybox", entrypoint: ["echo", "alone"]))
        #expect(alone.stdout == "alone\n", "\(alone)")
        // The image's command is busybox with "sh": cmd alone follows the image's argv[0] only
        // when the image has an entrypoint; this folder image's entrypoint is its executable.
        let afterEntrypoint = try await run(ContainerSpec(image: "busybox", cmd: ["echo", "after"]))
        #expect(afterEntrypoint.stdout == "after\n", "\(afterEntrypoint)")
        // The agent's own `arguments` still follow the image's argv[0].
        let legacy = try await run(ContainerSpec(image: "busybox", arguments: ["sh", "-c", "echo $0"]))
        #expect(legacy.stdout == "sh\n", "\(legacy)")

        // What the engine records: argv[0] and Docker's merged command.
        let kept = try await engine.createContainer(ContainerSpec(image: "busybox", cmd: ["ls", "/"], forkPoint: forkPoint), by: "test")
        #expect(kept.argv0 == "/bin/busybox" && kept.arguments == ["ls", "/"] && kept.entrypoint == ["/bin/busybox"] && kept.cmd == ["ls", "/"], "\(kept)")
        let own = try await engine.createContainer(ContainerSpec(image: "busybox", entrypoint: [""], cmd: ["ls", "/"], forkPoint: forkPoint), by: "test")
        #expect(own.argv0 == "ls" && own.arguments == ["/"] && own.entrypoint == [] && own.cmd == ["ls", "/"], "\(own)")

        if Self.runcAvailable {
            for command in [["ls", "/data"], ["sh", "-c", "echo $0"], ["/bin/sh", "-c", "echo $0"], ["sh", "-c", "echo $0 $1", "one", "two"], ["cat", "/data/words.txt"]] {
                let vm = try await run(ContainerSpec(image: "busybox", entrypoint: [""], cmd: command))
                #expect(vm.stdout == (try Self.runcOutput(root: root, command)), "\(command)")
            }
        }
    }

    @Test func aCommandThatLeadsElsewhereIsRefusedByName() async throws {
        let state = try HostFacts.makeTemporaryFolder("argv0-refusals")
        let root = try BusyboxRootfs.make()
        defer {
            try? FileManager.default.removeItem(at: state)
            try? FileManager.default.removeItem(at: root)
        }
        // Another program in the image: a copy of busybox is another file.
        try FileManager.default.copyItem(atPath: BusyboxRootfs.hostBusybox, toPath: root.appendingPathComponent("bin/other").path)
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance)
        defer { Task { await engine.shutdown(grace: .milliseconds(100)) } }
        _ = try await engine.addImage(ImageRecord(name: "busybox", rootfs: root.path, executable: "/bin/busybox", environment: ["PATH=/bin"]), by: "test")
        func refusal(_ spec: ContainerSpec) async -> EngineError? {
            do {
                _ = try await engine.createContainer(spec, by: "test")
                return nil
            } catch { return error as? EngineError }
        }
        let missing = await refusal(ContainerSpec(image: "busybox", entrypoint: [""], cmd: ["nosuch"]))
        #expect(missing?.kind == .invalid && missing?.field == "cmd" && missing?.message.contains("\"nosuch\" is not an executable file in image busybox (looked in /bin/nosuch)") == true,
                "\(String(describing: missing))")
        let elsewhere = await refusal(ContainerSpec(image: "busybox", entrypoint: ["other"]))
        #expect(elsewhere?.field == "entrypoint" && elsewhere?.message.contains("is /bin/other in image busybox, not its program /bin/busybox") == true,
                "\(String(describing: elsewhere))")
        let both = await refusal(ContainerSpec(image: "busybox", arguments: ["echo"], cmd: ["echo"]))
        #expect(both?.field == "arguments", "\(String(describing: both))")
        let none = await refusal(ContainerSpec(image: "busybox", entrypoint: [""]))
        #expect(none?.field == "cmd" && none?.message.contains("name no program") == true, "\(String(describing: none))")
        // A stdin fork point's children run the image's own command.
        let stdin = await refusal(ContainerSpec(image: "busybox", entrypoint: [""], cmd: ["sh"], forkPoint: .stdin))
        #expect(stdin?.field == "cmd" && stdin?.message.contains("stdin fork point") == true, "\(String(describing: stdin))")
        #expect(engine.containers().isEmpty)
    }
}
