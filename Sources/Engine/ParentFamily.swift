import Fork
import Foundation
import HostSystem
import KVM
import Logging
import ProcessVM
import Synchronization

/// The warm parents of one policy (image, fork point, guest memory) and the children forked
/// from them. Forks go to the parents in turn.
final class ParentFamily: Sendable {
    let policy: ParentPolicy
    let image: ImageRecord
    /// The image's disk chain when its containers' root filesystem is served from it.
    let rootFileSystem: (any GuestRootFileSystem)?
    /// Children's non-blocking system calls served by the engine's polling thread.
    let pollsSystemCalls: Bool
    let rewritesSystemCalls: Bool
    let buffersOutput: Bool
    private let state: Mutex<State>

    private struct State {
        var parents: [WarmParent] = []
        var next = 0
        var building = true
        var draining = false
        var failure: String?
        /// Live children (created and not removed), by container id.
        var children: [String: Fork.Container] = [:]
    }

    init(policy: ParentPolicy, image: ImageRecord, rootFileSystem: (any GuestRootFileSystem)? = nil, pollsSystemCalls: Bool = true,
         rewritesSystemCalls: Bool = true, buffersOutput: Bool = true) {
        self.policy = policy
        self.image = image
        self.rootFileSystem = rootFileSystem
        self.pollsSystemCalls = pollsSystemCalls
        self.rewritesSystemCalls = rewritesSystemCalls
        self.buffersOutput = buffersOutput
        state = Mutex(State())
    }

    /// The parent's own arguments: for a stdin fork point the image's whole command runs up
    /// to its first read; at main or the entry point children bring their own.
    var spec: ParentSpec {
        get throws(EngineError) {
        var spec = ParentSpec(name: image.name, rootfs: image.rootfs, executable: image.executable,
                              arguments: [image.argv0] + image.arguments, environment: image.environment,
                              memoryBytes: policy.memoryMiB << 20, forkPoint: policy.forkPoint.kind)
        spec.rootFileSystem = rootFileSystem
        spec.pollsSystemCalls = pollsSystemCalls
        spec.rewritesSystemCalls = rewritesSystemCalls
        spec.buffersOutput = buffersOutput
        spec.workingDirectory = image.startingDirectory
        do { (spec.uid, spec.gid) = try image.userIDs() } catch let error as EngineError { throw error } catch {
            throw EngineError.invalid("user", "image \(image.name): \(error)")
        }
        return spec
        }
    }

    /// Builds the policy's parents on the calling thread (a KVM thread: this loads the
    /// program, runs it to its fork point, and starts each pool's refill). A parent whose
    /// children cannot be given fresh start-up secrets is told to `logger`.
    func build(system: KVMSystem, logger: Logger) throws(EngineError) {
        let spec: ParentSpec
        do {
            spec = try self.spec
        } catch {
            state.withLock {
                $0.building = false
                $0.failure = error.message
            }
            throw error
        }
        do {
            for _ in 0..<policy.parents {
                let parent = try WarmParent(system: system, image: spec, poolSize: policy.readyVMs)
                if case .skipped(let reason) = parent.forkPoint.rerandomisation.outcome {
                    logger.warning("children keep their parent's stack canary and pointer guard",
                                   metadata: ["policy": "\(policy.id)", "executable": "\(spec.executable)", "reason": "\(reason)"])
                }
                state.withLock { $0.parents.append(parent) }
            }
            state.withLock { $0.building = false }
        } catch {
            let message = "warm parent \(policy.id) could not be made: \(error)"
            state.withLock {
                $0.building = false
                $0.failure = message
                $0.parents = []
            }
            throw EngineError(Self.kind(of: error), message, field: "image")
        }
    }

    /// Whose fault a failed parent is: the image's (a program that cannot be loaded, or ends
    /// before its fork point: bad input), the host's memory (a conflict with what the host
    /// holds), or the host's (KVM, the system: a failure).
    static func kind(of error: ForkError) -> EngineError.Kind {
        switch error {
        case .parentEndedBeforeForkPoint, .guest(.invalidExecutable), .guest(.noMainForkPoint): .invalid
        case .guest(.outOfMemory): .conflict
        case .guest(.system(let system)) where system.errno == ENOMEM: .conflict
        case .guest: .failed
        }
    }

    var isReady: Bool { state.withLock { !$0.building && $0.failure == nil && !$0.parents.isEmpty } }
    var isDraining: Bool { state.withLock { $0.draining } }
    var liveChildren: Int { state.withLock { $0.children.count } }

    func drain() { state.withLock { $0.draining = true } }

