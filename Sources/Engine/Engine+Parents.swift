import Foundation
import HostSystem
import Store

extension Engine {
    static func validate(_ policy: ParentPolicy) throws {
        guard ParentPolicy.memoryRange.contains(policy.memoryMiB) else {
            throw EngineError.invalid("memoryMiB", "memoryMiB \(policy.memoryMiB) is out of range (\(ParentPolicy.memoryRange))")
        }
        guard ParentPolicy.parentsRange.contains(policy.parents) else {
            throw EngineError.invalid("parents", "parents \(policy.parents) is out of range (\(ParentPolicy.parentsRange))")
        }
        guard ParentPolicy.readyVMsRange.contains(policy.readyVMs) else {
            throw EngineError.invalid("readyVMs", "readyVMs \(policy.readyVMs) is out of range (\(ParentPolicy.readyVMsRange))")
        }
    }

    /// Records a policy and makes its warm parents now (ahead of the first container).
    public func createParents(_ policy: ParentPolicy, by actor: String) async throws -> ParentInfo {
        try await audited("parent.create", subject: policy.id, actor: actor) {
            try ensureAccepting()
            try Self.validate(policy)
            _ = try image(policy.image)
            let exists = registry.withLock { $0.policies[policy.id] != nil }
            if exists { throw EngineError(.conflict, "parent policy \(policy.id) already exists", field: "image") }
            try await store.save(policy: policy.row(createdAt: Date().timeIntervalSince1970))
            registry.withLock { $0.policies[policy.id] = policy }
            if let workers = workerSet {
                do { return try await ensureParentsInWorkers(workers, policy, image: try image(policy.image)) } catch {
                    for shard in workers.assignedShards(policy.id) {
                        _ = try? await workers.connection(shard).call("removeParents", WorkerParentRef(id: policy.id), as: WorkerNothing.self)
                    }
                    try? await forgetPolicy(policy.id)
                    workers.unassign(policy.id)
                    throw error
                }
            }
            do {
                let family = try await family(for: policy)
                return family.info()
            } catch {
                // A policy whose parents cannot be made is not kept: the refusal changes nothing.
                try? await forgetPolicy(policy.id)
                throw error
            }
        }
    }

    /// The policy a container of `image` with this fork point and memory forks from; a
    /// default one (one parent, 8 ready VMs) is recorded at the image's first use.
    func policy(image: String, forkPoint: ForkPointName, memoryMiB: Int) async throws -> (ParentPolicy, recordedNow: Bool) {
        let wanted = ParentPolicy(image: image, forkPoint: forkPoint, memoryMiB: memoryMiB)
        if let existing = registry.withLock({ $0.policies[wanted.id] }) { return (existing, false) }
        try await store.save(policy: wanted.row(createdAt: Date().timeIntervalSince1970))
        let (policy, added) = registry.withLock { registry -> (ParentPolicy, Bool) in
            if let existing = registry.policies[wanted.id] { return (existing, false) }
            registry.policies[wanted.id] = wanted
            return (wanted, true)
        }
        if added { record("parent.create", subject: policy.id, actor: "engine", detail: "{\"reason\":\"first use of the image\"}") }
        return (policy, added)
    }

    /// Drops a policy that was just recorded (its parents could not be made).
    func forgetPolicy(_ id: String) async throws {
        registry.withLock { registry in
            registry.policies[id] = nil
            registry.families[id] = nil
            registry.builds[id] = nil
        }
        try await store.deletePolicy(id: id)
    }

    /// The policy's family, made (once, however many callers wait) when it is not yet.
    func family(for policy: ParentPolicy) async throws -> ParentFamily {
        guard let system else { throw EngineError(.failed, kvmUnavailable ?? "KVM unavailable") }
        let image = try image(policy.image)
        let root = try await layerDiskRoot(for: image)
        let (family, build) = registry.withLock { registry -> (ParentFamily, Task<Void, Error>) in
            if let family = registry.families[policy.id], let build = registry.builds[policy.id] { return (family, build) }
            let family = ParentFamily(policy: policy, image: image, rootFileSystem: root, pollsSystemCalls: options.pollsSystemCalls,
                                      rewritesSystemCalls: options.rewritesSystemCalls, buffersOutput: options.buffersOutput)
            let logger = self.logger
            let build = Task { try await self.onKVMThread { try family.build(system: system, logger: logger) } }
            registry.families[policy.id] = family
            registry.builds[policy.id] = build
            return (family, build)
        }
        do {
            try await build.value
        } catch {
            // A failed build is forgotten, so that the next call tries again.
            registry.withLock { registry in
                if registry.families[policy.id] === family {
                    registry.families[policy.id] = nil
                    registry.builds[policy.id] = nil
                }
            }
            throw error
        }
        return family
    }

