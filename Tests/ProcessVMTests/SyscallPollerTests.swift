import Foundation
import HostSystem
import KVM
import ProcessVM
import TestSupport
import Testing

/// The poller spins only while guests post calls: a polled VM that computes without system
/// calls leaves the poller parked, costing no core.
@Suite(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
struct SyscallPollerTests {
    @Test func pollerParksWhileItsGuestComputes() throws {
        // 200 polled getpid calls, then a loop that never makes another call.
        let code = [0x49, 0xBC] + withUnsafeBytes(of: UInt64(200).littleEndian) { Array($0) } // mov r12, 200
            + [0xB8, 39, 0, 0, 0, 0x0F, 0x05, 0x49, 0xFF, 0xCC, 0x75, 0xF4] // getpid; dec r12; jnz
            + [0xEB, 0xFE] // jmp $
        let root = try GuestRunner.rootfs(withProgram: code)
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: KVMSystem(), configuration: ProcessVMConfiguration(rootfs: root.path, pollsSystemCalls: true),
                               executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = try? vm.run()
            finished.signal()
        }
        Thread.sleep(forTimeInterval: 0.1)
        let before = try #require(Self.pollerCPUTime())
        Thread.sleep(forTimeInterval: 0.4)
        let after = try #require(Self.pollerCPUTime())
        vm.kill()
        finished.wait()
        // Spinning all along would cost about 0.4 s of CPU; parked, almost none.
        #expect(after - before < 0.05, "the poller used \(after - before) s of CPU in 0.4 s while its guest made no calls")
    }

    /// User plus system CPU seconds of the engine's poller thread, from /proc.
    private static func pollerCPUTime() -> Double? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return nil }
        for task in tasks {
            guard let name = readKernelFile("/proc/self/task/\(task)/comm"), name.hasPrefix("vmfork-poller"),
                  let stat = readKernelFile("/proc/self/task/\(task)/stat"),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
            return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
        return nil
    }
}
