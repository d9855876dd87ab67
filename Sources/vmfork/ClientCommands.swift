import API
import ArgumentParser
import Engine
import Foundation
import Placement

/// Where the daemon is: its state folder's socket, or a socket named directly.
struct DaemonOptions: ParsableArguments {
    @Option(help: "The daemon's state folder (default: $VMFORK_STATE, else ./state); its socket is vmfork.sock there.")
    var state: String?

    @Option(help: "The daemon's socket (instead of the state folder's).")
    var socket: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    var client: AgentClient {
        let folder = state.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? PlacementService.defaultFolder
        return AgentClient(socketPath: socket ?? folder.appendingPathComponent(AgentDaemon.socketName).path)
    }

    /// Sends a request; a refusal ends the command with the daemon's message.
    func call(_ method: String, _ path: String, body: Data? = nil) throws -> AgentClient.Response {
        let response: AgentClient.Response
        do {
            response = try client.send(method, path, body: body)
        } catch {
            throw CLIError("\(error)")
        }
        guard (200..<300).contains(response.status) else { throw CLIError("\(response.errorMessage) (HTTP \(response.status))") }
        return response
    }

    func call<T: Encodable>(_ method: String, _ path: String, json value: T) throws -> AgentClient.Response {
        try call(method, path, body: try JSONEncoder().encode(value))
    }

    /// Prints the response as indented JSON.
    func printJSON(_ response: AgentClient.Response) {
        if let object = try? JSONSerialization.jsonObject(with: response.body),
           let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) {
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(response.text)
        }
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = "vmfork: " + description }
}

/// Columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { index, cell in index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }.joined(separator: "\n")
}

func percentEncoded(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
}

