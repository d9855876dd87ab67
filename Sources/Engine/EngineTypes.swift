import Foundation
import Images
import ProcessVM

/// Where a warm parent stops for good: at its program's entry point (children get their own
/// arguments and environment) or at its first read of standard input (children read their own).
public enum ForkPointName: String, Codable, Sendable, CaseIterable {
    /// At the program's main, its C library started (the default).
    case main
    /// At the entry point: each child runs the C library's start-up itself.
    case entry
    /// At the first read of standard input: children run the image's own arguments.
    case stdin

    /// The process VM's fork point of this name.
    public var kind: ForkPoint.Kind {
        switch self {
        case .main: return .main
        case .entry: return .entry
        case .stdin: return .firstStandardInputRead
        }
    }
}

/// An image the engine forks containers from. Today a root filesystem folder on this host;
/// pulled images come later.
public struct ImageRecord: Codable, Sendable, Equatable {
    public var name: String
    /// The root filesystem folder (host path).
    public var rootfs: String
    /// The program warm parents load (a path inside the rootfs).
    public var executable: String
    /// The program's arguments after argv[0] when a container names none.
    public var arguments: [String]
    /// "NAME=value" entries a container gets when it names none.
    public var environment: [String]
    public var createdAt: Double
    /// Where its warm parents stop when a container or policy names no fork point: main
    /// where the engine can find it in the program, else the entry point (set by the engine).
    public var defaultForkPoint: ForkPointName?
    /// Why the default is not main, when it is not.
    public var mainForkPointRefusal: String?
    /// Where a pulled image came from and its config (nil for an image added from a folder).
    public var pulled: PulledImage?

    public init(name: String, rootfs: String, executable: String, arguments: [String] = [], environment: [String] = [],
                createdAt: Double = Date().timeIntervalSince1970) {
        self.name = name
        self.rootfs = rootfs
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.createdAt = createdAt
    }
}

/// How many warm parents of an image the engine keeps for one fork point and guest memory
/// size, and how many ready VMs each one's pool holds.
public struct ParentPolicy: Codable, Sendable, Equatable {
    public var image: String
    public var forkPoint: ForkPointName
    /// Guest memory of the parent and so of every child (the child's memory limit).
    public var memoryMiB: Int
    public var parents: Int
    public var readyVMs: Int

    public init(image: String, forkPoint: ForkPointName = .main, memoryMiB: Int = ParentPolicy.defaultMemoryMiB,
                parents: Int = 1, readyVMs: Int = 8) {
        self.image = image
        self.forkPoint = forkPoint
        self.memoryMiB = memoryMiB
        self.parents = parents
        self.readyVMs = readyVMs
    }

    public static let defaultMemoryMiB = 64
    public static let memoryRange = 4...65536
    public static let parentsRange = 1...16
    public static let readyVMsRange = 0...256

    /// "IMAGE.FORKPOINT.MEMORYm", e.g. "busybox.main.64m".
    public var id: String { "\(image).\(forkPoint.rawValue).\(memoryMiB)m" }
}

/// What a container is made from. Absent fields take the image's defaults.
public struct ContainerSpec: Codable, Sendable, Equatable {
    public var image: String
    /// A unique name; the id's first 12 characters when absent.
    public var name: String?
    /// The program's arguments after the image's argv[0] (the image's program is always the
    /// one run). Not with `entrypoint` or `cmd`.
    public var arguments: [String]?
    /// Docker's ENTRYPOINT for this container, in place of the image's ([] or [""]: none);
    /// with it, `cmd` alone follows it (the image's is dropped, as Docker drops it).
    public var entrypoint: [String]?
    /// Docker's CMD for this container: after the entrypoint, or (with none) the whole
    /// command line, argv[0] first. The command line's first word names the program as Docker
    /// does (a path, or a name looked up on the container's PATH inside the image) and is the
    /// program's argv[0] as written; it must lead to the image's program (busybox's applet
    /// links lead to busybox), whose warm parent is that program, loaded.
    public var cmd: [String]?
    public var environment: [String]?
    public var hostname: String?
    /// The guest memory (memory limit) of the container, in MiB.
    public var memoryMiB: Int?
    public var forkPoint: ForkPointName?
    public var labels: [String: String]?
    /// Keep standard input open for `attach` (a pipe); otherwise it is `stdin` or empty.
    public var openStdin: Bool?
    /// The whole standard input, given up front.
    public var stdin: String?
    /// Give the container a terminal (Docker's Tty, `docker run -t`): its descriptors 0, 1
    /// and 2 are one terminal of 24 x 80 (`resize` changes it), its output reaches the log
    /// through the terminal's output processing ("\n" as "\r\n"), stderr merged into
    /// stdout, and its input through the line discipline (echo, canonical lines).
    public var tty: Bool?
    /// The placement resource pool charged for the container (placement state of this host).
    public var pool: String?
    /// Memory charged to the pool for the container, when more than the image's per-child
    /// growth (a Docker --memory); needs `pool`.
    public var memoryReservationMiB: Int?

