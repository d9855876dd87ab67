import ArgumentParser

/// `vmfork release ID`: the fork ended (or never started); give back what it was charged.
struct ReleaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "release", abstract: "Release a placement or reservation.")
    @Argument(help: "The placement's id.") var id: Int
    @OptionGroup var options: StateOptions

    func run() throws {
        let placement = try options.openService().release(id)
        print("placement \(id) released: \(placement.charge) back to pool \(placement.pool) and \(placement.host)")
    }
}
