import Foundation
import HostSystem
import KVM
import ProcessVM

/// What a warm parent is made from: an image's root filesystem and entry point.
public struct ParentSpec: Sendable {
    public var name: String
    public var rootfs: String
    public var executable: String
    /// The parent's own argv (children of an entry-point parent get theirs instead).
    public var arguments: [String]
    public var environment: [String]
    public var memoryBytes: Int
    public var forkPoint: ForkPoint.Kind
    /// Children serve non-blocking system calls through the engine's poller (no VM exit).
    public var pollsSystemCalls: Bool
    /// The program's `mov eax, N; syscall` pairs are rewritten as it is loaded, so that its
    /// children's calls skip PVM's SYSCALL switch (`ProcessVMConfiguration.rewritesSystemCalls`).
    public var rewritesSystemCalls = true
    /// Whether its children may buffer writes to a standard output or error that never waits
    /// (`ProcessVMConfiguration.buffersOutput`).
    public var buffersOutput = true
    /// When set, the root filesystem is served from this (the image's disk chain) instead of
    /// the folder `rootfs`; the parent loads its program from it once and its children share it.
    public var rootFileSystem: (any GuestRootFileSystem)?
    /// Where the program starts (its children inherit it) and whom it runs as.
    public var workingDirectory = "/"
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0

    public init(name: String, rootfs: String, executable: String, arguments: [String]? = nil, environment: [String] = [],
                memoryBytes: Int = 64 << 20, forkPoint: ForkPoint.Kind = .entry, pollsSystemCalls: Bool = true) {
        self.name = name
        self.rootfs = rootfs
        self.executable = executable
        self.arguments = arguments ?? [executable]
        self.environment = environment
        self.memoryBytes = memoryBytes
        self.forkPoint = forkPoint
        self.pollsSystemCalls = pollsSystemCalls
    }
}

/// Why a warm parent could not be made.
public enum ForkError: Error, CustomStringConvertible, Sendable {
    case parentEndedBeforeForkPoint(image: String)
    case guest(GuestError)

    public var description: String {
        switch self {
        case .parentEndedBeforeForkPoint(let image):
            return "the parent of \(image) ended before it first read standard input, so it has no fork point"
        case .guest(let error):
            return error.description
        }
    }
}

/// An image's program, loaded (or run up to its first read of standard input) and frozen
/// there for good, with a pool of VMs made ready for its children.
///
/// `@unchecked Sendable`: every field is a `let`; `pool` locks under its `condition`, `nextPid` under its `lock`, and the
/// fork point is only read.
public final class WarmParent: @unchecked Sendable {
    public let image: ParentSpec
    public let forkPoint: ForkPoint
    let pool: VMPool
    private let nextPid = ManagedCounter(start: 2)

    /// Builds the parent and fills its pool (`poolSize` VMs) in the background.
    /// `refillDelay`: how long a refill a fork starts waits for children's VMs to come back
    /// (`VMPool.refillDelay`; nil: the engine's 100 ms).
    public init(system: KVMSystem, image: ParentSpec, poolSize: Int = 8, refillDelay: Duration? = nil) throws(ForkError) {
        self.image = image
        var configuration = ProcessVMConfiguration(rootfs: image.rootfs, memoryBytes: image.memoryBytes,
                                                   pollsSystemCalls: image.pollsSystemCalls)
        configuration.rewritesSystemCalls = image.rewritesSystemCalls
        configuration.buffersOutput = image.buffersOutput
        configuration.rootFileSystem = image.rootFileSystem
        configuration.workingDirectory = image.workingDirectory
        configuration.identity.uid = image.uid
        configuration.identity.gid = image.gid
        // A parent that runs before its fork point reads nothing and writes nowhere.
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        let point: ForkPoint?
        do {
            point = try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: image.executable,
                                                arguments: image.arguments, environment: image.environment, kind: image.forkPoint,
                                                streams: StandardStreams(input: null, output: null, error: null))
        } catch {
            throw .guest(error)
        }
        guard let point else { throw .parentEndedBeforeForkPoint(image: image.name) }
        forkPoint = point
        pool = VMPool(system: system, forkPoint: point, target: poolSize, refillDelay: refillDelay ?? VMPool.defaultRefillDelay)
        pool.refill(whenBelow: poolSize)
    }

    /// Forks a child: a pooled VM takes the parent's memory copy-on-write and CPU state, and
    /// the child its own pid, hostname, streams and — for an entry-point parent — arguments
    /// and environment. The child has not run yet; `Container.run` or `start` runs it.
    /// `rootFileSystem`: the child's own root (its writable disk), instead of the parent's.
    /// `arguments` follow `argv0` (default: the parent's argv[0]). A child of a main fork point
    /// gets its own argv[0] in the argv main is entered with (what a multi-call program such as
    /// busybox reads to pick its applet); the C library's `program_invocation_name`, set by
    /// the parent's start-up, keeps the parent's (see `ChildArgumentRoom`). An entry-point
    /// child runs the start-up itself with its own argv; a stdin fork point's runs the parent's.
    public func fork(argv0: String? = nil, arguments: [String]? = nil, environment: [String]? = nil, hostname: String? = nil,
                     streams: StandardStreams, rootFileSystem: (any GuestRootFileSystem)? = nil) throws(ForkError) -> Container {
        let started = ContinuousClock.now
        let prepared: PreparedVM
        do { prepared = try pool.take() } catch { throw .guest(error) }
        let pid = Int32(truncatingIfNeeded: nextPid.next())
        let identity = GuestIdentity(pid: pid, parentPid: 1, uid: image.uid, gid: image.gid, hostname: hostname ?? "\(image.name)-\(pid)")
        do {
            let child = try ProcessVM(forking: forkPoint, into: prepared, identity: identity,
                                      arguments: arguments.map { [argv0 ?? image.arguments.first ?? image.executable] + $0 }, environment: environment ?? image.environment,
                                      streams: streams, rootFileSystem: rootFileSystem)
            return Container(vm: child, name: identity.hostname, forkLatency: ContinuousClock.now - started,
                             reusesVM: prepared.isReused, pool: pool)
        } catch {
            throw .guest(error)
        }
    }

    /// Forks that found the pool empty and built their VM on the fork path.
    public var poolMisses: Int { pool.misses }

    /// VMs the pool's refills made, off the forks' path (its first fill's included).
    public var vmsMadeByRefills: Int { pool.madeByRefills }
    /// Finished children's VMs restored by the thread that handed them back, the pool being
    /// low (`VMPool.restoreHereBelow`), rather than by the pool's idle-priority return queue.
    public var vmsRestoredByReturners: Int { pool.restoredByReturners }

    /// Frees the pool's ready VMs beyond `count` (under memory pressure); returns how many went.
    @discardableResult
    public func shrinkPool(to count: Int = 0) -> Int { pool.shrink(to: count) }

    /// VMs in the pool ready for a fork now, and the pool's target.
    public var readyVMs: (now: Int, target: Int) { (pool.readyCount, pool.target) }

    /// Waits until the VMs of removed children are back in the pool and the pool holds its
    /// target, for measurements that start from a full pool.
    public func waitUntilPoolIsFull() {
        pool.waitUntilFull()
    }

    /// Waits until every child VM released so far is restored into the pool or torn down
    /// (its descriptors closed, its memory unmapped).
    public func waitForTeardown() {
        pool.waitForReturns()
    }
}

/// A thread-safe increasing counter.
///
/// `@unchecked Sendable`: `value` is read and written under `lock`.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int
    init(start: Int) { value = start }
    func next() -> Int { lock.withLock { defer { value += 1 }; return value } }
}
