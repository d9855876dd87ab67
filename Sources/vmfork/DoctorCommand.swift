import ArgumentParser
import Capabilities
import KVM
import ProcessVM

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

    @Flag(inversion: .prefixedNo, help: "Measure what a VM exit, a polled system call and an emulated CPUID cost here (about a second).")
    var costs = true

    func run() throws {
        let report = CapabilityReport.probe(kvmPath: kvmDevice)
        print(json ? report.renderJSON() : report.renderText())
        if !report.isReady { throw ExitCode(3) }
        // Figures taken on machines of this kind are comparable only beside these costs.
        if costs, !json {
            let measured = try MachineCosts.measure(system: try KVMSystem(path: kvmDevice))
            print("costs        \(measured.summary) (medians of 5, 2,000 calls each)")
        }
    }
}