    /// Forks a child from the next parent in turn (a KVM thread's call: it may build a VM
    /// when the pool is empty).
    func fork(id: String, argv0: String, arguments: [String]?, environment: [String], hostname: String,
              streams: StandardStreams, rootFileSystem: (any GuestRootFileSystem)? = nil) throws(EngineError) -> Fork.Container {
        let parent: WarmParent = try {
            () throws(EngineError) -> WarmParent in
            try state.withLock { state throws(EngineError) -> WarmParent in
                if state.draining { throw EngineError(.conflict, "warm parent \(policy.id) is draining: it forks no more children") }
                guard !state.parents.isEmpty else {
                    throw EngineError(.conflict, state.failure ?? "warm parent \(policy.id) has no parent ready")
                }
                defer { state.next += 1 }
                return state.parents[state.next % state.parents.count]
            }
        }()
        do {
            let child = try parent.fork(argv0: argv0, arguments: policy.forkPoint == .stdin ? nil : arguments, environment: environment,
                                        hostname: hostname, streams: streams, rootFileSystem: rootFileSystem)
            state.withLock { $0.children[id] = child }
            return child
        } catch .guest(.childArgumentsTooLarge(let what)) {
            throw EngineError(.invalid, "the container's arguments and environment do not fit its parent at main: \(what)", field: "arguments")
        } catch {
            // The host out of memory for the child's mapping (a huge memoryMiB under the
            // kernel's overcommit limit) is a refusal of this request (409), as at the parent's
            // build, not an engine failure.
            let kind = Self.kind(of: error)
            throw EngineError(kind, kind == .conflict ? "the host cannot map this container's memory (\(policy.memoryMiB) MiB): \(error)"
                                                   : "fork from \(policy.id) failed: \(error)", field: kind == .conflict ? "memoryMiB" : nil)
        }
    }

    /// Forgets a removed child; true when the family is draining and has no child left (it can go).
    func childRemoved(_ id: String) -> Bool {
        state.withLock { state in
            state.children[id] = nil
            return state.draining && state.children.isEmpty
        }
    }

    /// Frees the ready VMs of every parent's pool; returns how many went.
    func shrinkPools() -> Int {
        state.withLock { $0.parents }.reduce(0) { $0 + $1.shrinkPool(to: 0) }
    }

    /// Waits until the VMs its children released so far are restored or torn down.
    func waitForTeardown() {
        for parent in state.withLock({ $0.parents }) { parent.waitForTeardown() }
    }

    /// Drops the parents (their memory and pooled VMs go when the last child releases them).
    func release() {
        state.withLock { $0.parents = [] }
    }

    /// What the family holds now; with `sharing` (a page map reader, which one measurement
    /// shares among its families), the kernel's accounting of its memory, read now.
    func info(sharing pageMap: PageMap? = nil) -> ParentInfo {
        let (parents, children, building, draining, failure) = state.withLock {
            ($0.parents, Array($0.children.values), $0.building, $0.draining, $0.failure)
        }
        var sharing: SharingFigures?
        // The kernel's accounting, over the first parent (children of all parents share alike;
        // each parent's memfd is its own). No figures when the page map cannot be read.
        // Only children still running: an ended one's VM is on its way back to the pool (its
        // waiter wakes before that), and the report should not count it in between.
        let running = children.filter { if case .exited = $0.state { false } else { true } }
        if let pageMap, let first = parents.first, let report = try? SharingReport.measure(parent: first, containers: running, pageMap: pageMap) {
            let owned = report.children.map(\.usage.privateBytes).sorted()
            let shared = report.children.map(\.usage.shared).sorted()
            sharing = SharingFigures(parentBytes: report.parentResident * parents.count, children: report.children.count,
                                     childPrivateBytesMedian: owned.isEmpty ? 0 : owned[owned.count / 2],
                                     childSharedBytesMedian: shared.isEmpty ? 0 : shared[shared.count / 2],
                                     familyBytes: report.familyCost, fullCopiesBytes: report.fullCopiesCost, savedBytes: report.saved,
                                     measuredAt: Date().timeIntervalSince1970)
        }
        let stateName = failure != nil ? "failed" : draining ? "draining" : building ? "building" : "ready"
        return ParentInfo(id: policy.id, policy: policy, state: stateName, failure: failure, parentsReady: parents.count,
                          readyVMsNow: parents.reduce(0) { $0 + $1.readyVMs.now }, liveChildren: children.count,
                          poolMisses: parents.reduce(0) { $0 + $1.poolMisses }, sharing: sharing)
    }
}
