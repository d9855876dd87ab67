import API
import ArgumentParser
import Engine
import Foundation
import Placement

/// `vmfork image`: images containers are forked from (through the daemon), and what a fork
/// of each costs in the placement state.
struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Register images with the daemon; record images' placement costs.",
        discussion: """
            `image pull` pulls an image from a registry into the daemon's datastore and registers it:
              vmfork image pull 127.0.0.1:5000/busybox:latest
            With --rootfs, `image add` registers an image with the daemon (vmfork serve):
              vmfork image add busybox --rootfs /srv/busybox --executable /bin/busybox
            With --parent-memory, --growth and --cpu, it records the image's placement cost in the state folder:
              vmfork image add nginx --parent-memory 48MiB --growth 24MiB --cpu 20
            """,
        subcommands: [Add.self, Pull.self, List.self, Inspect.self, Remove.self, Collect.self, Growth.self]
    )

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Register an image with the daemon (--rootfs), or an image's placement cost (--parent-memory).")
        @Argument(help: "The image's name.") var name: String
        @Option(help: "Daemon image: its root filesystem folder.") var rootfs: String?
        @Option(help: "Daemon image: the program its warm parents load (a path inside the rootfs).") var executable: String?
        @Option(name: .customLong("arg"), help: "Daemon image: a default argument after argv[0] (repeatable).") var arguments: [String] = []
        @Option(name: .customLong("env"), help: "Daemon image: a default NAME=VALUE (repeatable).") var environment: [String] = []
        @Option(help: "Placement: memory of the warm parent, e.g. 48MiB.") var parentMemory: MemoryAmount?
        @Option(help: "Placement: private memory a child owns after running a while, e.g. 2MiB.") var growth: MemoryAmount?
        @Option(help: "Placement: CPU MHz each child is charged.") var cpu: Int?
        @Option(help: "The state folder (default: $VMFORK_STATE, else ./state).") var state: String?
        @Option(help: "The daemon's socket (instead of the state folder's).") var socket: String?
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            let daemon = rootfs != nil || executable != nil
            let placement = parentMemory != nil || growth != nil || cpu != nil
            guard daemon != placement else {
                throw ValidationError("give --rootfs and --executable (a daemon image) or --parent-memory, --growth and --cpu (a placement cost)")
            }
            if daemon, rootfs == nil || executable == nil { throw ValidationError("a daemon image needs both --rootfs and --executable") }
            if placement, parentMemory == nil || growth == nil || cpu == nil { throw ValidationError("a placement cost needs --parent-memory, --growth and --cpu") }
        }

        func run() throws {
            if let rootfs, let executable {
                let options = try DaemonOptions.parse((state.map { ["--state", $0] } ?? []) + (socket.map { ["--socket", $0] } ?? []) + (json ? ["--json"] : []))
                let absolute = URL(fileURLWithPath: rootfs).standardizedFileURL.path
                let body: [String: AnyEncodable] = ["name": .string(name), "rootfs": .string(absolute), "executable": .string(executable),
                                                    "arguments": .strings(arguments), "environment": .strings(environment)]
                let response = try options.call("POST", "/v1/images", json: body)
                if json { options.printJSON(response) } else { print("added image \(name)") }
                return
            }
            guard let parentMemory, let growth, let cpu else { return }
            let service = try StateOptions.parse(state.map { ["--state", $0] } ?? []).openService()
            try service.addImage(ImageCost(name: name, parentMemoryKiB: parentMemory.kib, growthPerChildKiB: growth.kib, cpuMHzPerChild: cpu))
            print("added image \(name)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the daemon's images.")
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            let response = try daemon.call("GET", "/v1/images")
            if daemon.json { return daemon.printJSON(response) }
            print(table(["NAME", "EXECUTABLE", "ARGUMENTS", "SOURCE"], try response.decode([ImageRecord].self).map {
                [$0.name, $0.executable, $0.arguments.joined(separator: " "), $0.pulled.map { pulled in pulled.committedFrom.map { "committed from \($0.prefix(12))" } ?? pulled.reference } ?? $0.rootfs]
            }))
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a daemon image (refused while containers use it).")
        @Argument(help: "The image's name.") var name: String
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            _ = try daemon.call("DELETE", "/v1/images/\(percentEncoded(name))")
            print(name)
        }
    }

    struct Growth: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "growth", abstract: "Record the growth per child the fork engine measured.")
        @Argument(help: "The image's name.") var name: String
        @Argument(help: "Private memory per child, e.g. 384KiB.") var growth: MemoryAmount
        @OptionGroup var options: StateOptions

        func run() throws {
            try options.openService().setGrowth(image: name, growthPerChildKiB: growth.kib)
            print("image \(name): forks are now charged \(Resources.formatKiB(growth.kib))")
        }
    }
}

/// A string or a list of strings, for small JSON bodies built by hand.
enum AnyEncodable: Encodable {
    case string(String)
    case strings([String])

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .strings(let value): try container.encode(value)
        }
    }
}
