import Foundation
import TestSupport
import Testing

/// The `vmfork` placement commands end to end, as a person or script uses them.
@Suite struct CommandLineTests {
    let vmfork = HostFacts.productsFolder.appendingPathComponent("vmfork").path

    @Test func placeExplainReleaseAndReportThroughTheTool() throws {
        let folder = try HostFacts.makeTemporaryFolder("cli")
        defer { try? FileManager.default.removeItem(at: folder) }
        let state = ["--state", folder.path]
        func ok(_ arguments: [String]) throws -> String {
            let result = try HostFacts.run(vmfork, arguments + state)
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            return result.stdout
        }
        let profile = HostFacts.packageRoot.appendingPathComponent("Profiles/small.yaml").path
        #expect(try ok(["fleet", "load", profile]).contains("16 simulated hosts, 3 pools"))
        // This machine joins as the one real host, from its probed NUMA topology.
        let local = try ok(["host", "add-local", "--name", "this-machine", "--warm", "busybox@0", "--warm-pool", "dev"])
        #expect(local.contains("added host this-machine (real)"))
        #expect(try ok(["host", "list"]).contains("this-machine"))
        #expect(try ok(["place", "--pool", "prod", "--image", "nginx", "--explain"]).contains("chosen (spread)"))
        let placed = try ok(["place", "--pool", "prod", "--image", "nginx", "--commit"])
        #expect(placed.hasPrefix("placement 1: nginx in prod on host-"))
        #expect(placed.contains("warm, charged 24 MiB memory, 20 MHz CPU, committed"))
        #expect(try ok(["host", "health", "host-3", "down"]).contains("host-3 is down"))
        #expect(try ok(["release", "1"]).contains("placement 1 released: 24 MiB memory, 20 MHz CPU back to pool prod"))
        // The fork engine measured nginx's growth: later forks are charged the new figure.
        #expect(try ok(["image", "growth", "nginx", "32MiB"]).contains("forks are now charged 32 MiB"))
        let remeasured = try ok(["place", "--pool", "prod", "--image", "nginx"])
        #expect(remeasured.contains("charged 32 MiB memory, 20 MHz CPU, reserved for 30s"))
        #expect(try ok(["pool", "add", "ci", "--parent", "test", "--memory-reservation", "16GiB", "--policy", "pack"]).contains("added pool ci under test"))
        #expect(try ok(["pool", "list"]).contains("    ci"))

        // Bad input: a clear message on standard error, a failing status, and no change.
        let before = try ok(["capacity", "--json"])
        for (arguments, message) in [
            (["place", "--pool", "qa", "--image", "nginx"], "unknown pool qa"),
            (["pool", "add", "x", "--memory-reservation=-1GiB"], "pool x: memory reservation -1048576 is negative"),
            (["pool", "add", "x", "--memory-reservation", "2GiB", "--memory-limit", "1GiB"], "pool x: memory reservation 2 GiB is above its limit 1 GiB"),
            (["pool", "set", "prod", "--parent", "prod"], "pool cycle: prod -> prod"),
            (["release", "1"], "unknown placement 1"),
            (["pool", "add", "x", "--memory-reservation", "2GB"], "2GB"),
        ] {
            let result = try HostFacts.run(vmfork, arguments + state)
            #expect(result.status != 0, "\(arguments) should fail")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
        #expect(try ok(["capacity", "--json"]) == before)

        let svg = folder.appendingPathComponent("capacity.svg").path
        let report = try ok(["capacity", "--profile", profile, "--launch", "500", "--svg", svg])
        #expect(report.contains("Headroom"))
        #expect(try String(contentsOfFile: svg, encoding: .utf8).hasPrefix("<svg"))
    }

    /// Every command names itself: a command without `commandName` is named by ArgumentParser
    /// from `String(describing:)` of its type, a dynamic cast that scans every protocol
    /// conformance of the binary and its libraries — for each such command, at every start of
    /// the tool (about a fifth of `vmfork image pull`'s own start-up CPU before they were named).
    @Test func everyCommandNamesItselfSoThatStartingTheToolLooksUpNoTypeNames() throws {
        let folder = HostFacts.packageRoot.appendingPathComponent("Sources/vmfork")
        var unnamed: [String] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where name.hasSuffix(".swift") {
            let text = try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
            var rest = text[...]
            while let range = rest.range(of: "CommandConfiguration(") {
                let arguments = rest[range.upperBound...].prefix(200)
                if !arguments.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix("commandName:") {
                    unnamed.append("\(name): \(arguments.prefix(60))")
                }
                rest = rest[range.upperBound...]
            }
        }
        #expect(unnamed.isEmpty, "commands without commandName first:\n\(unnamed.joined(separator: "\n"))")
    }
}
