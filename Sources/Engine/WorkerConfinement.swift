import CShims
import Foundation
import HostSystem

/// What confines an engine worker: its NUMA node, no capabilities, and (once its engine,
/// state and socket are made) the seccomp filter of `WorkerSeccomp`.
public struct WorkerConfinement: Sendable, Codable, Equatable {
    /// The node the worker is bound to (nil: no NUMA support, or VMFORK_WORKER_NUMA=off).
    public var numaNode: Int?
    /// Why the binding failed, when it did (the worker then runs unbound).
    public var numaFailure: String?

    /// The Landlock ABI of the domain the worker runs in (nil: none — the kernel has no
    /// Landlock, VMFORK_WORKER_LANDLOCK=off, or it failed: `landlockFailure`).
    public var landlockABI: Int?
    public var landlockFailure: String?

    public init(numaNode: Int? = nil, numaFailure: String? = nil, landlockABI: Int? = nil, landlockFailure: String? = nil) {
        self.numaNode = numaNode
        self.numaFailure = numaFailure
        self.landlockABI = landlockABI
        self.landlockFailure = landlockFailure
    }

    /// Set in the environment of the worker's second image (after the exec below).
    static let marker = "VMFORK_WORKER_CONFINED"
    static let failureVariable = "VMFORK_WORKER_NUMA_FAILURE"
    public static let numaVariable = "VMFORK_WORKER_NUMA"
    /// "off" runs the worker without its Landlock domain.
    public static let landlockVariable = "VMFORK_WORKER_LANDLOCK"
    static let landlockResultVariable = "VMFORK_WORKER_LANDLOCK_RESULT"

    /// Binds the calling thread to the shard's NUMA node (CPU affinity and memory policy),
    /// gives up every capability (no_new_privs; bounding, ambient, effective, permitted and
    /// inheritable sets emptied) and execs the same command again: these are per-thread
    /// attributes and the runtime has started threads by now, so the exec is what gives every
    /// thread of the worker the binding and none of them a capability (root's exec grants only
    /// what the empty bounding set allows). Returns in the second image, with what was done.
    /// What a worker does — open /dev/kvm, make VMs through it, memfds, its state, socket and
    /// the rootfs folders, all its own user's — needs no capability; what remains is that
    /// user's own access. Throws when the kernel refuses to drop a capability or the exec fails.
    public static func confine(shard: Int, stateFolder: URL) throws -> WorkerConfinement {
        let environment = ProcessInfo.processInfo.environment
        let wantsNUMA = environment[numaVariable] != "off"
        if environment[marker] == "1" {
            guard !holdsCapabilities() else { throw EngineError(.failed, "the worker still holds capabilities after its exec") }
            let node = wantsNUMA ? NUMABinding.node(forShard: shard) : nil
            let landlock = environment[landlockResultVariable] ?? ""
            return WorkerConfinement(numaNode: environment[failureVariable] == nil ? node : nil, numaFailure: environment[failureVariable],
                                     landlockABI: Int(landlock).flatMap { $0 > 0 ? $0 : nil },
                                     landlockFailure: Int(landlock) == nil && !landlock.isEmpty ? landlock : nil)
        }
        if wantsNUMA, let node = NUMABinding.node(forShard: shard) {
            do { try NUMABinding.bindThisThread(to: node) } catch { setenv(failureVariable, "\(error)", 1) }
        }
        if holdsCapabilities() {
            let result = cshims_drop_capabilities_of_this_thread()
            guard result == 0 else { throw EngineError(.failed, "cannot drop the worker's capabilities: \(String(cString: strerror(-result)))") }
        }
        if environment[landlockVariable] != "off" {
            setenv(landlockResultVariable, restrictWrites(shard: shard, stateFolder: stateFolder), 1)
        }
        setenv(marker, "1", 1)
        // unsafe: NUL-terminated copies, alive until exec replaces the process (or it fails, when they leak once).
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", arguments)
        throw EngineError(.failed, "cannot exec the worker again confined: \(String(cString: strerror(errno)))")
    }

    /// The Landlock domain (on this thread, inherited by the exec that follows, so by every
    /// thread of the worker): writes only to its own state folder (STATE/workers/K: its SQLite
    /// state, and SQLite's temporary files, sent there by SQLITE_TMPDIR), to the containers'
    /// output folders (STATE/containers, and the runs' on tmpfs: `ContainerFolders`), its
    /// socket in STATE/workers, and /dev/kvm and
    /// /dev/null; no TCP; no signal out of the domain. Reads stay open (the rootfs folders of
    /// images registered later are not known now). Returns the ABI as text, or why it failed.
    static func restrictWrites(shard: Int, stateFolder: URL) -> String {
        let workers = stateFolder.appendingPathComponent("workers", isDirectory: true)
        let own = workers.appendingPathComponent("\(shard)", isDirectory: true)
        let containers = stateFolder.appendingPathComponent("containers", isDirectory: true)
        let temporary = own.appendingPathComponent("tmp", isDirectory: true)
        for folder in [own, containers, temporary] {
            try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        setenv("SQLITE_TMPDIR", temporary.path, 1)
        var rules: [(String, Int32)] = [(own.path, Int32(CSHIMS_LANDLOCK_ALL_WRITES)), (containers.path, Int32(CSHIMS_LANDLOCK_ALL_WRITES)),
                                        (workers.path, Int32(CSHIMS_LANDLOCK_SOCKETS))]
        if let runs = ContainerFolders.runsFolder(stateFolder: stateFolder).folder,
           (try? FileManager.default.createDirectory(at: runs, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])) != nil {
            rules.append((runs.path, Int32(CSHIMS_LANDLOCK_ALL_WRITES)))
        }
        for device in ["/dev/kvm", "/dev/null"] where FileManager.default.fileExists(atPath: device) {
            rules.append((device, Int32(CSHIMS_LANDLOCK_WRITE_FILE)))
        }
        // unsafe: NUL-terminated copies, freed after the call.
        let paths = rules.map { strdup($0.0) }
        defer { paths.forEach { free($0) } }
        let kinds = rules.map(\.1)
        // unsafe: both arrays have rules.count elements and outlive the call; the strdup'd paths are freed only after it.
        let result = paths.map { UnsafePointer($0) }.withUnsafeBufferPointer { pathBuffer in
            kinds.withUnsafeBufferPointer { kindBuffer in
                cshims_landlock_restrict_writes(pathBuffer.baseAddress, kindBuffer.baseAddress, Int32(rules.count))
            }
        }
        if result > 0 { return "\(result)" }
        if result == 0 { return "the kernel has no Landlock" }
        return "landlock: \(String(cString: strerror(-result)))"
    }

    /// Whether any thread of this process holds a capability (effective, permitted or bounding).
    static func holdsCapabilities() -> Bool {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.contains { task in
            guard let status = try? String(contentsOfFile: "/proc/self/task/\(task)/status", encoding: .utf8) else { return false }
            return status.split(separator: "\n").contains { line in
                (line.hasPrefix("CapEff:") || line.hasPrefix("CapBnd:") || line.hasPrefix("CapPrm:")) && !line.hasSuffix("0000000000000000")
            }
        }
    }
}
