import Foundation

// MARK: - One policy over several workers

extension ParentInfo {
    /// One policy's parents as its workers hold them, summed: the daemon's policy, the first
    /// worker's state unless another is ready, the counts added up; the sharing figures only
    /// when one worker holds them all (a family's accounting is one process's).
    static func merged(_ parts: [ParentInfo], policy: ParentPolicy) -> ParentInfo? {
        guard var info = parts.first else { return nil }
        info.policy = policy
        if parts.count > 1 {
            if parts.contains(where: { $0.state == "ready" }) { info.state = "ready" }
            info.failure = parts.compactMap(\.failure).first
            info.parentsReady = parts.reduce(0) { $0 + $1.parentsReady }
            info.readyVMsNow = parts.reduce(0) { $0 + $1.readyVMsNow }
            info.liveChildren = parts.reduce(0) { $0 + $1.liveChildren }
            info.poolMisses = parts.reduce(0) { $0 + $1.poolMisses }
            info.sharing = nil
        }
        return info
    }
}

extension Engine {
    /// Makes the policy's parents in each of its workers (its share of them in each).
    func ensureParentsInWorkers(_ workers: WorkerSet, _ policy: ParentPolicy, image: ImageRecord) async throws -> ParentInfo {
        let shards = workers.shards(for: policy)
        var parts: [ParentInfo] = []
        for shard in shards {
            let share = WorkerSet.share(of: policy, shard: shard, among: shards)
            parts.append(try await workers.connection(shard).call("ensureParents", WorkerEnsureParents(policy: share, image: image), as: ParentInfo.self))
        }
        return ParentInfo.merged(parts, policy: policy)!
    }

    /// The shard a fork of `policy` goes to: of its workers, the one holding the fewest live
    /// containers (ties to the lowest), so that each worker's forks pay for as few VMs as can be.
    func forkShard(_ workers: WorkerSet, _ policy: ParentPolicy) -> Int {
        let shards = workers.shards(for: policy)
        guard shards.count > 1 else { return shards[0] }
        var live = Dictionary(uniqueKeysWithValues: shards.map { ($0, 0) })
        registry.withLock { registry in
            for container in registry.containers.values where container.isLive {
                if let shard = container.shard, live[shard] != nil { live[shard]! += 1 }
            }
        }
        return shards.min { (live[$0]!, $0) < (live[$1]!, $1) }!
    }
}
