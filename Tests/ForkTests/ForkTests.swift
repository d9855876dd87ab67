import Fork
import Foundation
import HostSystem
import KVM
import ProcessVM
import TestSupport
import Testing

/// Forks of real process VMs from warm parents of Debian's busybox.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
final class ForkTests {
    let system = try! KVMSystem()
    let root: URL

    init() throws {
        root = try BusyboxRootfs.make()
    }

    deinit {
        try? FileManager.default.removeItem(at: root)
    }

    func busyboxParent(_ kind: ForkPoint.Kind = .entry, arguments: [String]? = nil, poolSize: Int = 4) throws -> WarmParent {
        try WarmParent(system: system, image: ParentSpec(name: "busybox", rootfs: root.path, executable: "/bin/busybox",
                                                         arguments: arguments, environment: ["PATH=/bin"], forkPoint: kind),
                       poolSize: poolSize)
    }

    @Test func hundredChildrenEachPrintTheirOwnArguments() throws {
        let parent = try busyboxParent()
        for index in 0..<100 {
            let streams = try CapturedStreams()
            let child = try parent.fork(arguments: ["echo", "child", "\(index)"], streams: streams.standard)
            #expect(try child.run() == .exited(0))
            #expect(streams.stdout == "child \(index)\n")
            child.remove()
        }
    }

    @Test func parentMemoryIsUnchangedByItsChildren() throws {
        let parent = try busyboxParent()
        let before = snapshot(parent.forkPoint.memory)
        for index in 0..<100 {
            let streams = try CapturedStreams()
            // Each child writes: its stack, its heap (sort allocates), its data.
            let child = try parent.fork(arguments: ["sh", "-c", "x=\(index); echo $((x * 2))"], streams: streams.standard)
            #expect(try child.run() == .exited(0))
            #expect(streams.stdout == "\(index * 2)\n")
            child.remove()
        }
        #expect(snapshot(parent.forkPoint.memory) == before)
    }

    @Test func crashingChildLeavesSiblingsRunning() throws {
        let parent = try busyboxParent()
        let sleeperStreams = try CapturedStreams()
        let sleeper = try parent.fork(arguments: ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do i=$((i + 1)); done; echo survived"],
                                      streams: sleeperStreams.standard)
        sleeper.start()
        // A child killed by a fault (SIGSEGV from kill -SEGV $$) while its sibling runs.
        let crashStreams = try CapturedStreams()
        let crasher = try parent.fork(arguments: ["sh", "-c", "kill -SEGV $$"], streams: crashStreams.standard)
        #expect(try crasher.run() == .signaled(11))
        #expect(try crasher.run().code == 139)
        #expect(sleeper.wait() == .exited(0))
        #expect(sleeperStreams.stdout == "survived\n")
        let after = try CapturedStreams()
        let next = try parent.fork(arguments: ["echo", "parent still forks"], streams: after.standard)
        #expect(try next.run() == .exited(0))
        #expect(after.stdout == "parent still forks\n")
    }

    @Test func childrenOfAStdinParentReadTheirOwnInput() throws {
        // The parent runs `sh -c 'read line; echo got $line'` up to its first read of stdin.
        let parent = try busyboxParent(.firstStandardInputRead, arguments: ["/bin/busybox", "sh", "-c", "read line; echo got $line"])
        #expect(parent.forkPoint.kind == .firstStandardInputRead)
        for index in 0..<10 {
            let streams = try CapturedStreams(stdin: Data("input-\(index)\n".utf8))
            let child = try parent.fork(streams: streams.standard)
            #expect(try child.run() == .exited(0))
            #expect(streams.stdout == "got input-\(index)\n")
            child.remove()
        }
    }

