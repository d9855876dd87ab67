import Disk
import Foundation
import IOEngine
import ProcessVM
import TestSupport
import Testing

/// The judges of the disks containers write.
enum DiskTools {
    static let e2fsck = "/usr/sbin/e2fsck"
    static let debugfs = "/usr/sbin/debugfs"
    static let qemuImg = "/usr/bin/qemu-img"
    static var areInstalled: Bool { [e2fsck, debugfs, qemuImg].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) } }
}

/// A container's own disk: a child VMDK of its image's top layer that takes the guest's
/// writes, creates, removes, renames, mkdir, truncate and chmod through the ext4 writer.
/// e2fsck, qemu-img and debugfs judge the result; a killed writer loses nothing it synced.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable && DiskTools.areInstalled, "needs /dev/kvm, busybox-static, e2fsprogs and qemu-img"))
final class ContainerDiskTests {
    static let e2fsck = DiskTools.e2fsck
    static let debugfs = DiskTools.debugfs
    static let qemuImg = DiskTools.qemuImg

    let engine: IOEngine
    let folder: URL

    init() throws {
        engine = try IOEngine()
        folder = try HostFacts.makeTemporaryFolder("containerdisk")
    }

    deinit { try? FileManager.default.removeItem(at: folder) }

    func path(_ name: String) -> String { folder.appendingPathComponent(name).path }

