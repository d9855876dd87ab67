import Fork
import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing

/// VMs the pool made but never used take their children's first writes ahead, once the fork
/// point has learned them from a child that came back (`ChildWriteProfile`): a burst that
/// reaches deep into the pool finds VMs whose children make as few exits as a reused VM's.
@Suite(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
final class WriteWarmUpTests {
    let system = try! KVMSystem()

    /// A `busybox echo` child in a never-used VM made 17 exits against 2 in a reused one
    /// (KVM's own count, 2026-12-07): its first writes to `.data`, `.bss`, the stack and the
    /// mailbox each faulted. After one child came back, children in the other never-used
    /// VMs — all held at once, so that each has a VM of its own — make at most half the
    /// exits of the first, and print what they were asked to.
    @Test func neverUsedVMsTakeTheirChildrensWritesAhead() throws {
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let parent = try WarmParent(system: system, image: ParentSpec(name: "busybox", rootfs: root.path, executable: "/bin/busybox",
                                                                     memoryBytes: 32 << 20, forkPoint: .main), poolSize: 6)
        parent.waitUntilPoolIsFull()
        let firstStreams = try CapturedStreams()
        let first = try parent.fork(arguments: ["echo", "first"], streams: firstStreams.standard)
        #expect(try first.run() == .exited(0))
        #expect(firstStreams.stdout == "first\n")
        let firstExits = try #require(first.processVM?.lastRunCounters?.exits)
        #expect(!first.reusesVM, "the first child's VM was never used before")
        first.remove()
        parent.waitUntilPoolIsFull()

        var children: [(child: Container, streams: CapturedStreams)] = []
        for index in 0..<5 {
            let streams = try CapturedStreams()
            children.append((try parent.fork(arguments: ["echo", "child", "\(index)"], streams: streams.standard), streams))
        }
        var neverUsed: [UInt64] = []
        for (index, (child, streams)) in children.enumerated() {
            #expect(try child.run() == .exited(0))
            #expect(streams.stdout == "child \(index)\n")
            if !child.reusesVM, let exits = child.processVM?.lastRunCounters?.exits { neverUsed.append(exits) }
        }
        for (child, _) in children { child.remove() }
        #expect(neverUsed.count >= 3, "most of the five children ran in VMs never used before")
        let median = neverUsed.sorted()[neverUsed.count / 2]
        #expect(median > 0, "KVM counted no exit at all")
        #expect(median * 2 <= firstExits, "exits: the first child \(firstExits); children of warmed never-used VMs \(neverUsed.sorted())")
    }
}
