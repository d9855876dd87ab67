import ArgumentParser
import Foundation
import HostSystem
import Placement

/// `vmfork host`: the hosts forks are placed on, with their NUMA nodes and warm parents.
struct HostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host",
        abstract: "Register hosts (this machine from its probed NUMA topology, or others), set health, list.",
        subcommands: [AddLocal.self, Add.self, Health.self, List.self]
    )

    /// "image@node", e.g. busybox@0: a warm parent of the image on that NUMA node.
    struct WarmSpec: ExpressibleByArgument {
        let image: String
        let node: Int
        init?(argument: String) {
            let parts = argument.split(separator: "@", maxSplits: 1)
            guard parts.count == 2, let node = Int(parts[1]) else { return nil }
            image = String(parts[0])
            self.node = node
        }
    }

    struct WarmOptions: ParsableArguments {
        @Option(name: .customLong("warm"), help: "A warm parent the host holds, as image@node (repeatable).")
        var warm: [WarmSpec] = []
        @Option(help: "The pool that keeps (and pays for) these warm parents.")
        var warmPool = PoolTree.rootName

        func parents(host: String, service: PlacementService) throws -> [WarmParentSite] {
            try warm.map { spec in
                let image = try service.read { core in try core.image(spec.image) }
                return WarmParentSite(host: host, image: spec.image, node: spec.node, memoryKiB: image.parentMemoryKiB, pool: warmPool)
            }
        }
    }

    struct AddLocal: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-local",
            abstract: "Register this machine, the one real host, from its probed NUMA topology.")
        @Option(help: "The host's name (default: this machine's host name).") var name: String?
        @OptionGroup var warm: WarmOptions
        @OptionGroup var options: StateOptions

        func run() throws {
            guard let topology = NUMATopology.current(), !topology.nodes.isEmpty else {
                throw ValidationError("this machine reports no NUMA topology (is libnuma present?); use `vmfork host add` instead")
            }
            let cores = topology.nodes.reduce(0) { $0 + $1.cpus.count }
            let spec = HostSpec(name: name ?? ProcessInfo.processInfo.hostName, cpuCores: Swift.max(1, cores), cpuMHzPerCore: Self.cpuMHz(),
                                nodes: topology.nodes.map { NUMANodeSpec(memoryKiB: Int($0.memoryBytes / 1024), cpus: $0.cpus) }, simulated: false)
            let service = try options.openService()
            try service.addHost(spec, warmParents: try warm.parents(host: spec.name, service: service))
            print("added host \(spec.name) (real): \(spec.cpuCores) cores at \(spec.cpuMHzPerCore) MHz, "
                + spec.nodes.enumerated().map { "node \($0.offset) \(Resources.formatKiB($0.element.memoryKiB))" }.joined(separator: ", "))
        }

        /// The first "cpu MHz" in /proc/cpuinfo, or the profile default where there is none.
        static func cpuMHz() -> Int {
            let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
            let line = info.split(separator: "\n").first { $0.hasPrefix("cpu MHz") }
            let value = line?.split(separator: ":").last.flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            return value.map { Int($0.rounded()) } ?? 2000
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Register a host another machine's agent reports.")
        @Argument(help: "The host's name.") var name: String
        @Option(help: "CPU cores.") var cores: Int
        @Option(help: "MHz per core.") var mhz = 2000
        @Option(name: .customLong("node-memory"), help: "Memory of each NUMA node in order (repeatable), e.g. 128GiB.")
        var nodeMemory: [MemoryAmount]
        @Flag(help: "The host is simulated (stands in for a machine that is not there).") var simulated = false
        @OptionGroup var warm: WarmOptions
        @OptionGroup var options: StateOptions

        func run() throws {
            let spec = HostSpec(name: name, cpuCores: cores, cpuMHzPerCore: mhz, nodes: nodeMemory.map { NUMANodeSpec(memoryKiB: $0.kib) }, simulated: simulated)
            let service = try options.openService()
            try service.addHost(spec, warmParents: try warm.parents(host: name, service: service))
            print("added host \(name)\(simulated ? " (simulated)" : "")")
        }
    }

    struct Health: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "health", abstract: "Mark a host up or down; a down host takes no new forks.")
        @Argument(help: "The host's name.") var name: String
        @Argument(help: "up or down.") var state: HealthState
        @OptionGroup var options: StateOptions

        enum HealthState: String, ExpressibleByArgument { case up, down }

        func run() throws {
            try options.openService().setHealth(host: name, healthy: state == .up)
            print("host \(name) is \(state.rawValue)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the hosts with what they hold.")
        @Option(help: "Show at most this many hosts (the fullest).") var limit = 50
        @OptionGroup var options: StateOptions

        func run() throws {
            print(try options.openService().read { core in try core.capacityReport(images: []) }.renderHosts(rows: limit))
        }
    }
}