    public init(image: String, name: String? = nil, arguments: [String]? = nil, entrypoint: [String]? = nil, cmd: [String]? = nil,
                environment: [String]? = nil, hostname: String? = nil,
                memoryMiB: Int? = nil, forkPoint: ForkPointName? = nil, labels: [String: String]? = nil, openStdin: Bool? = nil,
                stdin: String? = nil, pool: String? = nil, memoryReservationMiB: Int? = nil, tty: Bool? = nil) {
        self.tty = tty
        self.image = image
        self.name = name
        self.arguments = arguments
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.environment = environment
        self.hostname = hostname
        self.memoryMiB = memoryMiB
        self.forkPoint = forkPoint
        self.labels = labels
        self.openStdin = openStdin
        self.stdin = stdin
        self.pool = pool
        self.memoryReservationMiB = memoryReservationMiB
    }
}

public enum ContainerState: String, Codable, Sendable {
    case created, running, exited
}

/// A container as inspect and list show it.
public struct ContainerInfo: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var image: String
    public var state: ContainerState
    /// The shell's view of how it ended: the exit code, or 128 + signal.
    public var exitCode: Int?
    /// Why it ended, in words ("exited with 0", "killed by signal 9", "daemon restarted").
    public var exitReason: String?
    public var arguments: [String]
    public var environment: [String]
    public var hostname: String
    public var memoryMiB: Int
    public var forkPoint: ForkPointName
    public var labels: [String: String]
    /// The parent policy it was forked from.
    public var parent: String
    public var pool: String?
    public var placementID: Int?
    public var createdAt: Double
    public var startedAt: Double?
    public var finishedAt: Double?
    /// From the fork call until the child was ready to run.
    public var forkMicroseconds: Double?
    /// Whether it runs in the VM of an earlier, removed sibling.
    public var reusedVM: Bool?
    /// Its memory now, as the host kernel accounts it: only when asked for (`memory=true`)
    /// and while it runs.
    public var memory: ContainerMemory?
    /// The program's argv[0] as its command names it ("ls" for a cmd ["ls", "/"]); `arguments`
    /// follow it. Nil in records made before it was kept: the image's executable.
    public var argv0: String? = nil
    /// Docker's ENTRYPOINT and CMD the container runs, merged with its image's as Docker
    /// merges them, when it named either (nil: it runs `arguments` or the image's command).
    public var entrypoint: [String]? = nil
    public var cmd: [String]? = nil
    /// True when it has a terminal (created with `tty`).
    public var tty: Bool?

    /// Every field (public for readers of the agent's answers, as the API's QuickJSON).
    public init(id: String, name: String, image: String, state: ContainerState, exitCode: Int?, exitReason: String?, arguments: [String],
                environment: [String], hostname: String, memoryMiB: Int, forkPoint: ForkPointName, labels: [String: String], parent: String,
                pool: String?, placementID: Int?, createdAt: Double, startedAt: Double?, finishedAt: Double?, forkMicroseconds: Double?,
                reusedVM: Bool?, memory: ContainerMemory? = nil, argv0: String? = nil, entrypoint: [String]? = nil, cmd: [String]? = nil,
                tty: Bool?) {
        (self.id, self.name, self.image, self.state, self.exitCode, self.exitReason) = (id, name, image, state, exitCode, exitReason)
        (self.arguments, self.environment, self.hostname, self.memoryMiB, self.forkPoint) = (arguments, environment, hostname, memoryMiB, forkPoint)
        (self.labels, self.parent, self.pool, self.placementID, self.createdAt) = (labels, parent, pool, placementID, createdAt)
        (self.startedAt, self.finishedAt, self.forkMicroseconds, self.reusedVM, self.memory) = (startedAt, finishedAt, forkMicroseconds, reusedVM, memory)
        (self.argv0, self.entrypoint, self.cmd, self.tty) = (argv0, entrypoint, cmd, tty)
    }
}

/// How a container ended, as wait returns it.
public struct ExitInfo: Codable, Sendable, Equatable {
    public var exitCode: Int
    public var reason: String
    /// Its whole stdout and stderr, when the wait asked for them and they fit (`output`).
    public var stdout: Data? = nil
    public var stderr: Data? = nil
    /// Whether the wait removed it (asked with `remove`); nil when not asked.
    public var removed: Bool? = nil

    public init(exitCode: Int, reason: String) {
        self.exitCode = exitCode
        self.reason = reason
    }
}

/// A run's whole result: create, start, wait, logs (and remove) in one call.
public struct RunResult: Codable, Sendable, Equatable {
    public var id: String
    public var exitCode: Int
    public var reason: String
    public var stdout: String
    public var stderr: String
    public var forkMicroseconds: Double?
    /// When it started running and when it ended (seconds since 1970, the agent's clock).
    public var startedAt: Double?
    public var finishedAt: Double?
}

/// A warm parent policy with what its parents hold now.
public struct ParentInfo: Codable, Sendable, Equatable {
    public var id: String
    public var policy: ParentPolicy
    /// "building", "ready", "draining" or "failed".
    public var state: String
    public var failure: String?
    /// Parents made (up to policy.parents).
    public var parentsReady: Int
    /// Ready VMs in all its parents' pools now.
    public var readyVMsNow: Int
    public var liveChildren: Int
    /// Forks that found a pool empty and built their VM inline.
    public var poolMisses: Int
    public var sharing: SharingFigures?
}

