import ArgumentParser
import Foundation
import HostSystem
import KVM
import ProcessVM
import Synchronization
import Disk
import IOEngine

/// Opens a disk rootfs from the synchronous command: the open runs as a task on the disk's
/// I/O engine while this thread waits.
enum DiskRootOpener {
    static func open(_ path: String) throws -> DiskRootFileSystem {
        let engine: IOEngine
        do { engine = try IOEngine() } catch { throw ValidationError("--disk \(path): \(error)") }
        let outcome = Mutex<Result<DiskRootFileSystem, Ext4Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task(executorPreference: engine.executor) {
            let result: Result<DiskRootFileSystem, Ext4Error>
            do throws(Ext4Error) { result = .success(try await DiskRootFileSystem.open(path: path, engine: engine)) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        switch outcome.withLock({ $0 })! {
        case .success(let root): return root
        case .failure(let error): throw ValidationError("--disk \(path): \(error)")
        }
    }
}

/// `vmfork run --rootfs DIR -- PROGRAM ARGS...`: one container in a fresh process VM, its
/// standard streams connected to this terminal, its exit status passed on.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a static Linux program in its own process VM, with the engine as its kernel."
    )

    @Option(help: "The container's root filesystem (a host folder; the program cannot leave it).")
    var rootfs: String?

    @Option(help: "Serve the root filesystem from the ext4 in this VMDK chain (an image's top layer or a container disk) instead of a folder.")
    var disk: String?

    @Flag(help: "With --disk: the disk is this container's own (a child of an image's top layer); its writes, creates, removes and renames land in it, synced at fsync/sync and at the end.")
    var writable = false

    @Option(help: "Guest memory in MiB: the VM's memory limit.")
    var memory = 256

    @Option(name: .customLong("env"), help: "An environment variable NAME=VALUE (repeatable).")
    var environment: [String] = []

    @Option(help: "The hostname the program sees.")
    var hostname = "vmfork"

    @Flag(inversion: .prefixedNo, help: "Serve system calls that cannot block from the engine's polling thread, without a VM exit (it spins while the program makes calls); with --no-poll-syscalls every call is a VM exit.")
    var pollSyscalls = true

    @Flag(inversion: .prefixedNo, help: "Rewrite the program's `mov eax, N; syscall` pairs as it is loaded, so that those calls skip PVM's SYSCALL switch (one exit fewer each; none when polled).")
    var rewriteSyscalls = true

    @Flag(inversion: .prefixedNo, help: "Let the program buffer its writes to a standard output or error that is a file, with no VM exit; they go out before its next call, at its end, and within ~100 ms while it computes.")
    var bufferOutput = true

    @Flag(help: "Print the system calls the program asked for that the engine does not serve.")
    var reportMissing = false

    @Argument(parsing: .captureForPassthrough, help: "The program (a path inside the rootfs) and its arguments.")
    var command: [String]

    func validate() throws {
        // The command's arguments are taken as they come, so a lone --help lands there.
        if command == ["--help"] || command == ["-h"] { throw CleanExit.helpRequest(self) }
        guard (rootfs == nil) != (disk == nil) else { throw ValidationError("give either --rootfs DIR or --disk DISK.vmdk") }
        if writable, disk == nil { throw ValidationError("--writable needs --disk") }
        var isFolder: ObjCBool = false
        if let rootfs {
            guard FileManager.default.fileExists(atPath: rootfs, isDirectory: &isFolder), isFolder.boolValue else {
                throw ValidationError("--rootfs \(rootfs) is not a folder")
            }
        }
        guard !program.isEmpty else { throw ValidationError("no program given: vmfork run --rootfs DIR -- PROGRAM [ARGS...]") }
        guard memory >= 4, memory <= 65536 else { throw ValidationError("--memory \(memory) MiB is out of range (4...65536)") }
    }

    private var program: [String] { command.first == "--" ? Array(command.dropFirst()) : command }

    func run() throws {
        let system = try KVMSystem()
        var identity = GuestIdentity()
        identity.hostname = hostname
        var configuration = ProcessVMConfiguration(rootfs: rootfs ?? "/nonexistent", memoryBytes: memory << 20, identity: identity,
                                                   pollsSystemCalls: pollSyscalls)
        configuration.rewritesSystemCalls = rewriteSyscalls
        configuration.buffersOutput = bufferOutput
        var containerRoot: ContainerDiskRoot?
        if let disk {
            let base = try DiskRootOpener.open(disk)
            if writable { containerRoot = ContainerDiskRoot(base: base, diskPath: disk) }
            configuration.rootFileSystem = containerRoot ?? base
        }
        let vm = try ProcessVM(system: system, configuration: configuration, executable: program[0], arguments: program,
                               environment: environment)
        let status = try vm.run()
        do { try containerRoot?.sync() } catch { throw ValidationError("--disk \(disk ?? ""): writing the container's changes: \(error)") }
        if reportMissing || !vm.missingSyscalls.isEmpty {
            let missing = vm.missingSyscalls.sorted { $0.key < $1.key }.map { "\($0.key < 0 ? "others" : "\($0.key)") (×\($0.value))" }
            if !missing.isEmpty {
                EngineDiagnostics.write("vmfork: system calls not served (ENOSYS): \(missing.joined(separator: ", "))\n")
            }
        }
        throw ExitCode(status.code)
    }
}
