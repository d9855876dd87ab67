import API
import ArgumentParser
import Foundation

/// The host agent's own VCHs (`/v1/vchs`): made, listed and deleted through the daemon, which
/// runs their endpoints in its process and starts them again after a restart.
extension VCHCommand {
    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Create a VCH owned by the host agent (recorded in its state, served by the daemon).",
            discussion: """
                Example: vmfork vch create dev --pool dev --state state
                prints the docker -H line to use; --listen tcp://127.0.0.1:PORT serves it on TCP with a bearer token.
                """
        )
        @Argument(help: "The VCH's name: its containers' label and name prefix.") var name: String
        @Option(help: "The placement resource pool its containers are charged to.") var pool: String
        @Option(help: "unix (a socket in the state folder, the default) or tcp://127.0.0.1:PORT.") var listen = "unix"
        @OptionGroup var daemon: DaemonOptions

        func run() throws {
            let response = try daemon.call("POST", "/v1/vchs", json: ["name": name, "pool": pool, "listen": listen])
            if daemon.json { return daemon.printJSON(response) }
            let info = try response.decode(VCHInfo.self)
            print(info.dockerCommand)
            if let tokenFile = info.tokenFile { print("token: \(tokenFile) (send it as Authorization: Bearer TOKEN from ~/.docker/config.json HttpHeaders)") }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the host agent's VCHs.")
        @OptionGroup var daemon: DaemonOptions

        func run() throws {
            let response = try daemon.call("GET", "/v1/vchs")
            if daemon.json { return daemon.printJSON(response) }
            let vchs = try response.decode([VCHInfo].self)
            print(table(["NAME", "POOL", "STATE", "CONTAINERS", "DOCKER HOST"], vchs.map { vch in
                [vch.name, vch.pool, vch.failure.map { "failed: \($0)" } ?? vch.state, "\(vch.containers)", vch.dockerHost]
            }))
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a VCH of the host agent (refused while it has containers).")
        @Argument(help: "The VCH's name.") var name: String
        @Flag(name: .shortAndLong, help: "Remove its containers first (running ones are killed).") var force = false
        @OptionGroup var daemon: DaemonOptions

        func run() throws {
            _ = try daemon.call("DELETE", "/v1/vchs/\(percentEncoded(name))?force=\(force)")
        }
    }
}
