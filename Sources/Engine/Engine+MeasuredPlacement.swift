import Foundation
import Placement

// MARK: - The workers' measured figures into placement

extension Engine {
    /// Takes the memory the workers measured into this host's placement state: for each image
    /// that placement knows and whose policies the workers hold, the largest resident size of
    /// one of its parents becomes its parentMemoryKiB and the largest median private memory of
    /// one of its children its growthPerChildKiB, instead of the figures a profile or
    /// `vmfork image add` gave. Recorded as `placement.image.measured` when they change.
    func adoptMeasuredFigures(_ statuses: [WorkerProcessStatus]) async {
        let policies = registry.withLock { $0.policies }
        var parents: [String: Int] = [:]
        var children: [String: Int] = [:]
        for status in statuses {
            for (policy, bytes) in status.parentBytes ?? [:] {
                guard let image = policies[policy]?.image else { continue }
                parents[image] = max(parents[image] ?? 0, (bytes + 1023) / 1024)
            }
            for (policy, bytes) in status.childPrivateBytesMedian ?? [:] {
                guard let image = policies[policy]?.image else { continue }
                children[image] = max(children[image] ?? 0, (bytes + 1023) / 1024)
            }
        }
        let placement = self.placement
        for image in Set(parents.keys).union(children.keys).sorted() {
            let parent = parents[image].flatMap { $0 > 0 ? $0 : nil }
            let child = children[image].flatMap { $0 > 0 ? $0 : nil }
            let changed = try? await onBlockingThread { () throws -> Bool in
                guard let known = try? placement.read({ core in try core.image(image) }) else { return false }
                guard (parent != nil && parent != known.parentMemoryKiB) || (child != nil && child != known.growthPerChildKiB) else { return false }
                try placement.setMeasured(image: image, parentMemoryKiB: parent, growthPerChildKiB: child)
                return true
            }
            guard changed == true else { continue }
            let detail = "{\"parentMemoryKiB\":\(parent.map(String.init) ?? "null"),\"growthPerChildKiB\":\(child.map(String.init) ?? "null")}"
            record("placement.image.measured", subject: image, actor: "engine", detail: detail)
        }
    }

    /// Measures every `interval` (a page walk in each worker) and feeds placement, until cancelled.
    public func watchMeasuredFigures(interval: Duration = .seconds(30)) async {
        guard workersMode else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            guard !Task.isCancelled else { return }
            _ = await workers(withSharing: true)
        }
    }
}