/// `vmfork container`: containers through the daemon.
struct ContainerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "container",
        abstract: "Run and manage containers through the daemon (vmfork serve).",
        subcommands: [Run.self, Create.self, Start.self, PS.self, Logs.self, Stop.self, Kill.self, Resize.self, Remove.self, Inspect.self, Wait.self, Commit.self]
    )

    struct SpecOptions: ParsableArguments {
        @Option(help: "A unique name.") var name: String?
        @Option(name: .customLong("env"), help: "An environment variable NAME=VALUE (repeatable; replaces the image's).") var environment: [String] = []
        @Option(help: "The hostname the program sees.") var hostname: String?
        @Option(help: "Guest memory in MiB (the memory limit; picks the warm parent of that size).") var memory: Int?
        @Option(help: "A label KEY=VALUE (repeatable).") var label: [String] = []
        @Flag(help: "Fork from the parent stopped at its first read of standard input (the image's own arguments).") var stdinForkPoint = false
        @Option(help: "Placement resource pool to charge.") var pool: String?
        @Option(help: "Docker's ENTRYPOINT in place of the image's: the program as argv[0] names it, found in the image (\"\" for none); the words after -- are then its CMD.")
        var entrypoint: String?
        @Flag(help: "The words after -- are Docker's CMD (argv[0] first when the image has no entrypoint), not the arguments after the image's argv[0].")
        var cmd = false
        @Flag(name: .shortAndLong, help: "Give the container a terminal (24 x 80; \\n reaches the output as \\r\\n, stderr goes to stdout).") var tty = false

        func spec(image: String, arguments: [String]) throws -> ContainerSpec {
            var labels: [String: String] = [:]
            for entry in label {
                let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                labels[parts[0]] = parts.count == 2 ? parts[1] : ""
            }
            let docker = entrypoint != nil || cmd
            return ContainerSpec(image: image, name: name, arguments: docker || arguments.isEmpty ? nil : arguments,
                                 entrypoint: entrypoint.map { [$0] }, cmd: docker && !arguments.isEmpty ? arguments : nil,
                                 environment: environment.isEmpty ? nil : environment, hostname: hostname, memoryMiB: memory,
                                 forkPoint: stdinForkPoint ? .stdin : nil, labels: labels.isEmpty ? nil : labels, pool: pool, tty: tty ? true : nil)
        }
    }

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "run", abstract: "Fork a container, run it, print its output, exit with its status.",
                                                        discussion: "Example: vmfork container run busybox -- echo hi")
        @Argument(help: "The image.") var image: String
        @Argument(parsing: .postTerminator, help: "After --: the arguments after the image's argv[0]; with --cmd or --entrypoint, Docker's CMD.") var arguments: [String] = []
        @OptionGroup var spec: SpecOptions
        @Option(help: "Standard input to give the program (all of it).") var stdin: String?
        @Flag(help: "Keep the container after it ends (vmfork container rm later).") var keep = false
        @OptionGroup var daemon: DaemonOptions

        func run() throws {
            var body = try spec.spec(image: image, arguments: arguments.first == "--" ? Array(arguments.dropFirst()) : arguments)
            body.stdin = stdin
            let response = try daemon.call("POST", "/v1/containers/run?remove=\(!keep)", json: body)
            if daemon.json {
                daemon.printJSON(response)
                return
            }
            let result = try response.decode(RunResult.self)
            FileHandle.standardOutput.write(Data(result.stdout.utf8))
            FileHandle.standardError.write(Data(result.stderr.utf8))
            if result.exitCode != 0 { throw ExitCode(Int32(result.exitCode)) }
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Fork a container (not started); prints its id.")
        @Argument(help: "The image.") var image: String
        @Argument(parsing: .postTerminator, help: "After --: the arguments after the image's argv[0]; with --cmd or --entrypoint, Docker's CMD.") var arguments: [String] = []
        @OptionGroup var spec: SpecOptions
        @Flag(help: "Keep standard input open for attach.") var openStdin = false
        @OptionGroup var daemon: DaemonOptions

        func run() throws {
            var body = try spec.spec(image: image, arguments: arguments.first == "--" ? Array(arguments.dropFirst()) : arguments)
            body.openStdin = openStdin ? true : nil
            let response = try daemon.call("POST", "/v1/containers", json: body)
            if daemon.json { daemon.printJSON(response) } else { print(try response.decode(ContainerInfo.self).id) }
        }
    }

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "start", abstract: "Start a created container.")
        @Argument(help: "Container id or name.") var container: String
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            let response = try daemon.call("POST", "/v1/containers/\(percentEncoded(container))/start")
            if daemon.json { daemon.printJSON(response) } else { print(try response.decode(ContainerInfo.self).id) }
        }
    }

    struct Wait: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "wait", abstract: "Wait until a container ends; exit with its status.")
        @Argument(help: "Container id or name.") var container: String
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            let response = try daemon.call("POST", "/v1/containers/\(percentEncoded(container))/wait")
            let exit = try response.decode(ExitInfo.self)
            if daemon.json { daemon.printJSON(response) } else { print(exit.reason) }
            if exit.exitCode != 0 { throw ExitCode(Int32(exit.exitCode)) }
        }
    }

    struct PS: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ps", abstract: "List containers.")
        @Flag(name: .shortAndLong, help: "Every container (default: running and created only).") var all = false
        @Option(help: "Only this image.") var image: String?
        @Option(help: "Only with this label (KEY or KEY=VALUE; repeatable).") var label: [String] = []
        @OptionGroup var daemon: DaemonOptions

        func run() throws {
            var query = label.map { "label=\(percentEncoded($0))" } + ["memory=true"]
            if let image { query.append("image=\(percentEncoded(image))") }
            let response = try daemon.call("GET", "/v1/containers?" + query.joined(separator: "&"))
            if daemon.json { return daemon.printJSON(response) }
            let containers = try response.decode([ContainerInfo].self).filter { all || $0.state != .exited }
            func kib(_ bytes: Int) -> String { "\(bytes / 1024) KiB" }
            print(table(["ID", "NAME", "IMAGE", "STATE", "STATUS", "FORK", "OWN / SHARED", "COMMAND"], containers.map { c in
                [String(c.id.prefix(12)), c.name, c.image, c.state.rawValue, c.exitReason ?? "",
                 c.forkMicroseconds.map { String(format: "%.0f µs", $0) } ?? "", c.memory.map { "\(kib($0.privateBytes)) / \(kib($0.sharedBytes))" } ?? "",
                 c.arguments.joined(separator: " ")]
            }))
        }
    }

    struct Logs: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "logs",
            abstract: "Print a container's output (stdout, then stderr; with -f as it comes).",
            discussion: "With --timestamps, --since or --until: whole lines, stdout's and stderr's in the order they were written, each line's time that of its first byte (at most 1 ms early).")
        @Argument(help: "Container id or name.") var container: String
        @Flag(name: .shortAndLong, help: "Follow the output until the container ends.") var follow = false
        @Option(help: "stdout, stderr or all.") var stream = "all"
        @Flag(name: .shortAndLong, help: "Prefix each line with the time it was written (RFC 3339, UTC, nanoseconds).") var timestamps = false
        @Option(help: "Only lines written since this time: seconds since 1970, or a duration ago (30s, 5m, 2h).") var since: String?
        @Option(help: "Only lines written until this time: seconds since 1970, or a duration ago (30s, 5m, 2h).") var until: String?
        @OptionGroup var daemon: DaemonOptions

        /// Seconds since 1970 from "1733388137.5" or a duration ago ("30s", "5m", "2h").
        static func time(_ text: String, option: String) throws -> Double {
            if let seconds = Double(text), seconds.isFinite { return seconds }
            let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600]
            if let unit = text.last.flatMap({ units[$0] }), let count = Double(text.dropLast()), count.isFinite, count >= 0 {
                return Date().timeIntervalSince1970 - count * unit
            }
            throw CLIError("--\(option) \(text) is neither seconds since 1970 nor a duration such as 30s, 5m or 2h")
        }

        func run() throws {
            var path = "/v1/containers/\(percentEncoded(container))/logs?stream=\(percentEncoded(stream))&follow=\(follow)"
            if timestamps { path += "&timestamps=true" }
            if let since { path += "&sinceTime=\(try Self.time(since, option: "since"))" }
            if let until { path += "&untilTime=\(try Self.time(until, option: "until"))" }
            var refusal = Data()
            let status: Int
            do {
                status = try daemon.client.stream("GET", path) { chunk in
                    refusal.append(chunk.prefix(4096))
                    FileHandle.standardOutput.write(chunk)
                    return true
                }
            } catch {
                throw CLIError("\(error)")
            }
            if status != 200 { throw CLIError("HTTP \(status)") }
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "stop", abstract: "SIGTERM to the program, power off after the grace period.")
        @Argument(help: "Container id or name.") var container: String
        @Option(name: .shortAndLong, help: "Seconds before power-off.") var time = 10
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            let response = try daemon.call("POST", "/v1/containers/\(percentEncoded(container))/stop?grace=\(time)")
            if daemon.json { daemon.printJSON(response) } else { print(try response.decode(ExitInfo.self).reason) }
        }
    }

    struct Kill: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "kill", abstract: "Send a signal (default 9: power off now).")
        @Argument(help: "Container id or name.") var container: String
        @Option(name: .shortAndLong, help: "The signal number.") var signal = 9
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            let response = try daemon.call("POST", "/v1/containers/\(percentEncoded(container))/kill?signal=\(signal)")
            if daemon.json { daemon.printJSON(response) } else { print(try response.decode(ContainerInfo.self).id) }
        }
    }

    struct Resize: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "resize", abstract: "Set the window size of a container's terminal (one created with --tty).")
        @Argument(help: "Container id or name.") var container: String
        @Option(help: "Rows (1-65535).") var rows: Int
        @Option(help: "Columns (1-65535).") var columns: Int
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            _ = try daemon.call("POST", "/v1/containers/\(percentEncoded(container))/resize?rows=\(rows)&columns=\(columns)")
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove containers.")
        @Argument(help: "Container ids or names.") var containers: [String]
        @Flag(name: .shortAndLong, help: "Kill running ones first.") var force = false
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            for container in containers {
                _ = try daemon.call("DELETE", "/v1/containers/\(percentEncoded(container))?force=\(force)")
                print(container)
            }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show a container as JSON.")
        @Argument(help: "Container id or name.") var container: String
        @OptionGroup var daemon: DaemonOptions
        func run() throws { daemon.printJSON(try daemon.call("GET", "/v1/containers/\(percentEncoded(container))")) }
    }

    struct Commit: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "commit",
            abstract: "Make an image of an ended container: its image's layers plus one holding its changes (containers of pulled images only).")
        @Argument(help: "Container id or name.") var container: String
        @Argument(help: "The new image's name.") var image: String
        @Option(name: .shortAndLong, help: "A comment for the new layer's history entry.") var message: String?
        @Option(name: .shortAndLong, help: ArgumentHelp(
            "A Dockerfile instruction for the new image's config, as docker commit --change takes it (repeatable).",
            discussion: "CMD and ENTRYPOINT (JSON array or shell form), ENV and LABEL (NAME=value ... or NAME value), WORKDIR, USER, EXPOSE, STOPSIGNAL."))
        var change: [String] = []
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            struct Body: Encodable { var name: String; var comment: String?; var changes: [String]? }
            let response = try daemon.call("POST", "/v1/containers/\(percentEncoded(container))/commit",
                                           json: Body(name: image, comment: message, changes: change.isEmpty ? nil : change))
            if daemon.json { daemon.printJSON(response); return }
            let result = try response.decode(CommitResult.self)
            print("committed \(container) as image \(result.image.name): layer \(result.layer) (\(result.layerBytes) bytes; \(result.changed) added or changed, \(result.removed) removed)")
        }
    }
}

