import Disk
import Fork
import Foundation
import IOEngine
import KVM
import ProcessVM
import TestSupport
import Testing

/// A container's root filesystem served from an image's disk chain: the rootfs folder is
/// written as an ext4 layer VMDK, the container's writable disk is a child of it, and the
/// guest's files come from that chain (`DiskRootFileSystem`) instead of the folder. Every
/// program's output must equal the run from the host folder.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
final class DiskRootfsTests {
    let engine: IOEngine
    let folder: URL

    init() throws {
        engine = try IOEngine()
        folder = try HostFacts.makeTemporaryFolder("diskroot")
    }

    deinit { try? FileManager.default.removeItem(at: folder) }

    /// The image layer from `rootfs`, and a container disk chained on it; returns the container disk's path.
    func chain(from rootfs: URL) async throws -> String {
        let layer = folder.appendingPathComponent("layer.vmdk").path
        let container = folder.appendingPathComponent("container.vmdk").path
        try await VMDKImage.create(at: layer, capacityBytes: 512 << 20, engine: engine)
        let disk = try await VirtualDisk.open(path: layer, writable: true, engine: engine)
        let builder = try Ext4Builder.create(on: disk)
        try await builder.addTree(folder: rootfs.path)
        try await builder.finish()
        try await VMDKImage.createChild(at: container, parent: layer, engine: engine)
        return container
    }

