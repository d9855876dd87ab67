import ArgumentParser
import Placement

/// `vmfork place`: one placement decision, as the RPC API will ask for it.
struct PlaceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "place",
        abstract: "Place a fork of an image in a pool: reserve it (and commit it), or explain where it would go."
    )

    @Option(help: "The pool (the Virtual Container Host's pool or one below it).") var pool: String
    @Option(help: "The image to fork.") var image: String
    @Flag(help: "Commit the reservation at once (the fork started).") var commit = false
    @Flag(help: "Only explain the decision, host by host; change nothing.") var explain = false
    @Flag(help: "Refuse rather than start a cold VM when no warm parent fits.") var noColdStart = false
    @Option(help: "With --explain: how many hosts to list.") var hosts = 12
    @OptionGroup var options: StateOptions

    func run() throws {
        let service = try options.openService()
        if explain {
            print(try service.read { core in try core.explain(pool: pool, image: image, allowColdStart: !noColdStart) }.render(hosts: hosts))
            return
        }
        var placement = try service.reserve(pool: pool, image: image, allowColdStart: !noColdStart)
        if commit { placement = try service.commit(placement.id) }
        print("placement \(placement.id): \(image) in \(pool) on \(placement.host) node \(placement.node), \(placement.start.rawValue), "
            + "charged \(placement.charge), \(placement.committed ? "committed" : "reserved for \(Int(service.leaseSeconds))s until committed")")
    }
}