/// `vmfork parent`: warm parents through the daemon.
struct ParentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parent", abstract: "Warm parent policies through the daemon.", subcommands: [List.self, Create.self, Drain.self, Remove.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List warm parents with their sharing figures.")
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            let response = try daemon.call("GET", "/v1/parents")
            if daemon.json { return daemon.printJSON(response) }
            func kib(_ bytes: Int?) -> String { bytes.map { "\($0 / 1024) KiB" } ?? "" }
            print(table(["ID", "STATE", "PARENTS", "READY VMS", "CHILDREN", "MISSES", "PARENT MEM", "CHILD PRIVATE", "SAVED"],
                        try response.decode([ParentInfo].self).map { p in
                [p.id, p.state, "\(p.parentsReady)/\(p.policy.parents)", "\(p.readyVMsNow)/\(p.policy.readyVMs * p.policy.parents)",
                 "\(p.liveChildren)", "\(p.poolMisses)", kib(p.sharing?.parentBytes), kib(p.sharing?.childPrivateBytesMedian), kib(p.sharing?.savedBytes)]
            }))
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Record a policy and make its parents now.")
        @Argument(help: "The image.") var image: String
        @Option(help: "Where the parents stop: main, entry or stdin (default: the image's, main where the engine finds it).") var forkPoint: ForkPointName?
        @Option(help: "Guest memory in MiB.") var memory = ParentPolicy.defaultMemoryMiB
        @Option(help: "Warm parents to keep.") var parents = 1
        @Option(name: .customLong("ready-vms"), help: "Ready VMs per parent's pool.") var readyVMs = 8
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            var policy = ParentPolicy(image: image, memoryMiB: memory, parents: parents, readyVMs: readyVMs)
            if let forkPoint { policy.forkPoint = forkPoint } else {
                let record = try daemon.call("GET", "/v1/images/\(image)").decode(ImageRecord.self)
                policy.forkPoint = record.defaultForkPoint ?? .entry
            }
            let response = try daemon.call("POST", "/v1/parents", json: policy)
            if daemon.json { daemon.printJSON(response) } else { print(try response.decode(ParentInfo.self).id) }
        }
    }

    struct Drain: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "drain", abstract: "Fork no more from a policy's parents; they go with their last child.")
        @Argument(help: "The policy's id (IMAGE.FORKPOINT.MEMORYm).") var id: String
        @OptionGroup var daemon: DaemonOptions
        func run() throws { daemon.printJSON(try daemon.call("POST", "/v1/parents/\(percentEncoded(id))/drain")) }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a policy and its parents.")
        @Argument(help: "The policy's id.") var id: String
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            _ = try daemon.call("DELETE", "/v1/parents/\(percentEncoded(id))")
            print(id)
        }
    }
}

