import ArgumentParser
import Placement

/// `vmfork pool`: the resource-pool tree, one pool per Virtual Container Host and below.
struct PoolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Add, change and list resource pools (vSphere semantics: reservation, limit, shares, expandable).",
        subcommands: [Add.self, Set.self, List.self]
    )

    struct Settings: ParsableArguments {
        @Option(help: "Memory taken from the parent whether used or not (e.g. 64GiB).")
        var memoryReservation: MemoryAmount?
        @Option(help: "Cap on all memory the pool holds (e.g. 256GiB).")
        var memoryLimit: MemoryAmount?
        @Option(help: "CPU MHz taken from the parent whether used or not.")
        var cpuReservation: Int?
        @Option(help: "Cap on all CPU MHz the pool holds.")
        var cpuLimit: Int?
        @Option(help: "Weight among siblings under contention.")
        var shares: Int?
        @Option(help: "Whether admission may borrow from ancestors: true or false.")
        var expandable: Bool?
        @Option(help: "spread (most free host first) or pack (fullest host that fits).")
        var policy: PlacementPolicy?

        func apply(to spec: inout PoolSpec) {
            if let memoryReservation { spec.reservation.memoryKiB = memoryReservation.kib }
            if let memoryLimit { spec.memoryLimitKiB = memoryLimit.kib }
            if let cpuReservation { spec.reservation.cpuMHz = cpuReservation }
            if let cpuLimit { spec.cpuLimitMHz = cpuLimit }
            if let shares { spec.shares = shares }
            if let expandable { spec.expandable = expandable }
            if let policy { spec.policy = policy }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a pool; its reservation is admitted against its parent.")
        @Argument(help: "The pool's name.") var name: String
        @Option(help: "The parent pool (default: root, the whole fleet).") var parent = PoolTree.rootName
        @OptionGroup var settings: Settings
        @OptionGroup var options: StateOptions

        func run() throws {
            var spec = PoolSpec(name: name, parent: parent)
            settings.apply(to: &spec)
            try options.openService().addPool(spec)
            print("added pool \(name) under \(parent)")
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Change a pool's settings or move it under another parent.")
        @Argument(help: "The pool's name.") var name: String
        @Option(help: "A new parent pool.") var parent: String?
        @OptionGroup var settings: Settings
        @OptionGroup var options: StateOptions

        func run() throws {
            let service = try options.openService()
            var spec = try service.read { core in try core.pool(name) }
            if let parent { spec.parent = parent }
            settings.apply(to: &spec)
            try service.updatePool(spec)
            print("updated pool \(name)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the pools with what they hold and could still take.")
        @OptionGroup var options: StateOptions

        func run() throws {
            print(try options.openService().read { core in try core.capacityReport(images: []) }.renderPools())
        }
    }
}

extension PlacementPolicy: ExpressibleByArgument {}
