@testable import Capabilities
import Foundation
import HostSystem
import IOEngine
import KVM
import TestSupport
import Testing

@Suite(.serialized) struct CapabilitiesTests {
    @Test(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
    func probeOfThisMachineIsReady() {
        let report = CapabilityReport.probe()
        #expect(report.kvmProblem == nil)
        #expect(report.ioUringProblem == nil)
        #expect(report.isReady)
        let text = report.renderText()
        #expect(text.contains("KVM          ok: /dev/kvm API 12"))
        #expect(text.contains("KVM_CAP_SYNC_REGS"))
        #expect(text.contains("NUMA"))
        // This kind of machine (Linux 6.18, the tests as root) tracks pooled VMs' writes.
        #expect(report.writeTracking == nil && text.contains("memory       ok: write tracking"), "\(text)")
    }

    @Test func missingDeviceGivesNamedError() {
        let report = CapabilityReport.probe(kvmPath: "/dev/kvm-missing")
        #expect(report.kvmProblem == .deviceMissing(path: "/dev/kvm-missing"))
        #expect(!report.isReady)
        #expect(report.renderText().contains("/dev/kvm-missing does not exist"))
    }

    @Test func failedProbeRendersBothGapsAsValidJSON() {
        let report = CapabilityReport(kvm: .failure(.deviceMissing(path: "x")), ioUring: .failure(.missingOpcode(name: "y")), numa: nil,
                                      writeTracking: SystemError(call: "userfaultfd", errno: EPERM))
        #expect(report.renderText().contains("lacks y"))
        #expect(report.renderText().contains("no write tracking (userfaultfd failed"))
        let json = report.renderJSON()
        #expect(json.contains("\"ready\":false"))
        let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect((object?["writeTracking"] as? [String: Any])?["ok"] as? Bool == false)
    }

    /// Runs the real `vmfork doctor` as an unprivileged user, with io_uring restricted to
    /// privileged processes: both gaps must come out as their named errors, and the command
    /// must fail. Root is needed to drop privileges and to set the sysctl.
    @Test(.enabled(if: HostFacts.isRoot && FileManager.default.isWritableFile(atPath: "/proc/sys/kernel/io_uring_disabled"),
                   "needs root and a writable /proc/sys/kernel/io_uring_disabled"))
    func unprivilegedDoctorNamesBothGaps() throws {
        let sysctl = "/proc/sys/kernel/io_uring_disabled"
        let previous = try String(contentsOfFile: sysctl, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try "1".write(toFile: sysctl, atomically: false, encoding: .utf8)
        defer { try? previous.write(toFile: sysctl, atomically: false, encoding: .utf8) }
        let binary = HostFacts.productsFolder.appendingPathComponent("vmfork").path
        let result = try HostFacts.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", binary, "doctor"])
        #expect(result.status == 3)
        #expect(result.stdout.contains("no permission to open /dev/kvm"))
        #expect(result.stdout.contains("io_uring unavailable"))
        #expect(result.stdout.contains("io_uring_disabled"))
        #expect(result.stdout.contains("ready: no"))
    }
}