    @Test func childrenSeeDistinctRandomBytes() throws {
        // /prog prints its 16 AT_RANDOM bytes.
        let tiny = try HostFacts.makeTemporaryFolder("random")
        try Data(TinyELF.build(code: TinyELF.printAuxiliaryRandom)).write(to: tiny.appendingPathComponent("prog"))
        let parent = try WarmParent(system: system, image: ParentSpec(name: "random", rootfs: tiny.path, executable: "/prog"), poolSize: 4)
        var seen = Set<String>()
        for _ in 0..<1000 {
            let streams = try CapturedStreams()
            let child = try parent.fork(arguments: [], streams: streams.standard)
            #expect(try child.run() == .exited(0))
            #expect(streams.stdoutBytes.count == 16)
            seen.insert(streams.stdoutBytes.map { String(format: "%02x", $0) }.joined())
            child.remove()
        }
        #expect(seen.count == 1000)
    }

    @Test func reusedVMsKeepNothingOfTheirLastChild() throws {
        // /prog with an argument maps a page at a fixed address and writes there and into its
        // data segment; without one it checks both are as the parent left them (exiting 42 if
        // the data write survived, or by SIGSEGV when the mapping is gone, as it must be).
        let readersInReusedVMs = try afterWriters(running: TinyELF.mapOrProbe, name: "reuse", writerArguments: ["map"]) { reader in
            let status = try reader.run()
            #expect(status == .signaled(11), "\(status), in a reused VM: \(reader.reusesVM)")
            #expect(reader.processVM?.fault?.address == TinyELF.probeAddress)
        }
        // The pool hands out the VM its last child left (a refill racing with it may add a new one).
        #expect(readersInReusedVMs >= 8, "\(readersInReusedVMs) of 10 readers ran in reused VMs")
    }

    /// Ten rounds, each forking a writer (`/prog` of `code` with `writerArguments`, which must
    /// exit 0) and, once it is removed, a reader without arguments, most likely in the VM the
    /// writer left, which `read` runs and judges. Returns how many readers ran in reused VMs.
    private func afterWriters(running code: [UInt8], name: String, writerArguments: [String],
                              read: (Fork.Container) throws -> Void) throws -> Int {
        let tiny = try HostFacts.makeTemporaryFolder(name)
        defer { try? FileManager.default.removeItem(at: tiny) }
        try Data(TinyELF.build(code: code)).write(to: tiny.appendingPathComponent("prog"))
        let parent = try WarmParent(system: system, image: ParentSpec(name: name, rootfs: tiny.path, executable: "/prog"), poolSize: 2)
        let streams = try CapturedStreams()
        var readersInReusedVMs = 0
        for _ in 0..<10 {
            parent.waitUntilPoolIsFull()
            let writer = try parent.fork(arguments: writerArguments, streams: streams.standard)
            #expect(try writer.run() == .exited(0))
            writer.remove()
            parent.waitUntilPoolIsFull()
            let reader = try parent.fork(arguments: [], streams: streams.standard)
            if reader.reusesVM { readersInReusedVMs += 1 }
            try read(reader)
            reader.remove()
        }
        return readersInReusedVMs
    }

    /// The registers a child can change without the engine — vector registers, MXCSR, the FS
    /// base (wrfsbase is user mode's) — come back as the parent left them in a VM its last
    /// child ran in: the next tenant sees nothing of the last one's.
    @Test func reusedVMsKeepNoneOfTheirLastChildsRegisters() throws {
        let checkersInReusedVMs = try afterWriters(running: Self.dirtyOrCheckRegisters, name: "reuse-registers", writerArguments: ["dirty"]) { checker in
            // 41: xmm0 kept the last child's ones; 42: its FS base; 43: its MXCSR.
            let status = try checker.run()
            #expect(status == .exited(0), "\(status), in a reused VM: \(checker.reusesVM)")
        }
        #expect(checkersInReusedVMs >= 8, "\(checkersInReusedVMs) of 10 checkers ran in reused VMs")
    }

