import CShims
import Foundation
import Logging
import Synchronization

/// How the daemon runs its engine workers.
public struct WorkerSettings: Sendable {
    /// Worker processes (shards); each holds the warm parents placed on it and their children.
    public var count: Int
    /// The vmfork binary the workers run (`vmfork worker --state STATE --shard N`).
    public var executable: String
    public var logLevel: String
    /// Reads the daemon's connections to its workers; nil: a thread per connection
    /// (`WorkerFrameReader`).
    public var reader: (any WorkerFrameReader)?
    /// Passed on to the workers (`EngineOptions.rewritesSystemCalls`).
    public var rewritesSystemCalls = true
    /// Passed on to the workers (`EngineOptions.buffersOutput`).
    public var buffersOutput = true

    public init(count: Int, executable: String? = nil, logLevel: String = "info", reader: (any WorkerFrameReader)? = nil) {
        self.count = count
        self.executable = executable ?? WorkerSettings.ownExecutable()
        self.logLevel = logLevel
        self.reader = reader
    }

    /// This process's own binary (/proc/self/exe).
    public static func ownExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    public static let range = 0...64
}

/// Reads the frames of a daemon's connection to a worker (`WorkerWire`: a 4-byte
/// little-endian length, then the JSON). Without one a thread per connection reads, and each
/// reply wakes that thread, which then wakes the event loop its caller waits on; the API's
/// reader reads on that event loop, which a reply then wakes directly.
public protocol WorkerFrameReader: Sendable {
    /// Reads from `fd`, which it owns (and closes at the end, or when it throws); `frame` gets
    /// each frame in order, `ended` with why the stream ended. Throws when reading cannot begin.
    func read(from fd: Int32, shard: Int, frame: @escaping @Sendable (Data) -> Void, ended: @escaping @Sendable (String) -> Void) async throws
}

/// The daemon's view of its workers: the connection to each, which worker holds each parent
/// policy's family, and the workers it started itself (its children, whose ends it reaps).
final class WorkerSet: Sendable {
    let settings: WorkerSettings
    let folder: URL
    /// Callers' connections handed to the workers.
    let held = HandedOverConnections()
    private let state = Mutex(State())

    private struct State {
        var connections: [Int: WorkerConnection] = [:]
        /// Parent policy id -> the shards holding its parents (sorted): one, or as many as the
        /// policy has parents when there are that many workers.
        var assignments: [String: [Int]] = [:]
        /// Workers this daemon spawned: pid by shard.
        var children: [Int: Int32] = [:]
        var stopping = false
        var restarts: [Int: Int] = [:]
    }