    func run(_ arguments: [String], rootfs: URL, disk: DiskRootFileSystem?, environment: [String] = [], polled: Bool = false) throws -> (status: Int32, stdout: String, stderr: String) {
        let streams = try CapturedStreams()
        var configuration = ProcessVMConfiguration(rootfs: rootfs.path, memoryBytes: 128 << 20, pollsSystemCalls: polled)
        configuration.rootFileSystem = disk
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: configuration, executable: arguments[0], arguments: arguments,
                               environment: environment, streams: StandardStreams(input: streams.input, output: streams.output, error: streams.error))
        let status = try vm.run()
        return (status.code, streams.stdout, streams.stderr)
    }

    static let busyboxRuns: [[String]] = [
        ["/bin/busybox", "echo", "from the disk"],
        ["/bin/cat", "/data/hello.txt"],
        ["/bin/ls", "-la", "/data", "/bin"],
        ["/bin/busybox", "sha256sum", "/data/blob.bin"],
        ["/bin/busybox", "readlink", "/bin/sh"],
        ["/bin/busybox", "stat", "-c", "%s %a %F %h %i-is-an-inode", "/data/blob.bin", "/data", "/bin/cat"],
        ["/bin/busybox", "find", "/"],
        ["/bin/busybox", "wc", "-l", "/data/numbers.txt"],
        ["/bin/cat", "/data/missing"],
        ["/bin/sh", "-c", "cd /data/sub && cat nested.txt ../hello.txt && pwd && cd .. && pwd && cd ../../.. && pwd"],
        ["/bin/busybox", "head", "-c", "20", "/bin/../data/./sub/../hello.txt"],
        // Hostile links: they stay inside the root, as RESOLVE_IN_ROOT keeps the folder's.
        ["/bin/cat", "/data/escape", "/data/absolute", "/data/up/up/up/etc/hostname"],
        ["/bin/cat", "/data/loop1"],
        ["/bin/ls", "/data/up/..", "/data/up/../../../.."],
        ["/bin/busybox", "readlink", "-f", "/data/escape"],
    ]

    /// Links that try to leave the root, and a loop.
    static func addHostileLinks(_ rootfs: URL) throws {
        let manager = FileManager.default
        let data = rootfs.appendingPathComponent("data").path
        try manager.createSymbolicLink(atPath: data + "/escape", withDestinationPath: "../../../../../../etc/hostname")
        try manager.createSymbolicLink(atPath: data + "/absolute", withDestinationPath: "/../../etc/hostname")
        try manager.createSymbolicLink(atPath: data + "/up", withDestinationPath: "..")
        try manager.createSymbolicLink(atPath: data + "/loop1", withDestinationPath: "loop2")
        try manager.createSymbolicLink(atPath: data + "/loop2", withDestinationPath: "loop1")
    }

    @Test func busyboxRunsFromTheDiskChainAsFromTheFolder() async throws {
        let rootfs = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: rootfs) }
        try Self.addHostileLinks(rootfs)
        let disk = try await DiskRootFileSystem.open(path: try await chain(from: rootfs), engine: engine)
        for polled in [false, true] {
            for arguments in Self.busyboxRuns {
                let fromFolder = try run(arguments, rootfs: rootfs, disk: nil, polled: polled)
                let fromDisk = try run(arguments, rootfs: rootfs, disk: disk, polled: polled)
                // Inode numbers differ between the host's file system and the image's (stat prints
                // them), and so does the order of a listing (the host's folders are hashed): find's is sorted.
                var (folderOut, diskOut) = arguments.contains("%s %a %F %h %i-is-an-inode")
                    ? (Self.withoutInodes(fromFolder.stdout), Self.withoutInodes(fromDisk.stdout)) : (fromFolder.stdout, fromDisk.stdout)
                if arguments.contains("find") { (folderOut, diskOut) = (Self.sortedLines(folderOut), Self.sortedLines(diskOut)) }
                #expect(fromDisk.status == fromFolder.status, "\(arguments): \(fromDisk.stderr)")
                #expect(diskOut == folderOut, "\(arguments)")
                #expect(fromDisk.stderr == fromFolder.stderr, "\(arguments)")
            }
        }
        #expect(disk.lastError == nil)
    }

    static func sortedLines(_ text: String) -> String { text.split(separator: "\n").sorted().joined(separator: "\n") }

    static func withoutInodes(_ text: String) -> String {
        text.split(separator: "\n").map { line in line.split(separator: " ").filter { !$0.hasSuffix("-is-an-inode") }.joined(separator: " ") }.joined(separator: "\n")
    }

    /// A warm parent loads busybox from the disk once; its children, forked at main, read
    /// their files from the same chain.
    @Test func childrenOfAWarmParentOnTheDiskReadFromIt() async throws {
        let rootfs = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: rootfs) }
        let disk = try await DiskRootFileSystem.open(path: try await chain(from: rootfs), engine: engine)
        var spec = ParentSpec(name: "busybox-disk", rootfs: "/nonexistent", executable: "/bin/busybox", memoryBytes: 64 << 20, forkPoint: .main)
        spec.rootFileSystem = disk
        let parent = try WarmParent(system: GuestRunner.system!, image: spec, poolSize: 2)
        for (index, file) in ["/data/hello.txt", "/etc/hostname", "/data/sub/nested.txt"].enumerated() {
            let streams = try CapturedStreams()
            let child = try parent.fork(arguments: ["cat", file], environment: [], streams: streams.standard)
            #expect(try child.run() == .exited(0), "child \(index): \(streams.stderr)")
            #expect(streams.stdout == (try String(contentsOf: rootfs.appendingPathComponent(file), encoding: .utf8)))
            child.remove()
        }
    }

    /// ld.so, the libraries it maps and the programs come from the disk.
    @Test func dynamicProgramsRunFromTheDiskChain() async throws {
        guard DynamicRootfs.isAvailable else { return }
        let rootfs = try DynamicRootfs.make(programs: ["/usr/bin/ls", "/usr/bin/sha256sum", "/usr/bin/cat"], name: "dyn-disk")
        defer { try? FileManager.default.removeItem(at: rootfs) }
        try "pear\napple\n".write(to: rootfs.appendingPathComponent("words.txt"), atomically: true, encoding: .utf8)
        let disk = try await DiskRootFileSystem.open(path: try await chain(from: rootfs), engine: engine)
        for arguments in [["/usr/bin/sha256sum", "/words.txt", "/usr/bin/ls"], ["/usr/bin/ls", "-l", "/usr/bin"], ["/usr/bin/cat", "/words.txt"]] {
            let fromFolder = try run(arguments, rootfs: rootfs, disk: nil, environment: ["LC_ALL=C", "TZ=UTC"])
            let fromDisk = try run(arguments, rootfs: rootfs, disk: disk, environment: ["LC_ALL=C", "TZ=UTC"])
            #expect(fromDisk.status == fromFolder.status && fromDisk.status == 0, "\(arguments): \(fromDisk.stderr)")
            #expect(fromDisk.stdout == fromFolder.stdout, "\(arguments)")
        }
    }

    /// python3 with its standard library, imported from the disk.
    @Test(.enabled(if: DynamicRootfs.python != nil, "needs python3"))
    func pythonRunsFromTheDiskChain() async throws {
        let python = DynamicRootfs.python!
        let rootfs = try DynamicRootfs.make(programs: [python], folders: ["/usr/lib/" + URL(fileURLWithPath: python).lastPathComponent], name: "python-disk")
        defer { try? FileManager.default.removeItem(at: rootfs) }
        let disk = try await DiskRootFileSystem.open(path: try await chain(from: rootfs), engine: engine)
        let script = """
        import sys, os, json, hashlib, re, collections
        print(json.dumps({"argv": sys.argv[1:], "counts": sorted(collections.Counter("abracadabra").items())}))
        print(hashlib.sha256(b"vmfork").hexdigest(), re.sub(r"(\\w+)@(\\w+)", r"\\2 at \\1", "user@example"))
        print(sorted(os.listdir("/usr/lib"))[:3], os.path.exists("/usr/lib/nothing"), os.stat(sys.executable).st_size > 0)
        """
        let arguments = [python, "-S", "-c", script, "one", "two words"]
        let environment = ["LC_ALL=C", "PYTHONHASHSEED=0"]
        let fromFolder = try run(arguments, rootfs: rootfs, disk: nil, environment: environment)
        let fromDisk = try run(arguments, rootfs: rootfs, disk: disk, environment: environment)
        #expect(fromDisk.status == 0 && fromFolder.status == 0, "\(fromDisk.stderr)")
        #expect(fromDisk.stdout == fromFolder.stdout)
        #expect(disk.lastError == nil)
    }

    /// A disk that holds no ext4, or a corrupt one, is refused by name when the rootfs is opened.
    @Test func aDiskWithoutExt4IsRefusedByName() async throws {
        let path = folder.appendingPathComponent("blank.vmdk").path
        try await VMDKImage.create(at: path, capacityBytes: 64 << 20, engine: engine)
        await #expect(throws: Ext4Error.self) { _ = try await DiskRootFileSystem.open(path: path, engine: self.engine) }
        do {
            _ = try await DiskRootFileSystem.open(path: path, engine: engine)
        } catch {
            #expect("\(error)".contains("s_magic"), "\(error)")
        }
    }
}