    /// busybox's rootfs as a layer disk, and a container disk chained on it.
    func chain(capacity: UInt64 = 256 << 20) async throws -> (layer: String, container: String) {
        let rootfs = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: rootfs) }
        for applet in ["mkdir", "mv", "rm", "chmod", "ln", "rmdir", "truncate", "wc", "sync", "head"] {
            try FileManager.default.createSymbolicLink(atPath: rootfs.appendingPathComponent("bin/\(applet)").path, withDestinationPath: "busybox")
        }
        let layer = path("layer.vmdk"), container = path("container.vmdk")
        try await VMDKImage.create(at: layer, capacityBytes: capacity, engine: engine)
        let disk = try await VirtualDisk.open(path: layer, writable: true, engine: engine)
        let builder = try Ext4Builder.create(on: disk)
        try await builder.addTree(folder: rootfs.path)
        try await builder.finish()
        try await VMDKImage.createChild(at: container, parent: layer, engine: engine)
        return (layer, container)
    }

    func run(_ script: String, root: any GuestRootFileSystem) throws -> (status: Int32, stdout: String, stderr: String) {
        let streams = try CapturedStreams()
        var configuration = ProcessVMConfiguration(rootfs: "/nonexistent", memoryBytes: 64 << 20)
        configuration.rootFileSystem = root
        let arguments = ["/bin/sh", "-c", script]
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: configuration, executable: arguments[0], arguments: arguments,
                               environment: ["PATH=/bin"], streams: StandardStreams(input: streams.input, output: streams.output, error: streams.error))
        let status = try vm.run()
        return (status.code, streams.stdout, streams.stderr)
    }

    /// qemu-img check of the VMDK, then its raw image checked by `e2fsck -fn`; the raw image's path.
    func checked(_ vmdk: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let check = try HostFacts.run(Self.qemuImg, ["check", vmdk])
        #expect(check.status == 0, "qemu-img check \(vmdk): \(check.stdout)\(check.stderr)", sourceLocation: sourceLocation)
        let raw = vmdk + ".raw"
        try? FileManager.default.removeItem(atPath: raw)
        let convert = try HostFacts.run(Self.qemuImg, ["convert", "-O", "raw", vmdk, raw])
        #expect(convert.status == 0, "qemu-img convert: \(convert.stderr)", sourceLocation: sourceLocation)
        let fsck = try HostFacts.run(Self.e2fsck, ["-fn", raw])
        #expect(fsck.status == 0, "e2fsck -fn \(vmdk): \(fsck.stdout)\(fsck.stderr)", sourceLocation: sourceLocation)
        return raw
    }

    func debugfs(_ raw: String, _ request: String) throws -> String {
        try HostFacts.run(Self.debugfs, ["-R", request, raw]).stdout
    }

    static let script = """
    echo hello > /new.txt && mkdir -p /d/e && echo x > /d/e/f && mv /d/e/f /d/g && rm /data/hello.txt && \
    chmod 600 /new.txt && echo more >> /new.txt && ln -s /d/g /d/link && rmdir /d/e && \
    mkdir /d/sub && mv /d/sub /d/moved && i=0 && while [ $i -lt 40 ]; do echo file $i > /d/moved/f$i; i=$((i+1)); done && \
    rm /d/moved/f7 && truncate -s 3 /d/moved/f8 && echo replaced > /d/moved/f9 && mv /d/moved/f9 /d/moved/f10 && \
    cat /new.txt /d/link /d/moved/f8 && echo && ls /d && ls /data && wc -l /d/moved/f10 && ls /d/moved | wc -l
    """

    /// Writes, creates, unlinks, renames, mkdir, rmdir, truncate, chmod and a symlink land in
    /// the container's disk: the guest sees them at once, and after a clean end the disk
    /// passes qemu-img check and e2fsck -fn and debugfs reads them back; the image's layer is
    /// untouched, and a second container on the same disk sees the first one's files.
    @Test func aContainersChangesLandInItsChildDisk() async throws {
        let (layer, container) = try await chain()
        let image = try await DiskRootFileSystem.open(path: layer, engine: engine)
        let root = ContainerDiskRoot(base: image, diskPath: container)
        let first = try run(Self.script, root: root)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == "hello\nmore\nx\nfil\ng\nlink\nmoved\nblob.bin\nnumbers.txt\nsub\nwords.txt\n1 /d/moved/f10\n38\n", "\(first.stdout)")
        try root.sync()
        #expect(image.lastError == nil)

        let raw = try checked(container)
        let listing = try debugfs(raw, "ls -l /")
        #expect(try debugfs(raw, "cat /new.txt") == "hello\nmore\n", "\(listing)")
        #expect(try debugfs(raw, "cat /d/g") == "x\n")
        #expect(try debugfs(raw, "cat /d/moved/f8") == "fil")
        #expect(try debugfs(raw, "cat /d/moved/f10") == "replaced\n")
        #expect(try debugfs(raw, "stat /new.txt").contains("Mode:  0600"))
        #expect(try debugfs(raw, "stat /d/link").contains("Fast link dest: \"/d/g\""))
        #expect(try debugfs(raw, "ls -l /data").contains("hello.txt") == false)
        #expect(try debugfs(raw, "ls -l /d/moved").contains("f7") == false)

        // The layer below holds what the image did.
        let layerRaw = try checked(layer)
        #expect(try debugfs(layerRaw, "cat /data/hello.txt").isEmpty == false)
        #expect(try debugfs(layerRaw, "stat /new.txt").contains("Mode:") == false)

        // The next container on this disk reads the changes, and changes it further.
        let again = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let second = try run("cat /new.txt /d/moved/f0 && rm -r /d && echo gone > /new.txt && ls /", root: again)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.hasPrefix("hello\nmore\nfile 0\n"), "\(second.stdout)")
        #expect(!second.stdout.contains("\nd\n"))
        try again.sync()
        let raw2 = try checked(container)
        #expect(try debugfs(raw2, "cat /new.txt") == "gone\n")
        #expect(try debugfs(raw2, "stat /d").contains("Mode:") == false)
    }

    /// A guest cannot write more than its disk holds (its files live in memfds until synced,
    /// so this also bounds the engine memory it can take): ENOSPC, and the disk stays sound.
    @Test func writesPastTheDisksFreeSpaceGetENOSPC() async throws {
        let (_, container) = try await chain(capacity: 32 << 20)
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let result = try run("cat /dev/zero > /big; echo status $?; truncate -s 1G /big; echo status $?; rm /big; echo small > /small; cat /small", root: root)
        #expect(result.stdout == "status 1\nstatus 1\nsmall\n", "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("No space left on device"), "\(result.stderr)")
        #expect(root.growthBudget.left > 0 && root.growthBudget.left < 32 << 20)
        try root.sync()
        let raw = try checked(container)
        #expect(try debugfs(raw, "cat /small") == "small\n")
    }

    /// Changes Linux refuses are refused with its errors, and leave a sound disk: a folder
    /// moved into itself, rmdir of a full folder, names too long, a file as a folder on the
    /// way, a name taken, the root itself.
    @Test func refusedChangesGetLinuxErrorsAndLeaveASoundDisk() async throws {
        let (_, container) = try await chain()
        let root = ContainerDiskRoot(base: try await DiskRootFileSystem.open(path: container, engine: engine), diskPath: container)
        let long = String(repeating: "n", count: 256)
        let script = """
        mkdir -p /a/b; mv /a /a/b/c; echo "1 $?"; rmdir /bin; echo "2 $?"; mkdir /\(long); echo "3 $?"; \
        mv /bin/busybox /etc/hostname/x; echo "4 $?"; ln -s x /bin/busybox; echo "5 $?"; mkdir /; echo "6 $?"; rmdir /; echo "7 $?"; \
        mv / /x; echo "8 $?"; mkdir /a/b/..; echo "9 $?"; ls /a/b; echo "10 $?"
        """
        let result = try run(script, root: root)
        // busybox mkdir / succeeds, as on Linux (it finds the root there).
        #expect(result.stdout == (1...9).map { "\($0) \($0 == 6 ? 0 : 1)\n" }.joined() + "10 0\n", "\(result.stdout)")
        for message in ["Invalid argument", "Directory not empty", "File name too long", "Path has non-directory component", "File exists", "Device or resource busy"] {
            #expect(result.stderr.contains(message), "\(message): \(result.stderr)")
        }
        try root.sync()
        let raw = try checked(container)
        #expect(try debugfs(raw, "ls -p /a").contains("/b/"))
    }

    /// A read-only chain (an image's layer) refuses every change with EROFS, as before.
    @Test func anImagesChainStaysReadOnly() async throws {
        let (layer, _) = try await chain()
        let image = try await DiskRootFileSystem.open(path: layer, engine: engine)
        let result = try run("echo x > /f; mkdir /d; rm /bin/ls; mv /bin/cat /c; sync; echo done", root: image)
        #expect(result.stdout == "done\n")
        #expect(result.stderr.components(separatedBy: "Read-only file system").count - 1 == 4, "\(result.stderr)")
    }

    /// A container killed (SIGKILL to `vmfork run --disk --writable`) while it writes and
    /// syncs in a loop leaves a disk qemu-img check accepts; e2fsck at most replays its
    /// journal, the engine's recovery leaves it clean, the files synced before each loop read
    /// back whole, and the next container on the disk writes again.
    @Test func aKilledContainerLosesNothingItSynced() async throws {
        let (_, container) = try await chain()
        let vmfork = HostFacts.productsFolder.appendingPathComponent("vmfork").path
        let synced = String(repeating: "synced line\n", count: 500)
        var syncedRounds: [Int] = []
        for round in 1...3 {
            let output = path("out\(round).txt")
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: vmfork)
            process.arguments = ["run", "--disk", container, "--writable", "--", "/bin/sh", "-c", """
                i=0; while [ $i -lt 500 ]; do echo synced line; i=$((i+1)); done > /kept\(round).txt && sync && echo synced && \
                n=0; while true; do echo data $n > /loop$((n % 50)); mkdir -p /dirs/$n; rm -rf /dirs/$((n - 3)); sync; n=$((n+1)); done
                """]
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            let errors = path("err\(round).txt")
            _ = FileManager.default.createFile(atPath: errors, contents: nil)
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
            try process.run()
            // On a loaded host the container may take a while to get there.
            let deadline = Date().addingTimeInterval(180)
            func reported() -> Bool { String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: output))) ?? Data(), as: UTF8.self).contains("synced") }
            while !reported(), Date() < deadline, process.isRunning {
                try await Task.sleep(for: .milliseconds(10))
            }
            if reported() {
                syncedRounds.append(round)
            } else {
                Issue.record("round \(round): the container never reported its sync: \(String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: errors))) ?? Data(), as: UTF8.self))")
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 50...600)))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal, "round \(round): the container ended on its own")

            let check = try HostFacts.run(Self.qemuImg, ["check", container])
            #expect(check.status == 0, "round \(round): qemu-img check: \(check.stdout)\(check.stderr)")
            let raw = container + ".raw"
            try? FileManager.default.removeItem(atPath: raw)
            #expect(try HostFacts.run(Self.qemuImg, ["convert", "-O", "raw", container, raw]).status == 0)
            let repair = try HostFacts.run(Self.e2fsck, ["-fy", raw])
            #expect(repair.status == 0 || repair.status == 1, "round \(round): e2fsck -fy: \(repair.stdout)")
            for kept in syncedRounds {
                #expect(try debugfs(raw, "cat /kept\(kept).txt") == synced, "round \(round): /kept\(kept).txt")
            }
            // The engine's own recovery (a writable open replays the journal) leaves a disk
            // e2fsck finds clean without repairs: the kill fell between whole commits.
            _ = try await Ext4Volume.open(disk: try await VirtualDisk.open(path: container, writable: true, engine: engine))
            let recovered = try checked(container)
            for kept in syncedRounds {
                #expect(try debugfs(recovered, "cat /kept\(kept).txt") == synced, "round \(round), after recovery: /kept\(kept).txt")
            }
        }
    }
}