/// `vmfork events`: the daemon's audit log.
struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "Print the daemon's event log (with -f, as events come).")
    @Flag(name: .shortAndLong, help: "Follow new events.") var follow = false
    @Option(help: "Only these types, comma-separated (e.g. container.exit).") var type: String?
    @Option(help: "From this time (seconds since 1970).") var since: Double?
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        var query: [String] = []
        if let type { query.append("type=\(percentEncoded(type))") }
        if let since { query.append("since=\(since)") }
        let path = "/v1/events" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        func line(_ event: [String: Any]) -> String {
            let time = Date(timeIntervalSince1970: event["time"] as? Double ?? 0)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let detail = (event["detail"] as? String).flatMap { $0.isEmpty ? nil : " \($0)" } ?? ""
            return "\(formatter.string(from: time))  \(event["type"] ?? "")  \(event["subject"] ?? "")  by \(event["actor"] ?? "")  \(event["result"] ?? "")\(detail)"
        }
        if !follow {
            let response = try daemon.call("GET", path)
            if daemon.json { return daemon.printJSON(response) }
            for event in (try JSONSerialization.jsonObject(with: response.body) as? [[String: Any]]) ?? [] { print(line(event)) }
            return
        }
        var pending = Data()
        let status = try daemon.client.stream("GET", path + (query.isEmpty ? "?" : "&") + "follow=true") { chunk in
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let record = pending[pending.startIndex..<newline]
                pending = Data(pending[(newline + 1)...])
                // Written unbuffered, so that a follower piped to another program sees each event at once.
                if daemon.json {
                    FileHandle.standardOutput.write(Data(record) + Data([0x0A]))
                } else if let event = try? JSONSerialization.jsonObject(with: record) as? [String: Any] {
                    FileHandle.standardOutput.write(Data((line(event) + "\n").utf8))
                }
            }
            return true
        }
        if status != 200 { throw CLIError("HTTP \(status)") }
    }
}
