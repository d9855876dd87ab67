import ArgumentParser
import Capabilities

/// Prints what this host offers the engine (KVM, io_uring, NUMA) and exits non-zero when a
/// part the engine needs is missing.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Probe /dev/kvm, io_uring and NUMA, and say what is missing and how to get it."
    )

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Option(help: "The KVM device to probe.")
    var kvmDevice = "/dev/kvm"

    func run() throws {
        let report = CapabilityReport.probe(kvmPath: kvmDevice)
        print(json ? report.renderJSON() : report.renderText())
        if !report.isReady { throw ExitCode(3) }
    }
}