/// The kernel's accounting of a parent family's memory (Fork's SharingReport).
public struct SharingFigures: Codable, Sendable, Equatable {
    public var parentBytes: Int
    public var children: Int
    public var childPrivateBytesMedian: Int
    public var childSharedBytesMedian: Int
    public var familyBytes: Int
    public var fullCopiesBytes: Int
    public var savedBytes: Int
    /// When the kernel's accounting was read (seconds since 1970).
    public var measuredAt: Double
}

/// Filters of a container list; nil matches everything.
public struct ContainerFilter: Sendable {
    public var state: ContainerState?
    public var image: String?
    /// "KEY" (has the label) or "KEY=VALUE".
    public var labels: [String]

    public init(state: ContainerState? = nil, image: String? = nil, labels: [String] = []) {
        self.state = state
        self.image = image
        self.labels = labels
    }

    func matches(_ info: ContainerInfo) -> Bool {
        if let state, info.state != state { return false }
        if let image, info.image != image { return false }
        for label in labels {
            // "KEY" or "KEY=VALUE" (VALUE may be empty); an empty key matches nothing.
            let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard let key = parts.first, !key.isEmpty, let value = info.labels[key] else { return false }
            if parts.count == 2, value != parts[1] { return false }
        }
        return true
    }
}

/// Which standard stream(s) of a container's log.
public enum LogStream: String, Sendable, CaseIterable {
    case stdout, stderr, all
}

/// Why the engine refused or failed a call. `kind` maps to an HTTP status in the API.
public struct EngineError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// Bad input: a field out of range, a malformed value (400).
        case invalid
        /// Unknown image, container, parent or pool (404).
        case notFound
        /// The state does not allow it now: an image in use, a name taken, a running container (409).
        case conflict
        /// The engine is shutting down (503).
        case unavailable
        /// The host could not do it: KVM, memory, files (500).
        case failed
    }

    public let kind: Kind
    public let message: String
    /// The request field at fault, when there is one.
    public let field: String?

    public init(_ kind: Kind, _ message: String, field: String? = nil) {
        self.kind = kind
        self.message = message
        self.field = field
    }

    public var description: String { message }

    static func invalid(_ field: String, _ message: String) -> EngineError { EngineError(.invalid, message, field: field) }
}

/// A run's HTTP answer handed to the worker that runs it (workers mode, the agent's Unix
/// socket): the worker writes it to the caller's connection itself as the program ends, and
/// the daemon, which would otherwise be woken for the worker's reply and then write it, writes
/// nothing on that connection until `resolved` has been called.
public struct RunAnswerHandOff: Sendable {
    /// The caller's connection (the daemon's descriptor: the worker gets a duplicate with the create).
    public let connection: Int32
    /// The answer's status line and fields, each ending in CRLF, but its length: the worker adds
    /// Content-Length, the blank line and the body (`RunResult.quickBytes`).
    public let head: String
    /// Once the create has gone to the worker with the connection: what became of the answer.
    /// Not called when the create failed before it went (the answer is then the daemon's, as
    /// without a hand-off).
    public let resolved: @Sendable (HandOffOutcome) -> Void
    /// Called just before the create goes to the worker with the connection (from then on the
    /// worker may write the answer at any moment).
    public let going: @Sendable () -> Void

    public init(connection: Int32, head: String, going: @escaping @Sendable () -> Void, resolved: @escaping @Sendable (HandOffOutcome) -> Void) {
        (self.connection, self.head, self.going, self.resolved) = (connection, head, going, resolved)
    }
}

/// What became of a run's answer handed to its worker (`RunAnswerHandOff`).
public enum HandOffOutcome: Sendable, Equatable {
    /// The worker wrote `written` bytes of it; `rest` is what the connection could not take at
    /// once, for the daemon to write; `shard` is the worker.
    case answered(written: Int, rest: [UInt8], shard: Int)
    /// The worker did not write it (the run went on past the worker's wait, its output was too
    /// large to go along, or it failed): the daemon answers, as without a hand-off.
    case notAnswered
    /// The worker went away after the create went: whether it wrote any of the answer is not
    /// known, so the daemon writes nothing more on that connection and closes it.
    case unknown
}

/// A caller's thread that is its own to block (a Unix-socket connection's own event loop in
/// the daemon): `Engine.runContainer` runs a container on it to its end, and leaves to
/// `later` what only wakes the engine's background threads (a VM's return to its pool, a log
/// folder's recycling), to run on that thread after the caller's answer has gone.
public struct CallersThread: Sendable {
    public let later: @Sendable (@escaping @Sendable () -> Void) -> Void
    /// Whether the code asking runs on that thread (a task that waited may go on elsewhere:
    /// the container then goes to a container thread of its own).
    public let isCurrent: @Sendable () -> Bool

    public init(later: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void, isCurrent: @escaping @Sendable () -> Bool = { true }) {
        self.later = later
        self.isCurrent = isCurrent
    }
}
