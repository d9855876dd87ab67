import Glibc
import KVM
import TestSupport
import Testing

@Suite struct KVMTests {
    @Test func missingDeviceIsNamed() {
        #expect(throws: KVMError.deviceMissing(path: "/dev/no-such-kvm")) {
            _ = try KVMSystem(path: "/dev/no-such-kvm")
        }
    }

    @Test func notADeviceFailsTheVersionCheckWithACall() {
        // /dev/null opens but answers no KVM ioctl: the error must name the failing check.
        #expect(throws: KVMError.self) { _ = try KVMSystem(path: "/dev/null") }
    }

    @Test(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
    func createsVMWithMemoryAndVCPU() throws {
        let system = try KVMSystem()
        #expect(system.apiVersion == 12)
        try system.requireExtensions()
        let vm = try system.createVM()
        let size = 2 << 20
        let memory = UnsafeMutableRawPointer(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))!
        defer { munmap(memory, size) }
        try vm.setMemoryRegion(slot: 0, guestPhysical: 0, size: size, host: memory)
        let vcpu = try vm.createVCPU(id: 0)
        try vcpu.setCPUID(system.supportedCPUID())
        let sregs = try vcpu.specialRegisters()
        // A new vCPU is at its reset state: real mode (CR0.PE clear), paging off (CR0.PG clear).
        #expect(sregs.cr0 & 1 == 0, "CR0 \(String(sregs.cr0, radix: 16))")
        #expect(sregs.cr0 & (1 << 31) == 0, "CR0 \(String(sregs.cr0, radix: 16))")
        var regs = try vcpu.registers()
        regs.rax = 0x1234_5678
        try vcpu.setRegisters(regs)
        #expect(try vcpu.registers().rax == 0x1234_5678)
    }

    @Test(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
    func supportedCPUIDHasLeaves() throws {
        let table = try KVMSystem().supportedCPUID()
        #expect(table.count > 4)
        #expect(table.entries.contains { $0.function == 0 })
    }

    @Test func detectsPVMFromLoadedModule() throws {
        let root = try HostFacts.makeTemporaryFolder("modules")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("kvm_pvm"), withIntermediateDirectories: true)
        #expect(VirtualizationKind.detect(modulesRoot: root.path) == .pvm)
        #expect(VirtualizationKind.detect(modulesRoot: "/nonexistent") == .unknown)
    }
}

import Foundation
