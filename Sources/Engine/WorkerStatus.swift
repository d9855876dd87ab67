import Foundation
import HostSystem

/// What one worker process says of itself (the `status` op): its process, its confinement
/// (seccomp and NUMA) and what it holds; the daemon shows it in `GET /v1/workers` and as
/// metrics labelled worker="N".
public struct WorkerProcessStatus: Codable, Sendable, Equatable {
    public var pid: Int32
    /// Resident set (VmRSS), KiB.
    public var rssKiB: Int
    public var threads: Int
    /// /proc/self/status Seccomp: 0 none, 2 filter.
    public var seccomp: Int
    /// What a call outside the filter's list gets: kill, log, or off (no filter).
    public var seccompMode: String
    /// How many system calls the filter allows.
    public var allowedSystemCalls: Int
    /// The NUMA node it is bound to, and why not when the binding failed.
    public var numaNode: Int?
    public var numaFailure: String?
    /// The Landlock ABI of its domain (writes only to its state, the containers' output
    /// folders, its socket, /dev/kvm and /dev/null), and why it has none when it failed.
    public var landlockABI: Int?
    public var landlockFailure: String?
    /// The memory policy and CPU affinity of the thread that answered (every thread of a
    /// worker has its first thread's: it execs once bound).
    public var numa: NUMABinding?
    /// Its resident pages per node (/proc/self/numa_maps), keyed by node number.
    public var pagesPerNode: [String: Int]
    /// VMs it holds: warm parents, their ready pool VMs, and live children.
    public var parents: Int
    public var readyVMs: Int
    public var liveChildren: Int
    /// Measured memory (with `sharing`), per parent policy: its parent's resident bytes, and
    /// the median bytes one of its children owns privately (policies with live children).
    public var parentBytes: [String: Int]?
    public var childPrivateBytesMedian: [String: Int]?
    /// Its system-call poller: what it served and how often polling went off, and the
    /// machine's costs it judges polling by (the daemon's last measurement); nil without one.
    public var poller: WorkerPollerStatus?
}

/// A worker's system-call poller, as it stands.
public struct WorkerPollerStatus: Codable, Sendable, Equatable {
    public var callsServed: Int
    public var backOffs: Int
    public var unprofitableBackOffs: Int
    /// CPU time of its thread so far, seconds.
    public var cpuSeconds: Double?
    /// The costs it holds (µs); absent until the daemon sent them.
    public var exitMicroseconds: Double?
    public var polledCallMicroseconds: Double?
}

struct WorkerStatusRequest: Codable, Sendable { var sharing: Bool }

extension WorkerServer {
    /// This process's status now.
    func status(sharing: Bool) async throws -> WorkerProcessStatus {
        let fields = Self.statusFields()
        let parents = try await engine.parents(withSharing: sharing)
        var privateMedians: [String: Int] = [:]
        var parentBytes: [String: Int] = [:]
        for parent in parents {
            guard let figures = parent.sharing else { continue }
            parentBytes[parent.id] = figures.parentBytes
            if figures.children > 0 { privateMedians[parent.id] = figures.childPrivateBytesMedian }
        }
        return WorkerProcessStatus(
            pid: getpid(), rssKiB: fields["VmRSS"].flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0,
            threads: fields["Threads"].flatMap { Int($0) } ?? 0, seccomp: fields["Seccomp"].flatMap { Int($0) } ?? 0,
            seccompMode: seccompMode.rawValue, allowedSystemCalls: seccompMode == .off ? 0 : WorkerSeccomp.allowedCalls.count + 1,
            numaNode: confinement.numaNode, numaFailure: confinement.numaFailure,
            landlockABI: confinement.landlockABI, landlockFailure: confinement.landlockFailure, numa: try? NUMABinding.ofThisThread(),
            pagesPerNode: Dictionary(uniqueKeysWithValues: NUMABinding.pagesPerNode().map { ("\($0.key)", $0.value) }),
            parents: parents.reduce(0) { $0 + $1.parentsReady }, readyVMs: parents.reduce(0) { $0 + $1.readyVMsNow },
            liveChildren: parents.reduce(0) { $0 + $1.liveChildren },
            parentBytes: sharing ? parentBytes : nil, childPrivateBytesMedian: sharing ? privateMedians : nil,
            poller: pollerStatus())
    }

    private func pollerStatus() -> WorkerPollerStatus? {
        guard let poller = engine.poller else { return nil }
        let figures = poller.statistics
        let costs = poller.costs
        return WorkerPollerStatus(callsServed: figures.callsServed, backOffs: figures.backOffs,
                                  unprofitableBackOffs: figures.unprofitableBackOffs,
                                  cpuSeconds: poller.kernelThreadID.flatMap { CPUTime.ofThread($0) },
                                  exitMicroseconds: costs.map { $0.exitMicroseconds }, polledCallMicroseconds: costs.map { $0.polledMicroseconds })
    }

    /// /proc/self/status as name -> value (trimmed).
    static func statusFields() -> [String: String] {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return [:] }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }
}