    /// With an argument: xmm0 all ones, FS base 0x12345000, MXCSR rounding toward zero; exit 0.
    /// Without: exit 0 if all three are as at the entry point (0, 0, 0x1F80), else 41/42/43.
    private static let dirtyOrCheckRegisters: [UInt8] = {
        let writer: [UInt8] = [0x66, 0x0F, 0x76, 0xC0] // pcmpeqd xmm0, xmm0
            + TinyELF.load(.rax, 0x1234_5000) + [0xF3, 0x48, 0x0F, 0xAE, 0xD0] // wrfsbase rax
            + [0x68, 0x80, 0x7F, 0x00, 0x00] + [0x0F, 0xAE, 0x14, 0x24] // push 0x7F80; ldmxcsr [rsp]
            + TinyELF.exit(0)
        let bad = [TinyELF.exit(41), TinyELF.exit(42), TinyELF.exit(43)]
        let tail: [UInt8] = [0x48, 0x83, 0xEC, 0x08, 0x0F, 0xAE, 0x1C, 0x24] // sub rsp, 8; stmxcsr [rsp]
            + [0x8B, 0x04, 0x24, 0x3D, 0x80, 0x1F, 0x00, 0x00] // mov eax, [rsp]; cmp eax, 0x1F80
            + [0x75, UInt8(TinyELF.exit(0).count + bad[0].count + bad[1].count)] // jne bad3
            + TinyELF.exit(0)
        let fsCheck: [UInt8] = [0xF3, 0x48, 0x0F, 0xAE, 0xC0, 0x48, 0x85, 0xC0] // rdfsbase rax; test rax, rax
            + [0x75, UInt8(tail.count + bad[0].count)] // jnz bad2
        let check: [UInt8] = [0x66, 0x0F, 0x38, 0x17, 0xC0] // ptest xmm0, xmm0
            + [0x75, UInt8(fsCheck.count + tail.count)] // jnz bad1
            + fsCheck + tail + bad[0] + bad[1] + bad[2]
        return [0x48, 0x8B, 0x04, 0x24, 0x48, 0x83, 0xF8, 0x01] // mov rax, [rsp] (argc); cmp rax, 1
            + [0x74, UInt8(writer.count)] // je check
            + writer + check
    }()

    @Test func stopRunsTheProgramsTermHandler() throws {
        let parent = try busyboxParent()
        let streams = try CapturedStreams()
        let child = try parent.fork(arguments: ["sh", "-c", "trap 'echo caught TERM; exit 7' TERM; echo ready; while true; do :; done"],
                                    streams: streams.standard)
        child.start()
        waitFor { streams.stdout.contains("ready") }
        #expect(child.stop(grace: .seconds(5)) == .exited(7))
        #expect(streams.stdout == "ready\ncaught TERM\n")
    }

    @Test func stopWithoutHandlerEndsWith143AndKillWith137() throws {
        let parent = try busyboxParent()
        let streams = try CapturedStreams()
        let quiet = try parent.fork(arguments: ["sleep", "10"], streams: streams.standard)
        quiet.start()
        #expect(quiet.stop(grace: .seconds(5)).code == 143)
        let busy = try parent.fork(arguments: ["sh", "-c", "while true; do :; done"], streams: streams.standard)
        busy.start()
        #expect(busy.kill().code == 137)
    }

    @Test func removedChildrenGiveTheirMemoryBack() throws {
        let parent = try busyboxParent(poolSize: 0)
        parent.waitForTeardown()
        var children: [Container] = []
        let streams = try CapturedStreams()
        for _ in 0..<20 {
            let child = try parent.fork(arguments: ["sleep", "5"], streams: streams.standard)
            child.start()
            children.append(child)
        }
        Thread.sleep(forTimeInterval: 0.5)
        let machines = children.compactMap { $0.processVM.map(WeakBox.init) }
        let pageMap = try PageMap()
        let owned = try children.compactMap { try $0.processVM?.memory.usage(in: pageMap).privateBytes }
        // Each running child owns private pages (its stack, data, heap), found by the kernel.
        #expect(owned.count == 20 && owned.allSatisfy { $0 > 0 }, "\(owned)")
        for child in children { child.remove() }
        children.removeAll()
        parent.waitForTeardown()
        // Every VM was torn down: its guest mapping unmapped (the pages it owned freed) and its
        // KVM descriptors closed, which their owners do exactly once when released. The
        // system-call poller lets go of a VM on its next turn after the VM leaves it.
        waitFor { machines.allSatisfy { $0.value == nil } }
        #expect(machines.allSatisfy { $0.value == nil })
    }

