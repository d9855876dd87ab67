import Fork
import HostSystem
import ProcessVM

/// Each live container's own memory, from one read of the kernel's accounting
/// (/proc/self/smaps) for however many containers are asked about.
extension Engine {
    /// `infos` with `memory` filled for each container whose VMs live in this process;
    /// the others (ended, or held by a worker process) are left without it.
    public func withMemory(_ infos: [ContainerInfo]) -> [ContainerInfo] {
        let live = registry.withLock { registry in
            infos.map { registry.containers[$0.id]?.vm }
        }
        guard live.contains(where: { $0 != nil }) else { return infos }
        let mappings = MemoryMappings.current()
        return zip(infos, live).map { info, container in
            var info = info
            if let container, info.state != .exited { info.memory = Self.memory(of: container, in: mappings) }
            return info
        }
    }

    /// Summed over the container's first process's VM and those of the processes it forked.
    static func memory(of container: Fork.Container, in mappings: MemoryMappings) -> ContainerMemory? {
        guard let first = container.processVM else { return nil }
        let usages = ([first] + first.tree.runningVMs).compactMap { $0.memory.usage(in: mappings) }
        guard !usages.isEmpty else { return nil }
        return ContainerMemory(privateBytes: usages.reduce(0) { $0 + $1.privateBytes },
                               sharedBytes: usages.reduce(0) { $0 + $1.shared }, vms: usages.count)
    }
}
