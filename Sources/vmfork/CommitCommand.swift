import ArgumentParser

/// `vmfork commit ID`: the fork started, so its reservation becomes a placement.
struct CommitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "commit", abstract: "Commit a reserved placement.")
    @Argument(help: "The placement's id.") var id: Int
    @OptionGroup var options: StateOptions

    func run() throws {
        let placement = try options.openService().commit(id)
        print("placement \(id) committed on \(placement.host)")
    }
}
