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
        try WarmParent(system: system, image: ImageSpec(name: "busybox", rootfs: root.path, executable: "/bin/busybox",
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
        let sleeper = try parent.fork(arguments: ["sh", "-c", "sleep 0.3; echo survived"], streams: sleeperStreams.standard)
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
        let parent = try WarmParent(system: system, image: ImageSpec(name: "random", rootfs: tiny.path, executable: "/prog"), poolSize: 4)
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

    @Test func stopRunsTheProgramsTermHandler() throws {
        let parent = try busyboxParent()
        let streams = try CapturedStreams()
        let child = try parent.fork(arguments: ["sh", "-c", "trap 'echo caught TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done"],
                                    streams: streams.standard)
        child.start()
        waitFor { streams.stdout.contains("ready") }
        #expect(child.stop(grace: .seconds(5)) == .exited(7))
        #expect(streams.stdout == "ready\ncaught TERM\n")
    }

    @Test func stopWithoutHandlerEndsWith143AndKillWith137() throws {
        let parent = try busyboxParent()
        let quiet = try parent.fork(arguments: ["sleep", "10"], streams: try CapturedStreams().standard)
        quiet.start()
        #expect(quiet.stop(grace: .seconds(5)).code == 143)
        let busy = try parent.fork(arguments: ["sh", "-c", "while true; do :; done"], streams: try CapturedStreams().standard)
        busy.start()
        #expect(busy.kill().code == 137)
    }

    @Test func removedChildrenGiveTheirMemoryBack() throws {
        let parent = try busyboxParent(poolSize: 0)
        Container.waitForTeardown()
        let memoryBefore = residentMemory()
        let descriptorsBefore = openDescriptors()
        var children: [Container] = []
        for _ in 0..<20 {
            let child = try parent.fork(arguments: ["sh", "-c", "echo started; sleep 5"], streams: try CapturedStreams().standard)
            child.start()
            children.append(child)
        }
        Thread.sleep(forTimeInterval: 0.5)
        let usages = MemoryMappings.current()
        let owned = children.compactMap { $0.processVM.flatMap { usages[$0.memory.hostAddress]?.privateBytes } }
        #expect(owned.count == 20 && owned.allSatisfy { $0 > 0 })
        let memoryDuring = residentMemory()
        for child in children { child.remove() }
        children.removeAll()
        Container.waitForTeardown()
        // Every page a child owned and every descriptor of its VM is gone again.
        #expect(memoryDuring - memoryBefore >= owned.reduce(0, +) / 2)
        #expect(residentMemory() < memoryBefore + (memoryDuring - memoryBefore) / 4)
        #expect(openDescriptors() <= descriptorsBefore)
    }

    private func snapshot(_ memory: GuestMemory) -> [UInt8] {
        memory.bytes(physical: 0, count: memory.size) ?? []
    }

    private func residentMemory() -> Int {
        let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("RssAnon:") } ?? ""
        return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0) * 1024
    }

    private func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }

    private func waitFor(_ condition: () -> Bool) {
        for _ in 0..<200 where !condition() { Thread.sleep(forTimeInterval: 0.01) }
    }
}
