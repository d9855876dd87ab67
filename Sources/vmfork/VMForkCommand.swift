import ArgumentParser

/// `vmfork`: the command-line entry point. It parses, calls the engine, and prints.
@main
struct VMForkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmfork",
        abstract: "Run containers as KVM process VMs, forked in microseconds from warm parents.",
        version: "0.1.0",
        subcommands: [
            DoctorCommand.self, RunCommand.self, ForkCommand.self, DiskCommand.self,
            PoolCommand.self, HostCommand.self, ImageCommand.self, FleetCommand.self,
            PlaceCommand.self, CommitCommand.self, ReleaseCommand.self, CapacityCommand.self,
            ServeCommand.self, ContainerCommand.self, ParentCommand.self, EventsCommand.self,
            LoadCommand.self,
            VCHCommand.self,
            WorkerCommand.self,
        ]
    )
}