    /// Every policy with what its parents hold now (with the kernel's sharing figures when
    /// asked: the page map of each family's VMs, one reader for all of them).
    public func parents(withSharing: Bool = true) async throws -> [ParentInfo] {
        if let workers = workerSet { return try await parentsInWorkers(workers, withSharing: withSharing) }
        let (policies, families) = registry.withLock { ($0.policies, $0.families) }
        let sorted = policies.values.sorted { $0.id < $1.id }
        @Sendable func info(_ policy: ParentPolicy, _ pageMap: PageMap?) -> ParentInfo {
            families[policy.id]?.info(sharing: pageMap)
                ?? ParentInfo(id: policy.id, policy: policy, state: "absent", failure: nil, parentsReady: 0, readyVMsNow: 0,
                              liveChildren: 0, poolMisses: 0, sharing: nil)
        }
        guard withSharing else { return sorted.map { info($0, nil) } }
        // Reading the page maps of every VM is a blocking walk: off the caller's thread.
        return try await onKVMThread { [self] in
            let pageMap = openPageMap()
            return sorted.map { info($0, pageMap) }
        }
    }

    /// A page map reader for one measurement, or nil (no sharing figures) when this process
    /// cannot read /proc/self/pagemap.
    func openPageMap() -> PageMap? {
        do { return try PageMap() } catch {
            logger.warning("no sharing figures: the page map cannot be read", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// One policy's parents; `withSharing` measures only its own family's VMs (the page map
    /// of each, read for its guest memory alone).
    public func parent(_ id: String, withSharing: Bool = true) async throws -> ParentInfo {
        if let workers = workerSet { return try await parentInWorkers(workers, id, withSharing: withSharing) }
        let (policy, family) = registry.withLock { ($0.policies[id], $0.families[id]) }
        guard let policy else { throw EngineError(.notFound, "unknown parent \(id)", field: "id") }
        guard let family else {
            return ParentInfo(id: policy.id, policy: policy, state: "absent", failure: nil, parentsReady: 0, readyVMsNow: 0,
                              liveChildren: 0, poolMisses: 0, sharing: nil)
        }
        return withSharing ? try await onKVMThread { [self] in family.info(sharing: openPageMap()) } : family.info()
    }

    /// Forks no more children from the policy's parents; they are evicted when their last
    /// child is removed (at once when there is none).
    public func drainParents(_ id: String, by actor: String) async throws -> ParentInfo {
        try await audited("parent.drain", subject: id, actor: actor) {
            try ensureAccepting()
            guard let policy = registry.withLock({ $0.policies[id] }) else { throw EngineError(.notFound, "unknown parent \(id)", field: "id") }
            if let workers = workerSet, !workers.assignedShards(id).isEmpty {
                var parts: [ParentInfo] = []
                for shard in workers.assignedShards(id) {
                    do { parts.append(try await workers.connection(shard).call("drainParents", WorkerParentRef(id: id), as: ParentInfo.self)) } catch let error as EngineError where error.kind == .notFound {
                        // Never made in this worker: nothing to drain.
                    }
                }
                if let info = ParentInfo.merged(parts, policy: policy) { return info }
            }
            let family = registry.withLock { $0.families[id] }
            family?.drain()
            if let family, family.liveChildren == 0 { evict(family, reason: "drained") }
            return family?.info()
                ?? ParentInfo(id: id, policy: policy, state: "absent", failure: nil, parentsReady: 0, readyVMsNow: 0,
                              liveChildren: 0, poolMisses: 0, sharing: nil)
        }
    }

    /// Removes a policy and its parents; refused while they have live children.
    public func removeParents(_ id: String, by actor: String) async throws {
        try await audited("parent.remove", subject: id, actor: actor) {
            try ensureAccepting()
            if let workers = workerSet {
                guard registry.withLock({ $0.policies[id] != nil }) else { throw EngineError(.notFound, "unknown parent \(id)", field: "id") }
                // The worker refuses while the parents have live children.
                for shard in workers.assignedShards(id) {
                    _ = try await workers.connection(shard).call("removeParents", WorkerParentRef(id: id), as: WorkerNothing.self)
                }
                workers.unassign(id)
            }
            let family: ParentFamily? = try registry.withLock { registry in
                guard registry.policies[id] != nil else { throw EngineError(.notFound, "unknown parent \(id)", field: "id") }
                if let family = registry.families[id], family.liveChildren > 0 {
                    throw EngineError(.conflict, "parent \(id) has \(family.liveChildren) live children; remove them or drain it")
                }
                registry.policies[id] = nil
                registry.builds[id]?.cancel()
                registry.builds[id] = nil
                return registry.families.removeValue(forKey: id)
            }
            if let family {
                family.release()
                record("parent.evict", subject: id, actor: "engine", detail: "{\"reason\":\"removed\"}")
            }
            try await store.deletePolicy(id: id)
        }
    }

    /// Drops a family whose parents fork no more (drained, no child left).
    func evict(_ family: ParentFamily, reason: String) {
        let removed = registry.withLock { registry -> Bool in
            guard registry.families[family.policy.id] === family else { return false }
            registry.families[family.policy.id] = nil
            registry.builds[family.policy.id] = nil
            return true
        }
        guard removed else { return }
        family.release()
        record("parent.evict", subject: family.policy.id, actor: "engine", detail: "{\"reason\":\"\(reason)\"}")
    }
}
