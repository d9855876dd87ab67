import Foundation
import Images

extension ImageRecord {
    /// The program's argv[0] as the image's command names it: a pulled image's first word of
    /// Entrypoint + Cmd as written ("ls" for `CMD ["ls", "/"]`, not the file it leads to); for
    /// an image added from a folder, its executable. `arguments` follow it.
    public var argv0: String { pulled.flatMap { ($0.entrypoint + $0.cmd).first } ?? executable }

    /// Docker's view of the image's command: a pulled image's config; for an image added from
    /// a folder, its executable as the entrypoint and its arguments as the cmd.
    public var dockerEntrypoint: [String] { pulled?.entrypoint ?? [executable] }
    public var dockerCmd: [String] { pulled?.cmd ?? arguments }
}

/// The command a container runs: the image's program (a warm parent is that program, loaded)
/// with argv[0] as the command names it and the arguments after it, decided from a container
/// spec as Docker decides it from a container config.
struct ContainerCommand: Sendable, Equatable {
    var argv0: String
    var arguments: [String]
    /// Docker's ENTRYPOINT and CMD the container runs, merged with the image's as Docker merges
    /// them (nil when the spec named neither: it runs `arguments` or the image's command).
    var entrypoint: [String]?
    var cmd: [String]?

    /// `arguments` after the image's argv[0]; or Docker's merge of `entrypoint` and `cmd` with
    /// the image's (an entrypoint of its own drops the image's cmd), whose first word is argv[0]
    /// and must lead, inside the image, to the image's program.
    /// `environment` is the container's: its PATH finds a bare name, as runc's does.
    static func decide(_ spec: ContainerSpec, image: ImageRecord, environment: [String]) throws -> ContainerCommand {
        guard spec.entrypoint != nil || spec.cmd != nil else {
            return ContainerCommand(argv0: image.argv0, arguments: spec.arguments ?? image.arguments)
        }
        guard spec.arguments == nil else {
            throw EngineError.invalid("arguments", "give either arguments (after the image's argv[0]) or entrypoint/cmd (Docker's command), not both")
        }
        if let entrypoint = spec.entrypoint { try Engine.validateArguments(entrypoint, field: "entrypoint") }
        if let cmd = spec.cmd { try Engine.validateArguments(cmd, field: "cmd") }
        // Docker's merge: without an entrypoint of its own the container takes the image's,
        // and then, without a cmd of its own, the image's cmd; `--entrypoint ""` ([""]) is an
        // entrypoint (no cmd taken from the image) that names none.
        var entrypoint = spec.entrypoint ?? image.dockerEntrypoint
        var cmd = spec.cmd ?? []
        if spec.entrypoint?.isEmpty ?? true, cmd.isEmpty { cmd = image.dockerCmd }
        if entrypoint == [""] { entrypoint = [] }
        let line = entrypoint + cmd
        let field = spec.entrypoint != nil && !entrypoint.isEmpty ? "entrypoint" : "cmd"
        guard let program = line.first, !program.isEmpty else {
            throw EngineError.invalid(field, "the container's entrypoint and cmd name no program")
        }
        try requireImageProgram(program, image: image, environment: environment, field: field)
        return ContainerCommand(argv0: program, arguments: Array(line.dropFirst()), entrypoint: entrypoint, cmd: cmd)
    }

    /// Refuses `program` unless it names, inside the image's root (its links followed there),
    /// the file the image's executable names.
    static func requireImageProgram(_ program: String, image: ImageRecord, environment: [String], field: String) throws {
        let root = URL(fileURLWithPath: image.rootfs)
        guard let own = ProgramResolver.realPath(image.executable, rootfs: root) else {
            throw EngineError(.conflict, "image \(image.name): its executable \(image.executable) is no longer a program in its root folder", field: "image")
        }
        let candidates = ProgramResolver.candidates(program, environment: environment, workingDir: image.startingDirectory)
        guard let found = candidates.lazy.compactMap({ ProgramResolver.realPath($0, rootfs: root) }).first else {
            throw EngineError.invalid(field, "\(field): program \"\(program.prefix(200))\" is not an executable file in image \(image.name) (looked in \(candidates.prefix(8).joined(separator: ", ")))")
        }
        guard found == own else {
            throw EngineError.invalid(field, "\(field): program \"\(program.prefix(200))\" is \(found) in image \(image.name), not its program \(own): a container runs its image's program (its warm parent is that program, loaded), under any name that leads to it (such as busybox's applet links)")
        }
    }
}
