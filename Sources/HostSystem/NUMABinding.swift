import CShims
import Foundation

/// A thread's NUMA binding: its CPU affinity and memory policy (both per thread, inherited by
/// the threads it makes and kept across execve), and where the process's pages are.
public struct NUMABinding: Sendable, Equatable, Codable {
    /// The memory policy's mode, as get_mempolicy reports it: default, preferred, bind,
    /// interleave, local (or the number of a newer one).
    public var mode: String
    /// The nodes of the policy's mask.
    public var nodes: [Int]
    /// The CPUs the thread may run on.
    public var cpus: [Int]

    public init(mode: String, nodes: [Int], cpus: [Int]) {
        self.mode = mode
        self.nodes = nodes
        self.cpus = cpus
    }

    /// The node a worker of shard `shard` is bound to: the shards go round the nodes that have
    /// CPUs (shard mod their count). Nil when the kernel has no NUMA support.
    public static func node(forShard shard: Int, topology: NUMATopology? = NUMATopology.current()) -> Int? {
        guard let nodes = topology?.nodes.filter({ !$0.cpus.isEmpty && $0.memoryBytes > 0 }), !nodes.isEmpty else { return nil }
        return nodes[shard % nodes.count].id
    }

    /// Binds the calling thread to `node`: affinity to the node's CPUs (sched_setaffinity),
    /// memory policy MPOL_PREFERRED on it (set_mempolicy). Preferred, not bound: a node that
    /// fills up lends memory from another rather than fail a fault of a guest (which would end
    /// the worker and every container in it).
    public static func bindThisThread(to node: Int) throws(SystemError) {
        let result = cshims_numa_bind_this_thread(Int32(node))
        guard result == 0 else { throw SystemError(call: "bind to NUMA node \(node)", errno: -result) }
    }

    /// The calling thread's binding now.
    public static func ofThisThread() throws(SystemError) -> NUMABinding {
        var mode: Int32 = 0
        var mask: UInt64 = 0
        let result = cshims_numa_policy_of_this_thread(&mode, &mask)
        guard result == 0 else { throw SystemError(call: "get_mempolicy", errno: -result) }
        var cpus = [Int32](repeating: 0, count: 1024)
        let count = cshims_numa_affinity_of_this_thread(&cpus, Int32(cpus.count))
        guard count >= 0 else { throw SystemError(call: "sched_getaffinity", errno: -count) }
        let names = ["default", "preferred", "bind", "interleave", "local"]
        return NUMABinding(mode: Int(mode) < names.count ? names[Int(mode)] : "mode \(mode)",
                           nodes: (0..<64).filter { mask & (1 << UInt64($0)) != 0 },
                           cpus: cpus[0..<Int(count)].map(Int.init))
    }

    /// Resident pages of this process per node, from /proc/self/numa_maps (its `N<node>=<pages>`
    /// fields summed over every mapping); keys are node numbers.
    public static func pagesPerNode(pid: String = "self") -> [Int: Int] {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/numa_maps", encoding: .utf8) else { return [:] }
        var pages: [Int: Int] = [:]
        for line in text.split(separator: "\n") {
            for field in line.split(separator: " ") where field.hasPrefix("N") {
                let parts = field.dropFirst().split(separator: "=")
                guard parts.count == 2, let node = Int(parts[0]), let count = Int(parts[1]) else { continue }
                pages[node, default: 0] += count
            }
        }
        return pages
    }
}
