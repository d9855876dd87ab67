import ArgumentParser
import Placement
import WorkloadProfiles

/// `vmfork fleet load`: puts a profile's hosts, images, pools and warm parents into the state.
struct FleetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Load a workload profile's fleet and pool tree into the placement state.",
        subcommands: [Load.self]
    )

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "load", abstract: "Load Profiles/NAME.yaml (all or nothing).")
        @Argument(help: "The profile file.") var profile: String
        @OptionGroup var options: StateOptions

        func run() throws {
            let loaded = try WorkloadProfile.load(path: profile)
            let plan = FleetPlan(profile: loaded)
            try options.openService().load(plan)
            print("loaded \(loaded.name): \(plan.hosts.count) \(loaded.fleet.simulated ? "simulated " : "")hosts, \(plan.pools.count) pools, "
                + "\(plan.images.count) images, \(plan.warmParents.count) warm parents")
        }
    }
}