    init(settings: WorkerSettings, stateFolder: URL) throws {
        self.settings = settings
        folder = stateFolder.appendingPathComponent("workers", isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    func socketPath(_ shard: Int) -> String { folder.appendingPathComponent("\(shard).sock").path }
    func logPath(_ shard: Int) -> String { folder.appendingPathComponent("\(shard).log").path }

    var count: Int { settings.count }

    var isStopping: Bool {
        get { state.withLock { $0.stopping } }
        set { state.withLock { $0.stopping = newValue } }
    }

    func connection(_ shard: Int) throws(EngineError) -> WorkerConnection {
        guard let connection = state.withLock({ $0.connections[shard] }), !connection.isClosed else {
            throw EngineError(.unavailable, "worker \(shard) is not running (it is being restarted)")
        }
        return connection
    }

    var connections: [WorkerConnection] { state.withLock { $0.connections.sorted { $0.key < $1.key }.map(\.value) } }

    func set(_ connection: WorkerConnection?, shard: Int) { state.withLock { $0.connections[shard] = connection } }

    /// Forgets `connection` if it is still the shard's; false when another replaced it.
    func drop(_ connection: WorkerConnection) -> Bool {
        state.withLock { state in
            guard state.connections[connection.shard] === connection else { return false }
            state.connections[connection.shard] = nil
            return true
        }
    }

    /// The shards holding a policy's parents: its recorded ones, else the min(parents,
    /// workers) shards with the fewest policies (ties to the lowest shards), recorded now. A
    /// policy of one parent lives in one worker; one of P parents spreads a parent per worker
    /// over P workers (see `share`), and its forks are balanced over them.
    func shards(for policy: ParentPolicy) -> [Int] {
        state.withLock { state in
            if let shards = state.assignments[policy.id], !shards.isEmpty { return shards }
            var load = [Int](repeating: 0, count: settings.count)
            for shards in state.assignments.values { for shard in shards where shard < load.count { load[shard] += 1 } }
            let span = max(1, min(policy.parents, settings.count))
            let shards = load.indices.sorted { (load[$0], $0) < (load[$1], $1) }.prefix(span).sorted()
            state.assignments[policy.id] = shards
            return shards
        }
    }

    /// The part of `policy` the worker of `shard` holds: its parents split over the policy's shards.
    static func share(of policy: ParentPolicy, shard: Int, among shards: [Int]) -> ParentPolicy {
        guard shards.count > 1, let index = shards.firstIndex(of: shard) else { return policy }
        var share = policy
        share.parents = policy.parents / shards.count + (index < policy.parents % shards.count ? 1 : 0)
        return share
    }

    func assignedShards(_ policyID: String) -> [Int] { state.withLock { $0.assignments[policyID] ?? [] } }
    func assign(_ policyID: String, to shard: Int) {
        state.withLock { state in
            var shards = state.assignments[policyID] ?? []
            if !shards.contains(shard) { shards.append(shard) }
            state.assignments[policyID] = shards.sorted()
        }
    }
    func unassign(_ policyID: String) { state.withLock { $0.assignments[policyID] = nil } }
    func policies(on shard: Int) -> [String] { state.withLock { $0.assignments.filter { $0.value.contains(shard) }.map(\.key) } }

    func restarts(_ shard: Int) -> Int { state.withLock { $0.restarts[shard] ?? 0 } }

    func childPID(_ shard: Int) -> Int32? { state.withLock { $0.children[shard] } }
    func forgetChild(_ shard: Int) { _ = state.withLock { $0.children.removeValue(forKey: shard) } }
    func countRestart(_ shard: Int) -> Int {
        state.withLock { state in
            state.restarts[shard, default: 0] += 1
            return state.restarts[shard]!
        }
    }

    /// Starts `vmfork worker --state STATE --shard N` in a session of its own (so that it
    /// outlives this daemon and a terminal's signals), output to STATE/workers/N.log.
    func spawn(_ shard: Int, stateFolder: URL) throws(EngineError) -> Int32 {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(cshims_spawn_setsid_flag()))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath(shard), O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of the daemon's: a descriptor a worker kept would outlive the daemon
        // (the pipe a parent watches for the daemon's end, a client connection).
        cshims_spawn_addclosefrom(&actions, 3)
        let arguments = [settings.executable, "worker", "--state", stateFolder.path, "--shard", "\(shard)", "--log-level", settings.logLevel]
            + (settings.rewritesSystemCalls ? [] : ["--no-rewrite-syscalls"]) + (settings.buffersOutput ? [] : ["--no-buffer-output"])
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, settings.executable, &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw EngineError(.failed, "cannot start worker \(shard) (\(settings.executable)): \(String(cString: strerror(result)))")
        }
        state.withLock { $0.children[shard] = pid }
        return pid
    }
}

/// How a child process ended, in words.
func describeWaitStatus(_ status: Int32) -> String {
    let signal = status & 0x7f
    if signal == 0 { return "exited with \((status >> 8) & 0xff)" }
    // SIGSYS is what the worker's seccomp filter ends it with (see WorkerSeccomp).
    if signal == SIGSYS { return "killed by signal \(signal) (SIGSYS: a system call outside its seccomp filter)" }
    return "killed by signal \(signal)"
}
