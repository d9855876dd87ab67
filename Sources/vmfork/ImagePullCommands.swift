import API
import ArgumentParser
import Engine
import Foundation

/// `vmfork image pull|inspect|gc`: images from registries, through the daemon.
extension ImageCommand {
    struct Pull: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pull",
            abstract: "Pull an image from a registry into the daemon's datastore and register it.",
            discussion: """
                REF is REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]; loopback registries are spoken to over HTTP:
                  vmfork image pull 127.0.0.1:5000/busybox:latest
                  echo secret | vmfork image pull 127.0.0.1:5001/busybox --name private --username alice --password-stdin
                """
        )
        @Argument(help: "The image reference.") var reference: String
        @Option(help: "The local image name (default: the repository's last component).") var name: String?
        @Option(help: "Registry user name (with --password-stdin).") var username: String?
        @Flag(help: "Read the registry password from standard input.") var passwordStdin = false
        @OptionGroup var daemon: DaemonOptions

        func validate() throws {
            if (username == nil) != !passwordStdin { throw ValidationError("give --username and --password-stdin together") }
        }

        func run() throws {
            var body: [String: AnyEncodable] = ["reference": .string(reference)]
            if let name { body["name"] = .string(name) }
            if let username {
                let password = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                    .trimmingCharacters(in: .newlines)
                body["username"] = .string(username)
                body["password"] = .string(password)
            }
            let response = try daemon.call("POST", "/v1/images/pull", json: body)
            if daemon.json { return daemon.printJSON(response) }
            let image = try response.decode(ImageRecord.self)
            print("pulled \(image.pulled?.reference ?? reference) as image \(image.name) (\(image.pulled?.manifestDigest.description ?? "?"))")
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show an image: its program, and for a pulled image its source, digests and config.")
        @Argument(help: "The image's name.") var name: String
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            let response = try daemon.call("GET", "/v1/images/\(percentEncoded(name))")
            daemon.printJSON(response)
        }
    }

    struct Collect: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove pulled root folders and blobs no image uses.")
        @OptionGroup var daemon: DaemonOptions
        func run() throws {
            let response = try daemon.call("POST", "/v1/images/gc")
            if daemon.json { return daemon.printJSON(response) }
            struct Report: Decodable { var rootfsRemoved: Int; var blobsRemoved: Int; var bytesFreed: Int64 }
            let report = try response.decode(Report.self)
            print("removed \(report.rootfsRemoved) root folder(s) and \(report.blobsRemoved) blob(s), \(report.bytesFreed / 1024) KiB freed")
        }
    }
}
