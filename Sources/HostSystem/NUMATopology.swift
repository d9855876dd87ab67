import CShims

/// The host's NUMA nodes as libnuma reports them: which CPUs and how much memory each has.
public struct NUMATopology: Sendable, Equatable {
    public struct Node: Sendable, Equatable {
        public let id: Int
        public let cpus: [Int]
        public let memoryBytes: Int64
        public let freeBytes: Int64
    }

    public let nodes: [Node]

    /// Reads the topology now. Returns nil when the kernel has no NUMA support.
    public static func current() -> NUMATopology? {
        let maxNode = cshims_numa_max_node()
        guard maxNode >= 0 else { return nil }
        var nodes: [Node] = []
        var cpuBuffer = [Int32](repeating: 0, count: 4096)
        for id in 0...maxNode {
            var total: Int64 = 0
            var free: Int64 = 0
            guard cshims_numa_node_memory(Int32(id), &total, &free) == 0 else { continue }
            let count = cshims_numa_node_cpus(Int32(id), &cpuBuffer, Int32(cpuBuffer.count))
            let cpus = count > 0 ? cpuBuffer[0..<Int(count)].map(Int.init) : []
            nodes.append(Node(id: Int(id), cpus: cpus, memoryBytes: total, freeBytes: free))
        }
        return NUMATopology(nodes: nodes)
    }
}
