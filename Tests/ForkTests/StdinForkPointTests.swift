import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing

/// A parent stops at its first read of standard input whatever its standard input is. With a
/// regular file there, the system-call poller could serve that read itself (it serves reads
/// of regular files) and the parent ran past its fork point.
@Suite(.enabled(if: HostFacts.hasKVM && HostileGuest.isAvailable, "needs /dev/kvm and gcc"))
final class StdinForkPointTests {
    let system = try! KVMSystem()

    @Test func aParentReadingARegularFileStopsAtItsFirstRead() throws {
        // Makes a few system calls first, so that the poller is watching when the read comes.
        let root = try HostileGuest.rootfs(#"""
            int main(void) {
                for (int i = 0; i < 20; i++) sys(SYS_sched_yield, 0);
                char line[16];
                i64 length = sys(SYS_read, 0, line, sizeof line);
                if (length <= 0) return 11;
                print("got ");
                sys(SYS_write, 1, line, length);
                return 0;
            }
            """#, name: "stdinfile")
        defer { try? FileManager.default.removeItem(at: root) }
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 16 << 20)
        var missed = 0
        for _ in 0..<20 {
            let streams = try CapturedStreams(stdin: Data("the parent's\n".utf8))
            let point = try withExtendedLifetime(streams) {
                try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: "/prog", arguments: ["/prog"],
                                            environment: [], kind: .firstStandardInputRead, streams: streams.standard)
            }
            guard let point else {
                missed += 1
                continue
            }
            let child = try CapturedStreams(stdin: Data("the child's\n".utf8))
            let vm = try ProcessVM(forking: point, into: try PreparedVM(system: system, forkPoint: point, readAhead: true),
                                   identity: GuestIdentity(pid: 2, parentPid: 1), arguments: nil, environment: nil,
                                   streams: child.standard)
            #expect(try vm.run() == .exited(0))
            #expect(child.stdout == "got the child's\n")
        }
        #expect(missed == 0, "\(missed) of 20 parents read past their fork point")
    }
}
