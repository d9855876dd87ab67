import ArgumentParser

/// `vmfork`: the command-line entry point. It parses, calls the engine, and prints.
@main
struct VMForkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmfork",
        abstract: "Run containers as KVM process VMs, forked in microseconds from warm parents.",
        version: "0.1.0",
        subcommands: [DoctorCommand.self, DiskCommand.self]
    )
}