    /// The sharing report reads each child's page map, and the page map counts as smaps does.
    /// smaps sums per mapping, and the kernel merges neighbouring anonymous mappings (a
    /// child's anonymous upper memory with the next child's first page), so the check against
    /// smaps is per mapping: every mapping that holds some child's guest memory (read while the
    /// children sleep and no pool VM is made).
    @Test func theSharingReportCountsEachChildAsSmapsDoes() throws {
        let parent = try busyboxParent(poolSize: 0)
        parent.waitForTeardown()
        let streams = try CapturedStreams()
        var children: [Container] = []
        for _ in 0..<8 {
            let child = try parent.fork(arguments: ["sleep", "30"], streams: streams.standard)
            child.start()
            children.append(child)
        }
        defer { for child in children { child.remove() } }
        Thread.sleep(forTimeInterval: 0.5)
        let regions = try children.map { child -> (start: UInt, length: Int) in
            let vm = try #require(child.processVM)
            return (vm.memory.hostAddress, vm.memory.size)
        }
        func mappings(_ smaps: SmapsAccounting) -> [SmapsAccounting.Entry] {
            var seen = Set<UInt>()
            return regions.flatMap { smaps.mappings(overlapping: $0.start, length: $0.length) }.filter { seen.insert($0.range.lowerBound).inserted }
        }
        // A child still settling moves its figures between the reads: read again until smaps
        // says the same before and after the page map's reads.
        let pageMap = try PageMap()
        var smaps = SmapsAccounting.current()
        var ours = try mappings(smaps).map { try pageMap.usage(of: $0.range.lowerBound, length: $0.range.count) }
        var report = try SharingReport.measure(parent: parent, containers: children, pageMap: pageMap)
        for _ in 0..<5 {
            let after = SmapsAccounting.current()
            if mappings(smaps).map(\.usage) == mappings(after).map(\.usage) && mappings(smaps).map(\.range) == mappings(after).map(\.range) { break }
            Thread.sleep(forTimeInterval: 0.2)
            smaps = SmapsAccounting.current()
            ours = try mappings(smaps).map { try pageMap.usage(of: $0.range.lowerBound, length: $0.range.count) }
            report = try SharingReport.measure(parent: parent, containers: children, pageMap: pageMap)
        }
        let checked = mappings(smaps)
        #expect(checked.count >= 8, "\(checked.count) mappings")
        for (entry, measured) in zip(checked, ours) {
            #expect(measured == entry.usage, "mapping \(String(entry.range.lowerBound, radix: 16))-\(String(entry.range.upperBound, radix: 16))")
        }
        // Each child's figures are the page map's over its own guest memory, and it owns
        // pages and shares others with the parent.
        #expect(report.children.count == 8)
        for ((child, region), measured) in zip(zip(children, regions), report.children) {
            #expect(measured.name == child.name)
            #expect(measured.usage == (try pageMap.usage(of: region.start, length: region.length)), "\(child.name)")
            #expect(measured.usage.privateBytes > 0 && measured.usage.shared > 0, "\(child.name): \(measured.usage)")
        }
    }

    private func snapshot(_ memory: GuestMemory) -> [UInt8] {
        memory.bytes(physical: 0, count: memory.size) ?? []
    }

    private func waitFor(_ condition: () -> Bool) {
        for _ in 0..<200 where !condition() { Thread.sleep(forTimeInterval: 0.01) }
    }
}

/// Holds an object without keeping it alive, to observe that it was released.
struct WeakBox {
    weak var value: ProcessVM?
    init(_ value: ProcessVM) { self.value = value }
}
